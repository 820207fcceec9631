// RMSNorm on CUDA.
//
// Forward: a "row group" of TPR threads (a warp up to a whole block) normalises one row; a block holds
// 256 / TPR row groups for short rows. Rows move in 16-byte packs when alignment allows; a row of up to
// TPR * kItems packs stays in registers between the statistics pass and the output pass, longer rows are
// re-read (from L1/L2). Statistics in float32 (float64 for float64).
// Backward: row groups stride over rows; each keeps its dweight partial for its own columns in registers
// (or, for very long rows, in its own row of a global partial buffer) and writes one partial row; a second
// kernel sums the partial rows per column in a fixed order (deterministic, no atomics).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "rms_norm/rms_norm.h"

namespace enigma_fast {
namespace rms_norm {
namespace {

constexpr int kItems = 4;          // packs per thread kept in registers
constexpr int kBlockThreads = 256;  // threads per block when rows are short
constexpr int kMaxThreads = 1024;

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ Pack<T, VEC> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, VEC>*>(p);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, VEC>& v) {
  *reinterpret_cast<Pack<T, VEC>*>(p) = v;
}

// Sum over the TPR threads of a row group (threadIdx.x in [0, TPR)); every thread of the block must call it.
template <typename A, int TPR>
__device__ __forceinline__ A row_group_sum(A v, A* smem /* [blockDim.y][TPR / 32] */) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  if constexpr (TPR > 32) {
    constexpr int W = TPR / 32;
    A* mine = smem + threadIdx.y * W;
    if ((threadIdx.x & 31) == 0) mine[threadIdx.x >> 5] = v;
    __syncthreads();
    A s = 0;
#pragma unroll
    for (int i = 0; i < W; ++i) s += mine[i];
    __syncthreads();  // smem is reused by the next call
    return s;
  } else {
    return v;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------------------------
template <typename T, int VEC, int TPR, bool CACHE, bool HAS_RES, bool HAS_W>
__global__ void __launch_bounds__(kMaxThreads)
    fwd_kernel(const T* __restrict__ x, int64_t xs, const T* __restrict__ res, int64_t rs, const T* __restrict__ w,
               T* __restrict__ y, T* __restrict__ h, acc_t<T>* __restrict__ rstd, int64_t rows, int64_t n,
               acc_t<T> eps) {
  using A = acc_t<T>;
  __shared__ A smem[kMaxThreads / 32];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool active = row < rows;
  const int64_t nvec = n / VEC;
  const T* xr = x + row * xs;
  const T* rr = HAS_RES ? res + row * rs : nullptr;
  T* hr = HAS_RES ? h + row * n : nullptr;
  T* yr = y + row * n;

  A cache[CACHE ? kItems : 1][VEC];
  A ss = 0;
  if (active) {
    if constexpr (CACHE) {
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        const int64_t i = threadIdx.x + static_cast<int64_t>(k) * TPR;
        if (i < nvec) {
          Pack<T, VEC> px = load_pack<T, VEC>(xr + i * VEC);
          if constexpr (HAS_RES) {
            Pack<T, VEC> pr = load_pack<T, VEC>(rr + i * VEC);
#pragma unroll
            for (int j = 0; j < VEC; ++j) px.v[j] = T(static_cast<A>(px.v[j]) + static_cast<A>(pr.v[j]));
            store_pack<T, VEC>(hr + i * VEC, px);
          }
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            cache[k][j] = static_cast<A>(px.v[j]);
            ss += cache[k][j] * cache[k][j];
          }
        }
      }
    } else {
      for (int64_t i = threadIdx.x; i < nvec; i += TPR) {
        Pack<T, VEC> px = load_pack<T, VEC>(xr + i * VEC);
        if constexpr (HAS_RES) {
          Pack<T, VEC> pr = load_pack<T, VEC>(rr + i * VEC);
#pragma unroll
          for (int j = 0; j < VEC; ++j) px.v[j] = T(static_cast<A>(px.v[j]) + static_cast<A>(pr.v[j]));
          store_pack<T, VEC>(hr + i * VEC, px);
        }
#pragma unroll
        for (int j = 0; j < VEC; ++j) ss += static_cast<A>(px.v[j]) * static_cast<A>(px.v[j]);
      }
    }
  }
  ss = row_group_sum<A, TPR>(ss, smem);
  if (!active) return;
  const A r = A(1) / sqrt(ss / static_cast<A>(n) + eps);
  if (threadIdx.x == 0) rstd[row] = r;

