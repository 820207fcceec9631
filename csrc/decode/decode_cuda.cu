// The whole-step decode on CUDA: the projections are ATen matrix products written into the caller's workspace
// (cuBLAS inside torch; nothing allocated), everything else is the kernels below, all on the current stream. Every
// size is fixed by the buffers and every per-row value (token, cache length, left padding, position) is read on the
// device, so a step can be captured once in a CUDA graph and replayed for every token (no host read, no allocation,
// no host-device copy).
//
//   embed_kernel        h[b] = tok_emb[tok[b]] (+ pos_emb[pos_offset[b] + seqlens[b]], Enigma)
//   add_norm_kernel     h += f (rounded to the dtype, as add_rms_norm); y = h rsqrt(mean(h^2) + eps) w (float stats)
//   self_attn_kernel    one block per (head, row): the new key/value written into the caches at seqlens[b], then an
//                       online softmax over the keys [key_start, seqlens] split over the block's warps, with the
//                       relative term q . rel_emb[h, clamp(j - p, -(P-1), 0) + P-1]; warps merged in shared memory
//   cross_attn_kernel   the same over Enigma's memory [memory_start, S) with the bias rel_bias[h, clamp(j - ms - pos,
//                       -R, R) + R]
//   advance_kernel      seqlens += 1
// Device code cannot raise: out-of-range token ids and positions are clamped, a row whose cache is full writes
// nothing and attends to its first Tmax keys (the CPU kernel and the Python checks reject these instead).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>

#include "decode/decode.h"

namespace enigma_fast {
namespace decode {
namespace {

constexpr int kWarps = 8;               // warps per attention block
constexpr int kMaxHeadDim = 256;        // head dimension a lane group holds in registers: 8 floats a lane
constexpr int kPerLane = kMaxHeadDim / 32;
constexpr int kNormThreads = 256;

__device__ __forceinline__ int64_t read_index(const void* p, bool is64, int64_t b) {
  if (p == nullptr) return 0;
  return is64 ? static_cast<const int64_t*>(p)[b] : static_cast<int64_t>(static_cast<const int32_t*>(p)[b]);
}

__device__ __forceinline__ int64_t clamp64(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : (x > hi ? hi : x); }

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

struct IndexArg {
  const void* p = nullptr;
  bool i64 = false;
};

IndexArg index_arg(const std::optional<at::Tensor>& t) {
  IndexArg r;
  if (t.has_value()) r.p = t->data_ptr(), r.i64 = t->scalar_type() == at::kLong;
  return r;
}

template <typename T>
__global__ void embed_kernel(const T* __restrict__ tok_emb, const T* __restrict__ pos_emb, const int64_t* tok,
                             const int32_t* seqlens, IndexArg pos_offset, T* h, int64_t d, int64_t V, int64_t npos) {
  const int64_t b = blockIdx.x;
  const int64_t t = clamp64(tok[b], 0, V - 1);
  const T* e = tok_emb + t * d;
  T* hb = h + b * d;
  if (pos_emb != nullptr) {
    const int64_t pos = clamp64(read_index(pos_offset.p, pos_offset.i64, b) + seqlens[b], 0, npos - 1);
    const T* pe = pos_emb + pos * d;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
      hb[i] = static_cast<T>(static_cast<float>(e[i]) + static_cast<float>(pe[i]));
  } else {
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) hb[i] = e[i];
  }
}

template <typename T>
__global__ void __launch_bounds__(kNormThreads) add_norm_kernel(T* h, const T* f, const T* __restrict__ w, T* y,
                                                                 int64_t d, float eps) {
  __shared__ float part[kNormThreads / 32];
  __shared__ float rstd_s;
  const int64_t b = blockIdx.x;
  T* hb = h + b * d;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    T v = hb[i];
    if (f != nullptr) {
      v = static_cast<T>(static_cast<float>(v) + static_cast<float>(f[b * d + i]));
      hb[i] = v;
    }
    const float x = static_cast<float>(v);
    ss += x * x;
  }
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0;
    for (int i = 0; i < kNormThreads / 32; ++i) t += part[i];
    rstd_s = rsqrtf(t / static_cast<float>(d) + eps);
  }
  __syncthreads();
  const float r = rstd_s;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
    y[b * d + i] = static_cast<T>(static_cast<float>(hb[i]) * r * static_cast<float>(w[i]));
}

