// Torch-free RMSNorm row kernels, shared by the CPU op and the C++ unit tests.
//
//   forward:  h = x (+ residual),  r = 1 / sqrt(mean(h^2) + eps),  y = h * r * w
//   backward: g = dy * w,  dx = r * (g - h * r^2 * mean(g * h)) (+ dh),  dw = sum_rows dy * h * r
//
// Statistics accumulate in float (double for double storage). Loops keep LANES independent partial sums so
// the compiler vectorises them without reassociating floating point (no -ffast-math needed): 16 floats are four
// SSE2/NEON registers, two AVX2 or one AVX-512 register. The caller instantiates the row kernels once per
// instruction-set level L (common/cpu_isa.h; rms_norm_cpu.cpp) and they are always_inline, so each level's copy
// is vectorised for that level. Sums are taken in the same order at every level; with FMA contraction (avx2,
// avx512) the last bits can differ from the default level's.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/bf16.h"
#include "common/cpu_isa.h"

#if defined(__GNUC__)
#define EF_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define EF_ALWAYS_INLINE inline
#endif

namespace enigma_fast {
namespace rms_norm {

constexpr int LANES = 16;

template <typename acc_t>
EF_ALWAYS_INLINE acc_t sum_lanes(const acc_t* acc) {
  // Pairwise sum of the lane accumulators: fixed order, so results do not depend on the ISA picked.
  acc_t tmp[LANES];
  for (int l = 0; l < LANES; ++l) tmp[l] = acc[l];
  for (int width = LANES / 2; width > 0; width /= 2)
    for (int l = 0; l < width; ++l) tmp[l] += tmp[l + width];
  return tmp[0];
}

// One row of the forward. `residual` and `h_out` are both null (plain RMSNorm) or both set (add_rms_norm:
// h = x + residual is rounded to T, written to h_out, and normalised). `w` may be null (no affine weight).
// Returns r = 1 / sqrt(mean(h^2) + eps).
template <cpu::Isa L, typename T>
EF_ALWAYS_INLINE typename Storage<T>::acc_t fwd_row(const T* __restrict__ x, const T* __restrict__ residual,
                                                   const T* __restrict__ w, T* __restrict__ y,
                                                   T* __restrict__ h_out, int64_t n,
                                                   typename Storage<T>::acc_t eps) {
  using S = Storage<T>;
  using acc_t = typename S::acc_t;
  acc_t acc[LANES] = {};
  const T* h = x;
  int64_t i = 0;
  if (residual != nullptr) {
    for (; i + LANES <= n; i += LANES)
      for (int l = 0; l < LANES; ++l) {
        const T hv = S::store(S::load(x[i + l]) + S::load(residual[i + l]));
        h_out[i + l] = hv;
        const acc_t v = S::load(hv);
        acc[l] += v * v;
      }
    for (; i < n; ++i) {
      const T hv = S::store(S::load(x[i]) + S::load(residual[i]));
      h_out[i] = hv;
      const acc_t v = S::load(hv);
      acc[0] += v * v;
    }
    h = h_out;
  } else {
    for (; i + LANES <= n; i += LANES)
      for (int l = 0; l < LANES; ++l) {
        const acc_t v = S::load(x[i + l]);
        acc[l] += v * v;
      }
    for (; i < n; ++i) {
      const acc_t v = S::load(x[i]);
      acc[0] += v * v;
    }
  }
  const acc_t r = acc_t(1) / std::sqrt(sum_lanes(acc) / static_cast<acc_t>(n) + eps);
  if (w != nullptr) {
    for (int64_t j = 0; j < n; ++j) y[j] = S::store(S::load(h[j]) * r * S::load(w[j]));
  } else {
    for (int64_t j = 0; j < n; ++j) y[j] = S::store(S::load(h[j]) * r);
  }
  return r;
}

// One row of the backward. `h` is the normalised input (x, or x + residual for add_rms_norm), `r` its saved
// reciprocal RMS. `dh` (may be null) is an extra gradient flowing into h from elsewhere (the residual stream
// output of add_rms_norm); it is added to dx. `dw_acc` (may be null when w is null) accumulates dy * h * r.
template <cpu::Isa L, typename T>
EF_ALWAYS_INLINE void bwd_row(const T* __restrict__ dy, const T* __restrict__ h, const T* __restrict__ w,
                              const T* __restrict__ dh, typename Storage<T>::acc_t r, T* __restrict__ dx,
                              typename Storage<T>::acc_t* __restrict__ dw_acc, int64_t n) {
  using S = Storage<T>;
  using acc_t = typename S::acc_t;
  acc_t acc[LANES] = {};
  int64_t i = 0;
  // mean(g * h) with g = dy * w
  if (w != nullptr) {
    for (; i + LANES <= n; i += LANES)
      for (int l = 0; l < LANES; ++l) acc[l] += S::load(dy[i + l]) * S::load(w[i + l]) * S::load(h[i + l]);
    for (; i < n; ++i) acc[0] += S::load(dy[i]) * S::load(w[i]) * S::load(h[i]);
  } else {
    for (; i + LANES <= n; i += LANES)
      for (int l = 0; l < LANES; ++l) acc[l] += S::load(dy[i + l]) * S::load(h[i + l]);
    for (; i < n; ++i) acc[0] += S::load(dy[i]) * S::load(h[i]);
  }
  const acc_t c = sum_lanes(acc) * r * r / static_cast<acc_t>(n);
  for (int64_t j = 0; j < n; ++j) {
    const acc_t hv = S::load(h[j]);
    const acc_t dyv = S::load(dy[j]);
    const acc_t g = w != nullptr ? dyv * S::load(w[j]) : dyv;
    acc_t d = r * (g - hv * c);
    if (dh != nullptr) d += S::load(dh[j]);
    dx[j] = S::store(d);
    if (dw_acc != nullptr) dw_acc[j] += dyv * hv * r;
  }
}

}  // namespace rms_norm
}  // namespace enigma_fast