  auto emit = [&](int64_t i, const A* vals) {
    Pack<T, VEC> out;
    if constexpr (HAS_W) {
      const Pack<T, VEC> pw = load_pack<T, VEC>(w + i * VEC);
#pragma unroll
      for (int j = 0; j < VEC; ++j) out.v[j] = T(vals[j] * r * static_cast<A>(pw.v[j]));
    } else {
#pragma unroll
      for (int j = 0; j < VEC; ++j) out.v[j] = T(vals[j] * r);
    }
    store_pack<T, VEC>(yr + i * VEC, out);
  };
  if constexpr (CACHE) {
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(k) * TPR;
      if (i < nvec) emit(i, cache[k]);
    }
  } else {
    const T* src = HAS_RES ? hr : xr;
    for (int64_t i = threadIdx.x; i < nvec; i += TPR) {
      const Pack<T, VEC> p = load_pack<T, VEC>(src + i * VEC);
      A vals[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) vals[j] = static_cast<A>(p.v[j]);
      emit(i, vals);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward: dx and per-row-group dweight partials
// ---------------------------------------------------------------------------------------------------------------
template <typename T, int VEC, int TPR, bool CACHE, bool HAS_W, bool HAS_DH>
__global__ void __launch_bounds__(kMaxThreads)
    bwd_kernel(const T* __restrict__ dy, int64_t dys, const T* __restrict__ h, int64_t hs, const T* __restrict__ w,
               const T* __restrict__ dh, int64_t dhs, const acc_t<T>* __restrict__ rstd, T* __restrict__ dx,
               acc_t<T>* __restrict__ partial /* [groups, n] or null */, int64_t rows, int64_t n) {
  using A = acc_t<T>;
  __shared__ A smem[kMaxThreads / 32];
  const int64_t nvec = n / VEC;
  const int64_t group = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  const int64_t groups = static_cast<int64_t>(gridDim.x) * blockDim.y;
  A* part = partial != nullptr ? partial + group * n : nullptr;
  A dw[CACHE ? kItems : 1][VEC];
#pragma unroll
  for (int k = 0; k < (CACHE ? kItems : 1); ++k)
#pragma unroll
    for (int j = 0; j < VEC; ++j) dw[k][j] = 0;

  // Every row group runs the same number of iterations so that all threads reach the block-wide reductions.
  const int64_t iters = (rows + groups - 1) / groups;
  for (int64_t it = 0; it < iters; ++it) {
    const int64_t row = it * groups + group;
    const bool active = row < rows;
    const T* dyr = dy + row * dys;
    const T* hr = h + row * hs;
    A gh = 0;
    A cdy[CACHE ? kItems : 1][VEC], ch[CACHE ? kItems : 1][VEC];
    if (active) {
      if constexpr (CACHE) {
#pragma unroll
        for (int k = 0; k < kItems; ++k) {
          const int64_t i = threadIdx.x + static_cast<int64_t>(k) * TPR;
          if (i < nvec) {
            const Pack<T, VEC> pd = load_pack<T, VEC>(dyr + i * VEC), ph = load_pack<T, VEC>(hr + i * VEC);
            Pack<T, VEC> pw;
            if constexpr (HAS_W) pw = load_pack<T, VEC>(w + i * VEC);
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
              cdy[k][j] = static_cast<A>(pd.v[j]);
              ch[k][j] = static_cast<A>(ph.v[j]);
              const A g = HAS_W ? cdy[k][j] * static_cast<A>(pw.v[j]) : cdy[k][j];
              gh += g * ch[k][j];
            }
          }
        }
      } else {
        for (int64_t i = threadIdx.x; i < nvec; i += TPR) {
          const Pack<T, VEC> pd = load_pack<T, VEC>(dyr + i * VEC), ph = load_pack<T, VEC>(hr + i * VEC);
          Pack<T, VEC> pw;
          if constexpr (HAS_W) pw = load_pack<T, VEC>(w + i * VEC);
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            const A g = HAS_W ? static_cast<A>(pd.v[j]) * static_cast<A>(pw.v[j]) : static_cast<A>(pd.v[j]);
            gh += g * static_cast<A>(ph.v[j]);
          }
        }
      }
    }
    gh = row_group_sum<A, TPR>(gh, smem);
    if (!active) continue;
    const A r = rstd[row];
    const A c = gh * r * r / static_cast<A>(n);
    T* dxr = dx + row * n;
    const T* dhr = HAS_DH ? dh + row * dhs : nullptr;
    auto emit = [&](int64_t i, const A* vdy, const A* vh, A* dwacc) {
      Pack<T, VEC> pw, pdh, out;
      if constexpr (HAS_W) pw = load_pack<T, VEC>(w + i * VEC);
      if constexpr (HAS_DH) pdh = load_pack<T, VEC>(dhr + i * VEC);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const A g = HAS_W ? vdy[j] * static_cast<A>(pw.v[j]) : vdy[j];
        A d = r * (g - vh[j] * c);
        if constexpr (HAS_DH) d += static_cast<A>(pdh.v[j]);
        out.v[j] = T(d);
        if constexpr (HAS_W) dwacc[j] += vdy[j] * vh[j] * r;
      }
      store_pack<T, VEC>(dxr + i * VEC, out);
    };
    if constexpr (CACHE) {
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        const int64_t i = threadIdx.x + static_cast<int64_t>(k) * TPR;
        if (i < nvec) emit(i, cdy[k], ch[k], dw[k]);
      }
    } else {
      for (int64_t i = threadIdx.x; i < nvec; i += TPR) {
        const Pack<T, VEC> pd = load_pack<T, VEC>(dyr + i * VEC), ph = load_pack<T, VEC>(hr + i * VEC);
        A vdy[VEC], vh[VEC], acc[VEC];
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          vdy[j] = static_cast<A>(pd.v[j]);
          vh[j] = static_cast<A>(ph.v[j]);
          acc[j] = part != nullptr ? part[i * VEC + j] : A(0);
        }
        emit(i, vdy, vh, acc);
        if (part != nullptr) {
#pragma unroll
          for (int j = 0; j < VEC; ++j) part[i * VEC + j] = acc[j];
        }
      }
    }
  }
  if constexpr (CACHE && HAS_W) {
    if (part != nullptr) {
#pragma unroll
      for (int k = 0; k < kItems; ++k) {
        const int64_t i = threadIdx.x + static_cast<int64_t>(k) * TPR;
        if (i < nvec)
#pragma unroll
          for (int j = 0; j < VEC; ++j) part[i * VEC + j] = dw[k][j];
      }
    }
  }
}