// Online-softmax state of one warp: running max m, sum l, and the lane's share of the output (elements lane + 32 c).
struct WarpState {
  float m, l, o[kPerLane];
};

// Merges the warps' states through shared memory and writes out[0..D) (zeros when no warp saw a key).
template <typename T>
__device__ void merge_and_store(const WarpState& st, int64_t D, T* out) {
  __shared__ float sm[kWarps], sl[kWarps];
  __shared__ float so[kWarps][kMaxHeadDim];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) sm[warp] = st.m, sl[warp] = st.l;
#pragma unroll
  for (int c = 0; c < kPerLane; ++c)
    if (lane + 32 * c < D) so[warp][lane + 32 * c] = st.o[c];
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < kWarps; ++w) m = fmaxf(m, sm[w]);
  float l = 0;
  for (int w = 0; w < kWarps; ++w) l += sm[w] == -INFINITY ? 0.f : sl[w] * __expf(sm[w] - m);
  const float inv = l > 0 ? 1.f / l : 0.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    float acc = 0;
    for (int w = 0; w < kWarps; ++w)
      if (sm[w] != -INFINITY) acc += so[w][i] * __expf(sm[w] - m);
    out[i] = static_cast<T>(acc * inv);
  }
}

// Adds key j with score s and value row v to the warp's state.
template <typename T>
__device__ __forceinline__ void accumulate(WarpState& st, float s, const T* v, int64_t D, int lane) {
  const float m_new = fmaxf(st.m, s);
  const float corr = st.m == -INFINITY ? 0.f : __expf(st.m - m_new);
  const float p = __expf(s - m_new);
  st.l = st.l * corr + p;
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    const int64_t i = lane + 32 * c;
    st.o[c] = st.o[c] * corr + (i < D ? p * static_cast<float>(v[i]) : 0.f);
  }
  st.m = m_new;
}

struct SelfArgs {
  const int32_t* seqlens;
  IndexArg key_start;
  int64_t B, H, D, d, Tmax, P, qkv_ld;
  float scale;
};

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    self_attn_kernel(const T* qkv, T* k_cache, T* v_cache, const T* __restrict__ rel, T* att, SelfArgs a) {
  __shared__ float q[kMaxHeadDim];
  const int64_t h = blockIdx.x, b = blockIdx.y, D = a.D, P = a.P;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const T* row = qkv + b * a.qkv_ld;
  const int64_t off = ((b * a.H + h) * a.Tmax) * D;  // this layer's caches start at k_cache / v_cache
  T* kc = k_cache + off;
  T* vc = v_cache + off;
  const int64_t p = a.seqlens[b];
  const bool room = p >= 0 && p < a.Tmax;
  if (room)
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      kc[p * D + i] = row[a.d + h * D + i];
      vc[p * D + i] = row[2 * a.d + h * D + i];
    }
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) q[i] = static_cast<float>(row[h * D + i]) * a.scale;
  __syncthreads();  // the new key/value and q are visible to every warp
  const int64_t n = room ? p + 1 : clamp64(p, 0, a.Tmax);
  const int64_t ks = clamp64(read_index(a.key_start.p, a.key_start.i64, b), 0, n);
  const T* relh = rel + h * P * D;  // rows r = c + P-1 for offsets c = -(P-1) .. 0
  WarpState st;
  st.m = -INFINITY, st.l = 0;
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) st.o[c] = 0;
  for (int64_t j = ks + warp; j < n; j += kWarps) {
    const int64_t r = clamp64(j - (n - 1), -(P - 1), 0) + P - 1;
    float s = 0;
    for (int64_t i = lane; i < D; i += 32)
      s += q[i] * (static_cast<float>(kc[j * D + i]) + static_cast<float>(relh[r * D + i]));
    s = warp_sum(s);
    accumulate(st, s, vc + j * D, D, lane);
  }
  merge_and_store(st, D, att + b * a.d + h * D);
}

