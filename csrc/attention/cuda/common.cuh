// Relative-position attention on CUDA: what every kernel shares. Element types, the per-row geometry (where the
// queries sit, which keys exist and which are masked, read on the device so that a decode step can be captured in a
// CUDA graph), and small device helpers. Device code only sees plain structs of pointers and sizes.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace enigma_fast {
namespace attention {
namespace cuda {

// Accumulator type: float32, float64 for float64 inputs.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Where the queries of batch row b sit and which keys they may see. Filled on the host, read on the device.
//   rel_attention:       nk = Tk,                                       qpos0 = Tk - Tq
//   kvcache:             nk = min(cache_seqlens[b] + n_new, Tk),         qpos0 = nk - Tq
//   keys j < kstart (key_start[b] clamped to [0, nk]) are masked; with causal, keys j > qpos0 + i too.
struct Geom {
  int64_t B, H, Tq, Tk;
  const void* seqlens;  // (B,) int32/int64 or null
  const void* key_start;
  int64_t n_new;
  bool seqlens64, key_start64, causal;
};

struct RowGeom {
  int64_t nk, qpos0, kstart;
};

__device__ __forceinline__ int64_t read_index(const void* p, bool is64, int64_t b) {
  return is64 ? static_cast<const int64_t*>(p)[b] : static_cast<int64_t>(static_cast<const int32_t*>(p)[b]);
}

__device__ __forceinline__ RowGeom row_geom(const Geom& g, int64_t b) {
  RowGeom r;
  r.nk = g.Tk;
  if (g.seqlens != nullptr) {
    const int64_t n = read_index(g.seqlens, g.seqlens64, b) + g.n_new;
    r.nk = n < 0 ? 0 : (n > g.Tk ? g.Tk : n);
  }
  r.qpos0 = r.nk - g.Tq;
  r.kstart = 0;
  if (g.key_start != nullptr) {
    const int64_t s = read_index(g.key_start, g.key_start64, b);
    r.kstart = s < 0 ? 0 : (s > r.nk ? r.nk : s);
  }
  return r;
}

// Clamped relative offset j - p as a row index of rel_emb[h]: clamp(j - p, -(P-1), P-1) + P-1.
__device__ __forceinline__ int64_t rel_row(int64_t off, int64_t P) {
  off = off < -(P - 1) ? -(P - 1) : (off > P - 1 ? P - 1 : off);
  return off + P - 1;
}

template <typename T>
__device__ __forceinline__ acc_t<T> to_acc(T x) {
  return static_cast<acc_t<T>>(x);
}

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> x) {
  return static_cast<T>(x);
}

template <typename A>
__device__ __forceinline__ A exp_acc(A x) {
  if constexpr (std::is_same_v<A, double>) return ::exp(x);
  else return __expf(x);
}

template <typename A>
__device__ __forceinline__ A log_acc(A x) {
  if constexpr (std::is_same_v<A, double>) return ::log(x);
  else return __logf(x);
}

template <typename A>
__device__ __forceinline__ A neg_inf() {
  return -static_cast<A>(INFINITY);
}

// 16 bytes of T.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

}  // namespace cuda
}  // namespace attention
}  // namespace enigma_fast