// dweight[c] = sum over partial rows g of partial[g, c], summed in a fixed order.
template <typename T>
__global__ void dweight_reduce_kernel(const acc_t<T>* __restrict__ partial, T* __restrict__ dweight, int64_t groups,
                                      int64_t n) {
  using A = acc_t<T>;
  __shared__ A tile[8][33];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  A s = 0;
  if (col < n)
    for (int64_t g = threadIdx.y; g < groups; g += 8) s += partial[g * n + col];
  tile[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < n) {
    A total = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) total += tile[i][threadIdx.x];
    dweight[col] = T(total);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Launch configuration
// ---------------------------------------------------------------------------------------------------------------
struct Launch {
  int tpr;     // threads per row group
  int groups;  // row groups per block
  bool cache;  // row fits in registers
};

inline Launch plan(int64_t nvec) {
  int tpr = 32;
  while (tpr < kMaxThreads && static_cast<int64_t>(tpr) * kItems < nvec) tpr *= 2;
  return Launch{tpr, std::max(1, kBlockThreads / tpr), nvec <= static_cast<int64_t>(tpr) * kItems};
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Largest pack width (16 bytes, or 1 element) that every pointer and row stride allows.
template <typename T>
int pack_width(int64_t n, std::initializer_list<std::pair<const void*, int64_t>> ptr_strides) {
  constexpr int V = 16 / sizeof(T);
  if (n % V != 0) return 1;
  for (const auto& ps : ptr_strides) {
    if (ps.first == nullptr) continue;
    if (!aligned16(ps.first) || ps.second % V != 0) return 1;
  }
  return V;
}

int sm_count(int device) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

// Calls f(std::integral_constant<int, TPR>) for the runtime row-group width.
template <typename F>
void tpr_switch(int tpr, F&& f) {
  switch (tpr) {
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    case 256: f(std::integral_constant<int, 256>{}); break;
    case 512: f(std::integral_constant<int, 512>{}); break;
    default: f(std::integral_constant<int, 1024>{}); break;
  }
}

template <typename F>
void bool_switch(bool b, F&& f) {
  if (b) f(std::true_type{});
  else f(std::false_type{});
}

template <typename T, int VEC>
void launch_fwd(const T* x, int64_t xs, const T* res, int64_t rs, const T* w, T* y, T* h, acc_t<T>* rstd,
                int64_t rows, int64_t n, double eps, cudaStream_t stream) {
  const Launch L = plan(n / VEC);
  const dim3 block(L.tpr, L.groups);
  const dim3 grid(static_cast<unsigned>((rows + L.groups - 1) / L.groups));
  tpr_switch(L.tpr, [&](auto tpr_c) {
    bool_switch(L.cache, [&](auto cache_c) {
      bool_switch(res != nullptr, [&](auto res_c) {
        bool_switch(w != nullptr, [&](auto w_c) {
          fwd_kernel<T, VEC, decltype(tpr_c)::value, decltype(cache_c)::value, decltype(res_c)::value,
                     decltype(w_c)::value><<<grid, block, 0, stream>>>(x, xs, res, rs, w, y, h, rstd, rows, n,
                                                                       static_cast<acc_t<T>>(eps));
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
    });
  });
}

template <typename T, int VEC>
void launch_bwd(const T* dy, int64_t dys, const T* h, int64_t hs, const T* w, const T* dh, int64_t dhs,
                const acc_t<T>* rstd, T* dx, acc_t<T>* partial, int64_t grid_blocks, const Launch& L, int64_t rows,
                int64_t n, cudaStream_t stream) {
  const dim3 block(L.tpr, L.groups);
  const dim3 grid(static_cast<unsigned>(grid_blocks));
  tpr_switch(L.tpr, [&](auto tpr_c) {
    bool_switch(L.cache, [&](auto cache_c) {
      bool_switch(w != nullptr, [&](auto w_c) {
        bool_switch(dh != nullptr, [&](auto dh_c) {
          bwd_kernel<T, VEC, decltype(tpr_c)::value, decltype(cache_c)::value, decltype(w_c)::value,
                     decltype(dh_c)::value><<<grid, block, 0, stream>>>(dy, dys, h, hs, w, dh, dhs, rstd, dx,
                                                                        partial, rows, n);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
    });
  });
}

template <typename scalar_t>
void fwd_cuda(const at::Tensor& x, RowView xv, const at::Tensor* res, RowView rv, const std::optional<at::Tensor>& w,
              at::Tensor& y, at::Tensor* h, at::Tensor& rstd, double eps) {
  if (xv.rows == 0) return;
  using A = acc_t<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* rp = res ? res->const_data_ptr<scalar_t>() : nullptr;
  const scalar_t* wp = w.has_value() ? w->const_data_ptr<scalar_t>() : nullptr;
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  scalar_t* hp = h ? h->mutable_data_ptr<scalar_t>() : nullptr;
  A* sp = rstd.mutable_data_ptr<A>();
  const int64_t n = xv.n;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const int vec = pack_width<scalar_t>(n, {{xp, xv.row_stride}, {rp, rv.row_stride}, {wp, 0}, {yp, n}, {hp, n}});
  constexpr int V = 16 / sizeof(scalar_t);
  if (vec == V)
    launch_fwd<scalar_t, V>(xp, xv.row_stride, rp, rv.row_stride, wp, yp, hp, sp, xv.rows, n, eps, stream);
  else
    launch_fwd<scalar_t, 1>(xp, xv.row_stride, rp, rv.row_stride, wp, yp, hp, sp, xv.rows, n, eps, stream);
}

#define EF_DISPATCH_CUDA_FLOATS(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, TYPE, NAME, __VA_ARGS__)

std::tuple<at::Tensor, at::Tensor> rms_norm_fwd_cuda(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                                     double eps) {
  const RowView xv = check_fwd(x, weight, eps, std::nullopt, "rms_norm");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor rstd = alloc_rstd(x);
  EF_DISPATCH_CUDA_FLOATS(x.scalar_type(), "rms_norm_fwd_cuda",
                          [&] { fwd_cuda<scalar_t>(x, xv, nullptr, xv, weight, y, nullptr, rstd, eps); });
  return {y, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> add_rms_norm_fwd_cuda(const at::Tensor& x, const at::Tensor& residual,
                                                                     const std::optional<at::Tensor>& weight,
                                                                     double eps) {
  const RowView xv = check_fwd(x, weight, eps, residual, "add_rms_norm");
  const RowView rv = row_view(residual, "residual");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor h = at::empty(x.sizes(), x.options());
  at::Tensor rstd = alloc_rstd(x);
  EF_DISPATCH_CUDA_FLOATS(x.scalar_type(), "add_rms_norm_fwd_cuda",
                          [&] { fwd_cuda<scalar_t>(x, xv, &residual, rv, weight, y, &h, rstd, eps); });
  return {y, h, rstd};
}

std::tuple<at::Tensor, at::Tensor> rms_norm_bwd_cuda(const at::Tensor& dy, const at::Tensor& h,
                                                     const std::optional<at::Tensor>& weight, const at::Tensor& rstd,
                                                     const std::optional<at::Tensor>& dh, bool compute_dweight) {
  const BwdArgs a = check_bwd(dy, h, weight, rstd, dh);
  const c10::cuda::CUDAGuard guard(h.device());
  const int64_t rows = a.h.rows, n = a.h.n;
  at::Tensor dx = at::empty(h.sizes(), h.options());
  const bool want_dw = compute_dweight && weight.has_value();
  at::Tensor dweight = at::empty({want_dw ? n : 0}, h.options());
  if (rows == 0) {
    if (want_dw) dweight.zero_();
    return {dx, dweight};
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(h.device().index()).stream();
  EF_DISPATCH_CUDA_FLOATS(h.scalar_type(), "rms_norm_bwd_cuda", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    const scalar_t* hp = h.const_data_ptr<scalar_t>();
    const scalar_t* wp = weight.has_value() ? weight->const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* dhp = a.has_dh ? dh->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
    constexpr int V = 16 / sizeof(scalar_t);
    const int vec = pack_width<scalar_t>(
        n, {{dyp, a.dy.row_stride}, {hp, a.h.row_stride}, {wp, 0}, {dhp, a.dh.row_stride}, {dxp, n}});
    const Launch L = plan(n / vec);
    // Each row group writes one partial dweight row, so it should cover several rows (kRowsPerGroup) to keep the
    // partial buffer small next to dy; but no more blocks than one full wave of the GPU.
    constexpr int64_t kRowsPerGroup = 8;
    const int64_t threads = static_cast<int64_t>(L.tpr) * L.groups;
    const int64_t wave = static_cast<int64_t>(sm_count(h.device().index())) * std::max<int64_t>(1, 2048 / threads);
    const int64_t blocks =
        std::max<int64_t>(1, std::min<int64_t>((rows + L.groups * kRowsPerGroup - 1) / (L.groups * kRowsPerGroup),
                                               wave));
    const int64_t groups = blocks * L.groups;
    at::Tensor partial;
    A* pp = nullptr;
    if (want_dw) {
      partial = at::zeros({groups, n}, h.options().dtype(stat_dtype(h.scalar_type())));
      pp = partial.mutable_data_ptr<A>();
    }
    const A* sp = rstd.const_data_ptr<A>();
    if (vec == V)
      launch_bwd<scalar_t, V>(dyp, a.dy.row_stride, hp, a.h.row_stride, wp, dhp, a.dh.row_stride, sp, dxp, pp,
                              blocks, L, rows, n, stream);
    else
      launch_bwd<scalar_t, 1>(dyp, a.dy.row_stride, hp, a.h.row_stride, wp, dhp, a.dh.row_stride, sp, dxp, pp,
                              blocks, L, rows, n, stream);
    if (want_dw) {
      const dim3 block(32, 8), grid(static_cast<unsigned>((n + 31) / 32));
      dweight_reduce_kernel<scalar_t>
          <<<grid, block, 0, stream>>>(pp, dweight.mutable_data_ptr<scalar_t>(), groups, n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {dx, dweight};
}

}  // namespace
}  // namespace rms_norm
}  // namespace enigma_fast

TORCH_LIBRARY_IMPL(enigma_fast, CUDA, m) {
  m.impl("rms_norm_fwd", &enigma_fast::rms_norm::rms_norm_fwd_cuda);
  m.impl("add_rms_norm_fwd", &enigma_fast::rms_norm::add_rms_norm_fwd_cuda);
  m.impl("rms_norm_bwd", &enigma_fast::rms_norm::rms_norm_bwd_cuda);
}
