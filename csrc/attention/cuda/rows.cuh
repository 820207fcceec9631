// Relative-position attention on CUDA, the row kernels (CUDA cores, every dtype): one thread block per
// (query row, key split). Used for decode (few queries over a long cache: flash-decoding, the keys of a row split
// across blocks, then a combine kernel merges the per-split (max, sum, unnormalised output)) and for float32 /
// float64 inputs, which the tensor-core kernels do not take.
//
// Inside a block, a group of L lanes reads one key row with 16-byte loads (L = D * sizeof(T) / 16, at most 32),
// each lane holding its slice of the (scaled) query; 32 / L groups per warp and 4 warps walk the split's keys
// with an online softmax each, and the groups are merged through shared memory at the end.
#pragma once

#include "attention/cuda/common.cuh"

namespace enigma_fast {
namespace attention {
namespace cuda {

struct RowsParams {
  Geom g;
  const void* q;
  const void* k;
  const void* v;
  const void* rel;  // (H, 2P-1, D) contiguous, or null
  int64_t q_sb, q_sh, q_st, k_sb, k_sh, k_st, v_sb, v_sh, v_st;  // element strides (0 for size-1 dims)
  int64_t P;
  double scale;
  void* out;      // (B, H, Tq, D) contiguous, T            (nsplit == 1)
  void* lse;      // (B, H, Tq) A                           (nsplit == 1)
  void* part_o;   // (nsplit, B*H*Tq, D) A                  (nsplit > 1)
  void* part_ml;  // (nsplit, B*H*Tq, 2) A: max, sum        (nsplit > 1)
  int nsplit;
};

constexpr int kRowsThreads = 128;

template <typename T, int D>
struct RowsShape {
  static constexpr int VEC = 16 / sizeof(T);       // elements per 16-byte load
  static constexpr int NVEC = D / VEC;             // 16-byte vectors per row
  static constexpr int L = NVEC < 32 ? NVEC : 32;  // lanes per key
  static constexpr int NV = NVEC / L;              // vectors per lane
  static constexpr int G = 32 / L;                 // key groups per warp
  static constexpr int NG = (kRowsThreads / 32) * G;
  static_assert(D % VEC == 0 && NVEC % L == 0 && 32 % L == 0, "unsupported head dim for the row kernel");
};

template <typename T, int D, bool HAS_REL>
__global__ void __launch_bounds__(kRowsThreads) rows_fwd_kernel(const RowsParams p) {
  using A = acc_t<T>;
  using S = RowsShape<T, D>;
  constexpr int VEC = S::VEC, L = S::L, NV = S::NV, G = S::G, NG = S::NG;
  __shared__ A sm_m[NG], sm_l[NG];
  __shared__ A sm_o[NG][D];

  const int64_t rows = p.g.B * p.g.H * p.g.Tq;
  const int64_t row = blockIdx.x;
  const int split = blockIdx.y;
  const int64_t i = row % p.g.Tq, bh = row / p.g.Tq, b = bh / p.g.H, h = bh % p.g.H;
  const RowGeom rg = row_geom(p.g, b);
  const int64_t pi = rg.qpos0 + i;
  const int64_t kb = rg.kstart;
  int64_t ke = p.g.causal ? (pi + 1 < rg.nk ? pi + 1 : rg.nk) : rg.nk;
  if (ke < kb) ke = kb;
  const int64_t chunk = (ke - kb + p.nsplit - 1) / p.nsplit;
  const int64_t s0 = kb + split * chunk < ke ? kb + split * chunk : ke;
  const int64_t s1 = s0 + chunk < ke ? s0 + chunk : ke;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int grp = warp * G + lane / L, gl = lane % L;

  // This lane's slice of the scaled query: vectors gl + n * L.
  A qv[NV][VEC];
  const T* qrow = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh + i * p.q_st;
#pragma unroll
  for (int n = 0; n < NV; ++n) {
    const Vec16<T> x = *reinterpret_cast<const Vec16<T>*>(qrow + (gl + n * L) * VEC);
#pragma unroll
    for (int e = 0; e < VEC; ++e) qv[n][e] = to_acc(x.v[e]) * static_cast<A>(p.scale);
  }
  const T* kbase = static_cast<const T*>(p.k) + b * p.k_sb + h * p.k_sh;
  const T* vbase = static_cast<const T*>(p.v) + b * p.v_sb + h * p.v_sh;
  const T* relh = HAS_REL ? static_cast<const T*>(p.rel) + h * (2 * p.P - 1) * D : nullptr;

  A m = neg_inf<A>(), l = 0;
  A o[NV][VEC];
#pragma unroll
  for (int n = 0; n < NV; ++n)
#pragma unroll
    for (int e = 0; e < VEC; ++e) o[n][e] = 0;

  // Every lane of a warp runs the same iterations (the shuffles need the whole warp); lanes past the split's end
  // carry a -inf score.
  for (int64_t jb = s0 + warp * G; jb < s1; jb += NG) {
    const int64_t j = jb + lane / L;
    const bool valid = j < s1;
    A s = 0;
    Vec16<T> vv[NV];
    if (valid) {
      const T* krow = kbase + j * p.k_st;
      const T* vrow = vbase + j * p.v_st;
      Vec16<T> kv[NV];
#pragma unroll
      for (int n = 0; n < NV; ++n) {
        kv[n] = *reinterpret_cast<const Vec16<T>*>(krow + (gl + n * L) * VEC);
        vv[n] = *reinterpret_cast<const Vec16<T>*>(vrow + (gl + n * L) * VEC);
      }
      if constexpr (HAS_REL) {
        const T* rrow = relh + rel_row(j - pi, p.P) * D;
#pragma unroll
        for (int n = 0; n < NV; ++n) {
          const Vec16<T> rv = *reinterpret_cast<const Vec16<T>*>(rrow + (gl + n * L) * VEC);
#pragma unroll
          for (int e = 0; e < VEC; ++e) s += qv[n][e] * (to_acc(kv[n].v[e]) + to_acc(rv.v[e]));
        }
      } else {
#pragma unroll
        for (int n = 0; n < NV; ++n)
#pragma unroll
          for (int e = 0; e < VEC; ++e) s += qv[n][e] * to_acc(kv[n].v[e]);
      }
    }
#pragma unroll
    for (int off = L / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (valid) {
      const A m_new = s > m ? s : m;
      const A corr = exp_acc(m - m_new);  // m = -inf on the first key: 0
      const A pj = exp_acc(s - m_new);
      l = l * corr + pj;
#pragma unroll
      for (int n = 0; n < NV; ++n)
#pragma unroll
        for (int e = 0; e < VEC; ++e) o[n][e] = o[n][e] * corr + pj * to_acc(vv[n].v[e]);
      m = m_new;
    }
  }

  // Merge the key groups.
  if (gl == 0) {
    sm_m[grp] = m;
    sm_l[grp] = l;
  }
#pragma unroll
  for (int n = 0; n < NV; ++n)
#pragma unroll
    for (int e = 0; e < VEC; ++e) sm_o[grp][(gl + n * L) * VEC + e] = o[n][e];
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += kRowsThreads) {
    A mx = neg_inf<A>();
#pragma unroll 4
    for (int gi = 0; gi < NG; ++gi) mx = sm_m[gi] > mx ? sm_m[gi] : mx;
    A lsum = 0, acc = 0;
    if (mx != neg_inf<A>()) {
#pragma unroll 4
      for (int gi = 0; gi < NG; ++gi) {
        const A f = exp_acc(sm_m[gi] - mx);  // groups that saw no key: exp(-inf) = 0
        lsum += sm_l[gi] * f;
        acc += sm_o[gi][d] * f;
      }
    }
    if (p.nsplit == 1) {
      static_cast<T*>(p.out)[row * D + d] = from_acc<T>(lsum > 0 ? acc / lsum : A(0));
      if (d == 0) static_cast<A*>(p.lse)[row] = lsum > 0 ? mx + log_acc(lsum) : static_cast<A>(INFINITY);
    } else {
      const int64_t prow = static_cast<int64_t>(split) * rows + row;
      static_cast<A*>(p.part_o)[prow * D + d] = acc;
      if (d == 0) {
        static_cast<A*>(p.part_ml)[prow * 2] = mx;
        static_cast<A*>(p.part_ml)[prow * 2 + 1] = lsum;
      }
    }
  }
}

// Merges the key splits of each row: m = max m_s, l = sum l_s e^(m_s - m), out = sum O_s e^(m_s - m) / l.
// One block of D threads per row; the splits are summed in order (deterministic).
template <typename T, typename A>
__global__ void combine_kernel(const A* __restrict__ part_o, const A* __restrict__ part_ml, T* __restrict__ out,
                               A* __restrict__ lse, int64_t rows, int nsplit, int D) {
  const int64_t row = blockIdx.x;
  const int d = threadIdx.x;
  A mx = neg_inf<A>();
  for (int s = 0; s < nsplit; ++s) {
    const A ms = part_ml[(static_cast<int64_t>(s) * rows + row) * 2];
    mx = ms > mx ? ms : mx;
  }
  A l = 0, acc = 0;
  if (mx != neg_inf<A>()) {
    for (int s = 0; s < nsplit; ++s) {
      const int64_t pr = static_cast<int64_t>(s) * rows + row;
      const A f = exp_acc(part_ml[pr * 2] - mx);
      l += part_ml[pr * 2 + 1] * f;
      acc += part_o[pr * D + d] * f;
    }
  }
  out[row * D + d] = from_acc<T>(l > 0 ? acc / l : A(0));
  if (d == 0) lse[row] = l > 0 ? mx + log_acc(l) : static_cast<A>(INFINITY);
}

// Writes k_new / v_new (B, H, Tq, D) into the caches at cache_seqlens[b] + t; slots past Tmax are skipped (the
// attention then reads only keys below Tmax). One thread per element.
template <typename T>
__global__ void cache_write_kernel(const T* __restrict__ kn, const T* __restrict__ vn, int64_t n_sb, int64_t n_sh,
                                   int64_t n_st, int64_t vn_sb, int64_t vn_sh, int64_t vn_st, T* __restrict__ kc,
                                   T* __restrict__ vc, int64_t c_sb, int64_t c_sh, int64_t c_st, int64_t vc_sb,
                                   int64_t vc_sh, int64_t vc_st, const void* seqlens, bool seqlens64, int64_t H,
                                   int64_t Tq, int64_t Tmax, int64_t D, int64_t total) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int64_t d = idx % D, t = (idx / D) % Tq, bh = idx / (D * Tq), b = bh / H, h = bh % H;
  const int64_t pos = read_index(seqlens, seqlens64, b) + t;
  if (pos < 0 || pos >= Tmax) return;
  kc[b * c_sb + h * c_sh + pos * c_st + d] = kn[b * n_sb + h * n_sh + t * n_st + d];
  vc[b * vc_sb + h * vc_sh + pos * vc_st + d] = vn[b * vn_sb + h * vn_sh + t * vn_st + d];
}

}  // namespace cuda
}  // namespace attention
}  // namespace enigma_fast