struct CrossArgs {
  const int32_t* seqlens;
  IndexArg pos_offset, memory_start;
  int64_t B, H, D, d, S, R;
  float scale;
};

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    cross_attn_kernel(const T* q2, const T* mem_k, const T* mem_v, const T* __restrict__ bias, T* att, CrossArgs a) {
  __shared__ float q[kMaxHeadDim];
  const int64_t h = blockIdx.x, b = blockIdx.y, D = a.D, S = a.S, R = a.R;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) q[i] = static_cast<float>(q2[b * a.d + h * D + i]) * a.scale;
  __syncthreads();
  const int64_t off = ((b * a.H + h) * S) * D;
  const int64_t ms = clamp64(read_index(a.memory_start.p, a.memory_start.i64, b), 0, S);
  const int64_t pos = read_index(a.pos_offset.p, a.pos_offset.i64, b) + a.seqlens[b];
  WarpState st;
  st.m = -INFINITY, st.l = 0;
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) st.o[c] = 0;
  for (int64_t j = ms + warp; j < S; j += kWarps) {
    float s = 0;
    for (int64_t i = lane; i < D; i += 32) s += q[i] * static_cast<float>(mem_k[off + j * D + i]);
    s = warp_sum(s);
    if (bias != nullptr) s += static_cast<float>(bias[h * (2 * R + 1) + clamp64(j - ms - pos, -R, R) + R]);
    accumulate(st, s, mem_v + off + j * D, D, lane);
  }
  merge_and_store(st, D, att + b * a.d + h * D);
}

__global__ void advance_kernel(int32_t* seqlens, int64_t B) {
  const int64_t b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b < B) seqlens[b] += 1;
}

at::Tensor decode_pack_cuda(at::TensorList weights, at::IntArrayRef geometry) {
  TORCH_CHECK_VALUE(!weights.empty(), "decode_pack: weights must not be empty");
  const auto st = weights[0].scalar_type();
  check_cuda_pack_dtype(st);
  const c10::cuda::CUDAGuard guard(weights[0].device());
  return pack_weights(weights, geometry, kCudaPanel);
}

void decode_step_cuda(const at::Tensor& packed, at::IntArrayRef geometry, double eps, const at::Tensor& tok,
                      const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& seqlens,
                      const std::optional<at::Tensor>& key_start, const std::optional<at::Tensor>& pos_offset,
                      const std::optional<at::Tensor>& memory_k, const std::optional<at::Tensor>& memory_v,
                      const std::optional<at::Tensor>& memory_start, const at::Tensor& logits,
                      const at::Tensor& work) {
  const char* op = "decode_step";
  const Geometry g = checked_geometry(geometry, op);
  const auto st = packed.scalar_type();
  const StepShapes sh =
      check_step(g, packed, tok, k_cache, v_cache, seqlens, key_start, pos_offset, memory_k, memory_v, memory_start,
                 logits, work, eps, st == at::kFloat || st == at::kBFloat16 || st == at::kHalf);
  check_cuda_head_dim(g.D, kMaxHeadDim, op);
  const c10::cuda::CUDAGuard guard(packed.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(packed.get_device()).stream();
  const int64_t B = sh.B, d = g.d, H = g.H, D = g.D;
  const Layout lay = make_layout(g, kCudaPanel);
  const Work w = make_work(g, B, sh.Tmax, sh.S, kCudaPanel);
  // Views (no copies): weights of the packed tensor, contiguous (B, N) buffers of the workspace.
  auto region = [&](int64_t off, int64_t n) { return packed.narrow(0, off, n); };
  auto buf = [&](int64_t off, int64_t cols) { return work.narrow(0, off, B * cols).view({B, cols}); };
  auto linear = [&](const Linear& lin, const at::Tensor& x, const at::Tensor& y) {
    const at::Tensor W = region(lin.w, lin.N * lin.K).view({lin.N, lin.K});
    if (lin.b >= 0) at::addmm_out(const_cast<at::Tensor&>(y), region(lin.b, lin.N), x, W.t());
    else at::mm_out(const_cast<at::Tensor&>(y), x, W.t());
  };
  const at::Tensor h = buf(w.h, d), f = buf(w.f, d), y = buf(w.y, d), att = buf(w.att, d);
  const at::Tensor qkv = buf(w.qkv, 3 * d), a = buf(w.a, d), u = buf(w.u, g.F), q2 = buf(w.q2, d);
  const float scale = static_cast<float>(std::pow(static_cast<double>(D), -0.5));
  const int64_t layer_cache = B * H * sh.Tmax * D, layer_mem = B * H * sh.S * D;
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const T* P = packed.data_ptr<T>();  // c10::BFloat16 / c10::Half: data_ptr<T> of their dtypes
    auto norm = [&](const at::Tensor* add, int64_t w_off) {
      add_norm_kernel<T><<<B, kNormThreads, 0, stream>>>(h.data_ptr<T>(), add ? add->data_ptr<T>() : nullptr,
                                                         P + w_off, y.data_ptr<T>(), d, static_cast<float>(eps));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    embed_kernel<T><<<B, 128, 0, stream>>>(P + lay.tok_emb, g.enigma() ? P + lay.pos_emb : nullptr,
                                           tok.data_ptr<int64_t>(), seqlens.data_ptr<int32_t>(),
                                           index_arg(pos_offset), h.data_ptr<T>(), d, g.V, g.npos);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    SelfArgs sa{seqlens.data_ptr<int32_t>(), index_arg(key_start), B, H, D, d, sh.Tmax, g.P, 3 * d, scale};
    CrossArgs ca{seqlens.data_ptr<int32_t>(), index_arg(pos_offset), index_arg(memory_start), B, H, D, d, sh.S, g.R,
                 scale};
    const dim3 grid(static_cast<unsigned>(H), static_cast<unsigned>(B));
    for (int64_t l = 0; l < g.L; ++l) {
      const LayerLayout ly = lay.layer(l);
      norm(l == 0 ? nullptr : &f, ly.norm1);
      linear(ly.qkv, y, qkv);
      self_attn_kernel<T><<<grid, kWarps * 32, 0, stream>>>(qkv.data_ptr<T>(), k_cache.data_ptr<T>() + l * layer_cache,
                                                            v_cache.data_ptr<T>() + l * layer_cache, P + ly.rel,
                                                            att.data_ptr<T>(), sa);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      linear(ly.out, att, a);
      if (g.enigma()) {
        norm(&a, ly.norm_cross);
        linear(ly.cq, y, q2);
        cross_attn_kernel<T><<<grid, kWarps * 32, 0, stream>>>(
            q2.data_ptr<T>(), memory_k->data_ptr<T>() + l * layer_mem, memory_v->data_ptr<T>() + l * layer_mem,
            g.R > 0 ? P + ly.cross_bias : nullptr, att.data_ptr<T>(), ca);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        linear(ly.cout, att, a);
      }
      norm(&a, ly.norm2);
      linear(ly.fc, y, u);
      at::gelu_(const_cast<at::Tensor&>(u));
      linear(ly.proj, u, f);
    }
    norm(&f, lay.norm_f);
    linear(lay.head, y, logits);
    advance_kernel<<<static_cast<unsigned>((B + 127) / 128), 128, 0, stream>>>(seqlens.data_ptr<int32_t>(), B);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (st == at::kFloat) run(float(0));
  else if (st == at::kBFloat16) run(c10::BFloat16(0.f));
  else run(c10::Half(0.f));
}

}  // namespace

TORCH_LIBRARY_IMPL(enigma_fast, CUDA, m) {
  m.impl("decode_pack", &decode_pack_cuda);
  m.impl("decode_step", &decode_step_cuda);
}

}  // namespace decode
}  // namespace enigma_fast
