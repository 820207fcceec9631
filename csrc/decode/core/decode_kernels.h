// Torch-free CPU kernels of the whole-step decode, as templates over the instruction-set level L and the storage
// type T (float or double; everything is computed in T). Included by decode_cpu.cpp, which compiles them once per
// level (EF_DEFINE_ISA_ENTRIES), and by the C++ unit tests. Everything is always_inline, so a kernel compiles for
// the level of the entry point it is inlined into. Nothing here allocates: every buffer is a slice of the caller's
// workspace (decode_layout.h, Work).
//
//   linear_panels  y = x W^T + b (optionally GELU) for a range of NB-wide weight panels: the tile GEMM of the
//                  attention kernels (attention_tile.h) with the packed panel as its row-major B operand, so batch
//                  rows share each streamed weight; one row (batch 1) is a GEMV that reads every weight once
//   norm_rows      h += f (the pending residual branch), y = h rsqrt(mean(h^2) + eps) w
//   self_attention one (row, head): write the new key/value into the cache at seqlens[b], then attend causally over
//                  the row's keys [key_start, seqlens + 1) with the relative term (relative offsets -(P-1) .. 0)
//   cross_attention one (row, head) of Enigma's cross-attention over the projected memory [memory_start, S), with
//                  the learned bias rel_bias[h, clamp(j - memory_start - pos, -R, R) + R] when R > 0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "attention/attention_tile.h"
#include "common/simd.h"
#include "decode/core/decode_layout.h"

namespace enigma_fast {
namespace decode {

using cpu::Isa;

// A (B,) index vector of int32 or int64 read in place; absent when p is null.
struct Index {
  const void* p = nullptr;
  bool i64 = true;
  int64_t operator[](int64_t b) const {
    return i64 ? static_cast<const int64_t*>(p)[b] : static_cast<const int32_t*>(p)[b];
  }
  explicit operator bool() const { return p != nullptr; }
};

// Everything one step reads and writes. Caches are (L, B, H, Tmax, D), memory (L, B, H, S, D), all contiguous.
template <typename T>
struct Step {
  Geometry g;
  Layout lay;
  Work w;
  int64_t B = 0, Tmax = 0, S = 0;
  T eps = 0, scale = 0;
  const T* packed = nullptr;
  const int64_t* tok = nullptr;
  int32_t* seqlens = nullptr;
  Index key_start, pos_offset, memory_start;
  T* k_cache = nullptr;
  T* v_cache = nullptr;
  const T* memory_k = nullptr;
  const T* memory_v = nullptr;
  T* logits = nullptr;  // (B, V)
  T* work = nullptr;
};

template <typename T, Isa L>
using VecT = typename cpu::Vec<T, L>::type;

// ---- elementwise ---------------------------------------------------------------------------------------------

// GELU(x) = x/2 (1 + erf(x / sqrt 2)) through erfc: x >= 0 gives x - x/2 erfc(z), x < 0 gives x/2 erfc(|z|), z =
// |x| / sqrt 2, with erfc(z) = t exp(-z^2 + poly(t)), t = 1 / (1 + z/2) (the Chebyshev fit of Numerical Recipes,
// fractional error below 1.2e-7 for every z). z^2 = x^2 / 2 is taken exactly: x = hi + lo with hi holding the top 12
// significand bits, so hi^2 is exact and exp(-z^2) = exp(-hi^2 / 2) exp(-(2 hi + lo) lo / 2); a rounded z^2 of 66
// (x = -11.5) would already cost 1e-5 of relative error. So the result has a relative error of a few 1e-7
// everywhere, the far negative tail included.
template <typename V>
EF_INLINE V vgelu(V x) {
  using I = typename cpu::VecBytes<float, sizeof(V)>::itype;
  const V ax = x < 0.0f ? -x : x;
  I bits;
  std::memcpy(&bits, &ax, sizeof(bits));
  bits &= int32_t(0xfffff000);
  V hi;
  std::memcpy(&hi, &bits, sizeof(hi));
  const V lo = ax - hi;
  const V z = ax * 0.70710678118654752f;
  const V t = 1.0f / (z * 0.5f + 1.0f);
  V p = V{} + 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const V erfc = t * cpu::vexp(hi * hi * -0.5f) * cpu::vexp(p - (hi * 2.0f + lo) * lo * 0.5f);
  const V half = x * 0.5f * erfc;
  return x < 0.0f ? half : x - half;
}

template <typename T>
EF_INLINE T gelu_exact(T x) {
  return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
}

template <Isa L, typename T>
EF_INLINE T dot(const T* x, const T* y, int64_t n) {
  using V = VecT<T, L>;
  constexpr int W = cpu::Vec<T, L>::W;
  V acc{};
  int64_t i = 0;
  for (; i + W <= n; i += W) acc = cpu::vload<V>(x + i) * cpu::vload<V>(y + i) + acc;
  T s = cpu::hsum<T>(acc);
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

// out[0..3] = x . y_0 .. y_3 with rows ld apart: four independent chains.
template <Isa L, typename T>
EF_INLINE void dot4(const T* x, const T* y, int64_t ld, int64_t n, T* out) {
  using V = VecT<T, L>;
  constexpr int W = cpu::Vec<T, L>::W;
  V a0{}, a1{}, a2{}, a3{};
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const V xv = cpu::vload<V>(x + i);
    a0 = xv * cpu::vload<V>(y + i) + a0;
    a1 = xv * cpu::vload<V>(y + ld + i) + a1;
    a2 = xv * cpu::vload<V>(y + 2 * ld + i) + a2;
    a3 = xv * cpu::vload<V>(y + 3 * ld + i) + a3;
  }
  T s0 = cpu::hsum<T>(a0), s1 = cpu::hsum<T>(a1), s2 = cpu::hsum<T>(a2), s3 = cpu::hsum<T>(a3);
  for (; i < n; ++i) {
    s0 += x[i] * y[i];
    s1 += x[i] * y[ld + i];
    s2 += x[i] * y[2 * ld + i];
    s3 += x[i] * y[3 * ld + i];
  }
  out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

// ---- linear layers ---------------------------------------------------------------------------------------------

// How the few-row product of a panel is blocked at level L: per k it loads CB vectors of the panel's row k and
// multiplies them by M broadcast elements of x, so M x CB accumulators, the CB vectors (folded into the multiply
// when M = 1), the broadcast and, without FMA, a product temporary must fit the register file.
template <Isa L>
constexpr int gemv_cols(int M, int vectors_per_row) {
  constexpr int regs = cpu::IsaTraits<L>::kRegs, spare = cpu::IsaTraits<L>::kFma ? 1 : 2;
  for (int cb = vectors_per_row; cb >= 1; --cb)
    if (vectors_per_row % cb == 0 && M * cb + (M == 1 ? 0 : cb) + spare <= regs) return cb;
  return 0;
}

// The most rows the few-row product takes at level L for panels of NB elements of T (beyond, the tile GEMM).
template <Isa L, typename T>
constexpr int gemv_max_rows(int64_t nb) {
  const int vpr = static_cast<int>(nb / cpu::Vec<T, L>::W);
  int m = 0;
  while (m < 8 && gemv_cols<L>(m + 1, vpr) > 0) ++m;
  return m;
}

// C (M x NB, row stride ldc) = x (M x K, row stride ldx) B for one K x NB panel B (row-major, NB = kCpuPanel
// columns, 64-byte aligned). The panel is read in column slices of CB vectors; with CB * W = NB (every level at
// M = 1 but SSE2, which takes two slices) it is read once, front to back, as one stream: at batch 1 a step's
// projections are this loop over all the model's weights, and its speed is the memory's. The tile GEMM at M = 1
// instead walks the panel in slices of 1-2 vectors, NB / (NB_v W) strided passes, which the hardware prefetchers
// follow less well (at AVX2 four passes, 40% of the copy bandwidth against 60% at AVX-512).
// The first slice prefetches each panel row this many rows (8 KB of float) ahead, every line of it: measured on a
// 2-core Xeon (47m, batch 1) at 32 against none, the step took 11.5 against 18.6 ms at SSE2 (whose second slice
// then reads the rows from L2), 8.6 against 10.8 at AVX2 and 8.6 against 9.4 at AVX-512; 8, 16, 64 and 128 rows
// were no better.
constexpr int64_t kGemvPrefetchRows = 32;

template <Isa L, typename T, int M, int CB>
EF_INLINE void gemv_slice(int64_t K, const T* x, int64_t ldx, const T* b, int64_t nb, T* c, int64_t ldc,
                          bool prefetch) {
  using V = VecT<T, L>;
  constexpr int W = cpu::Vec<T, L>::W;
  V acc[M][CB];
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 16
    for (int n = 0; n < CB; ++n) acc[r][n] = V{};
  for (int64_t k = 0; k < K; ++k) {
    const T* bk = b + k * nb;
    if (prefetch) {  // the whole row kGemvPrefetchRows ahead (past the panel: the next one; a prefetch never faults)
      const char* ahead = reinterpret_cast<const char*>(bk + kGemvPrefetchRows * nb);
      for (int64_t line = 0; line < nb * int64_t(sizeof(T)); line += 64) __builtin_prefetch(ahead + line, 0, 3);
    }
    if constexpr (M == 1) {
      const T xv = x[k];
#pragma GCC unroll 16
      for (int n = 0; n < CB; ++n) acc[0][n] = cpu::vload<V>(bk + n * W) * xv + acc[0][n];
    } else {
      V bv[CB];
#pragma GCC unroll 16
      for (int n = 0; n < CB; ++n) bv[n] = cpu::vload<V>(bk + n * W);
#pragma GCC unroll 8
      for (int r = 0; r < M; ++r) {
        const T xv = x[r * ldx + k];
#pragma GCC unroll 16
        for (int n = 0; n < CB; ++n) acc[r][n] = bv[n] * xv + acc[r][n];
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 16
    for (int n = 0; n < CB; ++n) cpu::vstore(c + r * ldc + n * W, acc[r][n]);
}

template <Isa L, typename T, int M>
EF_INLINE void gemv_rows(int64_t K, const T* x, int64_t ldx, const T* b, int64_t nb, T* c, int64_t ldc) {
  constexpr int W = cpu::Vec<T, L>::W;
  constexpr int CB = gemv_cols<L>(M, static_cast<int>(kCpuPanel / W));
  static_assert(CB > 0, "gemv_rows: M too large for the level");
  for (int64_t n = 0; n < nb; n += CB * W) gemv_slice<L, T, M, CB>(K, x, ldx, b + n, nb, c + n, ldc, n == 0);
}

// C = x B for M <= gemv_max_rows rows (see gemv_slice); nb must be kCpuPanel.
template <Isa L, typename T>
EF_INLINE void gemv_panel(int64_t M, int64_t K, const T* x, int64_t ldx, const T* b, int64_t nb, T* c, int64_t ldc) {
  constexpr int mmax = gemv_max_rows<L, T>(kCpuPanel);
  switch (M) {
    case 1: gemv_rows<L, T, 1>(K, x, ldx, b, nb, c, ldc); break;
    case 2: if constexpr (mmax >= 2) gemv_rows<L, T, 2>(K, x, ldx, b, nb, c, ldc); break;
    case 3: if constexpr (mmax >= 3) gemv_rows<L, T, 3>(K, x, ldx, b, nb, c, ldc); break;
    case 4: if constexpr (mmax >= 4) gemv_rows<L, T, 4>(K, x, ldx, b, nb, c, ldc); break;
    case 5: if constexpr (mmax >= 5) gemv_rows<L, T, 5>(K, x, ldx, b, nb, c, ldc); break;
    case 6: if constexpr (mmax >= 6) gemv_rows<L, T, 6>(K, x, ldx, b, nb, c, ldc); break;
    default: break;
  }
}

// Rows [0, M) of y (row stride ldy) = x (M x K, row stride ldx) W^T + b, for the panels [p0, p1) of `lin`, GELU
// after the bias when `gelu`. Padded columns (N .. Np) come out as 0 (zero weights and bias; GELU(0) = 0).
template <Isa L, typename T>
EF_INLINE void linear_panels(const T* packed, const Linear& lin, int64_t nb, const T* x, int64_t ldx, int64_t M, T* y,
                             int64_t ldy, int64_t p0, int64_t p1, bool gelu) {
  using V = VecT<T, L>;
  constexpr int W = cpu::Vec<T, L>::W;
  const T* bias = lin.b >= 0 ? packed + lin.b : nullptr;
  for (int64_t p = p0; p < p1; ++p) {
    T* c = y + p * nb;
    const T* panel = packed + lin.w + p * lin.K * nb;
    if (nb == kCpuPanel && M <= std::min(6, gemv_max_rows<L, T>(kCpuPanel)))
      gemv_panel<L, T>(M, lin.K, x, ldx, panel, nb, c, ldy);
    else
      attention::gemm<T, L>(M, nb, lin.K, x, ldx, 1, panel, nb, c, ldy, false);
    if (!bias && !gelu) continue;
    for (int64_t r = 0; r < M; ++r) {
      T* row = c + r * ldy;
      for (int64_t j = 0; j < nb; j += W) {
        V v = cpu::vload<V>(row + j);
        if (bias) v += cpu::vload<V>(bias + p * nb + j);
        if (gelu) {
          if constexpr (std::is_same_v<T, float>) {
            v = vgelu(v);
          } else {
            T t[W];
            std::memcpy(t, &v, sizeof(v));
            for (int k = 0; k < W; ++k) t[k] = gelu_exact(t[k]);
            std::memcpy(&v, t, sizeof(v));
          }
        }
        cpu::vstore(row + j, v);
      }
    }
  }
}

// ---- RMSNorm ---------------------------------------------------------------------------------------------------

// For rows [0, M): h += f (when f is given), then y = h rsqrt(mean(h^2) + eps) w. Statistics in T.
template <Isa L, typename T>
EF_INLINE void norm_rows(T* h, const T* f, int64_t ld, const T* w, T* y, int64_t M, int64_t d, T eps) {
  using V = VecT<T, L>;
  constexpr int W = cpu::Vec<T, L>::W;
  for (int64_t r = 0; r < M; ++r) {
    T* hr = h + r * ld;
    if (f) {
      const T* fr = f + r * ld;
      int64_t i = 0;
      for (; i + W <= d; i += W) cpu::vstore(hr + i, cpu::vload<V>(hr + i) + cpu::vload<V>(fr + i));
      for (; i < d; ++i) hr[i] += fr[i];
    }
    V acc{};
    int64_t i = 0;
    for (; i + W <= d; i += W) {
      const V v = cpu::vload<V>(hr + i);
      acc = v * v + acc;
    }
    T ss = cpu::hsum<T>(acc);
    for (; i < d; ++i) ss += hr[i] * hr[i];
    const T rstd = T(1) / std::sqrt(ss / T(d) + eps);
    T* yr = y + r * ld;
    for (i = 0; i + W <= d; i += W) cpu::vstore(yr + i, cpu::vload<V>(hr + i) * rstd * cpu::vload<V>(w + i));
    for (; i < d; ++i) yr[i] = hr[i] * rstd * w[i];
  }
}

// ---- attention -------------------------------------------------------------------------------------------------

// s[0..n) = exp(s - max s), returns the sum. s must have room for n rounded up to the vector width.
template <Isa L, typename T>
EF_INLINE T softmax_unnormalised(T* s, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) m = s[j] > m ? s[j] : m;
  T l = 0;
  if constexpr (std::is_same_v<T, float>) {
    using V = VecT<T, L>;
    constexpr int W = cpu::Vec<T, L>::W;
    const int64_t np = (n + W - 1) / W * W;
    for (int64_t j = n; j < np; ++j) s[j] = -std::numeric_limits<T>::infinity();
    V acc{};
    for (int64_t j = 0; j < np; j += W) {
      const V e = cpu::vexp(cpu::vload<V>(s + j) - m);
      cpu::vstore(s + j, e);
      acc += e;
    }
    l = cpu::hsum<T>(acc);
  } else {
    for (int64_t j = 0; j < n; ++j) {
      s[j] = std::exp(s[j] - m);
      l += s[j];
    }
  }
  return l;
}

// out[c .. c + NV W) = inv sum_j p[j] v_j[c ..] over rows v_j (ld D), j < n: NV accumulators held in registers
// across all the rows (a sum kept in memory would pay a store-to-load forwarding per row and vector).
template <Isa L, typename T, int NV>
EF_INLINE void weighted_cols(const T* p, const T* v, int64_t n, int64_t D, T inv, T* out) {
  using V = VecT<T, L>;
  constexpr int W = cpu::Vec<T, L>::W;
  V acc[NV];
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) acc[i] = V{};
  for (int64_t j = 0; j < n; ++j) {
    const T pj = p[j];
    const T* vj = v + j * D;
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) acc[i] = cpu::vload<V>(vj + i * W) * pj + acc[i];
  }
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) cpu::vstore(out + i * W, acc[i] * inv);
}

// out[0..D) = sum_j p[j] v_j / l over rows v_j (ld D) j < n: D in blocks of up to 8 vectors, each summed over the
// rows in registers (one pass over V when D <= 8 W, i.e. up to 128 floats at AVX-512), the last D % W elements in
// acc (scratch of D elements).
template <Isa L, typename T>
EF_INLINE void weighted_rows(const T* p, const T* v, int64_t n, int64_t D, T l, T* acc, T* out) {
  constexpr int W = cpu::Vec<T, L>::W;
  const T inv = l > 0 ? T(1) / l : T(0);
  int64_t c = 0;
  for (; c + 8 * W <= D; c += 8 * W) weighted_cols<L, T, 8>(p, v + c, n, D, inv, out + c);
  switch ((D - c) / W) {
    case 7: weighted_cols<L, T, 7>(p, v + c, n, D, inv, out + c); break;
    case 6: weighted_cols<L, T, 6>(p, v + c, n, D, inv, out + c); break;
    case 5: weighted_cols<L, T, 5>(p, v + c, n, D, inv, out + c); break;
    case 4: weighted_cols<L, T, 4>(p, v + c, n, D, inv, out + c); break;
    case 3: weighted_cols<L, T, 3>(p, v + c, n, D, inv, out + c); break;
    case 2: weighted_cols<L, T, 2>(p, v + c, n, D, inv, out + c); break;
    case 1: weighted_cols<L, T, 1>(p, v + c, n, D, inv, out + c); break;
    default: break;
  }
  c += (D - c) / W * W;
  if (c == D) return;
  std::fill(acc + c, acc + D, T(0));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = c; i < D; ++i) acc[i] += p[j] * v[j * D + i];
  for (int64_t i = c; i < D; ++i) out[i] = acc[i] * inv;
}

// s[j] = q . k_j for j < n (rows ld D apart).
template <Isa L, typename T>
EF_INLINE void scores(const T* q, const T* k, int64_t n, int64_t D, T* s) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) dot4<L>(q, k + j * D, D, D, s + j);
  for (; j < n; ++j) s[j] = dot<L>(q, k + j * D, D);
}

// Self-attention of task (b, h) in layer l: the new key/value (from the qkv rows of the workspace) are written into
// the caches at position p = seqlens[b], then query p attends to keys j in [key_start[b], p] with scores
// scale q . (k_j + rel_emb[h, clamp(j - p, -(P-1), 0) + P-1]). A row without keys gives zeros.
template <Isa L, typename T>
EF_INLINE void self_attention(const Step<T>& s, int64_t l, int64_t b, int64_t h) {
  const Geometry& g = s.g;
  const Work& w = s.w;
  const int64_t D = g.D, P = g.P, task = b * g.H + h;
  T* ws = s.work;
  const T* row = ws + w.qkv + b * w.qkv_ld;
  const int64_t p = s.seqlens[b];
  const int64_t cache_off = (((l * s.B + b) * g.H + h) * s.Tmax) * D;
  T* kc = s.k_cache + cache_off;
  T* vc = s.v_cache + cache_off;
  std::memcpy(kc + p * D, row + g.d + h * D, D * sizeof(T));
  std::memcpy(vc + p * D, row + 2 * g.d + h * D, D * sizeof(T));
  T* out = ws + w.att + b * w.d_ld + h * D;
  const int64_t n = p + 1;
  const int64_t ks = s.key_start ? std::clamp<int64_t>(s.key_start[b], 0, n) : 0;
  if (ks >= n) {
    std::fill(out, out + D, T(0));
    return;
  }
  T* q = ws + w.q + task * w.dh_ld;
  for (int64_t i = 0; i < D; ++i) q[i] = row[h * D + i] * s.scale;
  // Relative term per offset c in [cmin, 0]: R[c - cmin] = q . rel[h, c + P-1]; the causal half is packed as
  // rows 0 .. P-1 (offsets -(P-1) .. 0).
  const int64_t cmin = std::max<int64_t>(-(P - 1), ks - p);
  T* R = ws + w.rel + task * w.r_ld;
  const T* rel = s.packed + s.lay.layer(l).rel + h * P * D;
  scores<L>(q, rel + (cmin + P - 1) * D, -cmin + 1, D, R);
  T* sc = ws + w.scores + task * w.s_ld;
  const int64_t nk = n - ks;
  scores<L>(q, kc + ks * D, nk, D, sc);
  // Keys j <= p - (P-1) all take offset -(P-1) (R[0] when cmin = -(P-1)); the rest their own offset.
  const int64_t jclamp = std::min(std::max<int64_t>(p - (P - 1), ks), n);  // first key with an unclamped offset
  for (int64_t j = ks; j < jclamp; ++j) sc[j - ks] += R[0];
  for (int64_t j = jclamp; j < n; ++j) sc[j - ks] += R[j - p - cmin];
  const T lsum = softmax_unnormalised<L>(sc, nk);
  weighted_rows<L>(sc, vc + ks * D, nk, D, lsum, ws + w.acc + task * w.dh_ld, out);
}

// Cross-attention of task (b, h) in layer l: the query (cross q projection in the workspace) against the memory
// keys j in [memory_start[b], S) with scores scale q . k_j + rel_bias[h, clamp(j - memory_start - pos, -R, R) + R]
// (no bias when R = 0), pos = pos_offset[b] + seqlens[b] the token's absolute position.
template <Isa L, typename T>
EF_INLINE void cross_attention(const Step<T>& s, int64_t l, int64_t b, int64_t h) {
  const Geometry& g = s.g;
  const Work& w = s.w;
  const int64_t D = g.D, R = g.R, task = b * g.H + h, S = s.S;
  T* ws = s.work;
  T* out = ws + w.att + b * w.d_ld + h * D;
  const int64_t ms = s.memory_start ? std::clamp<int64_t>(s.memory_start[b], 0, S) : 0;
  if (ms >= S) {
    std::fill(out, out + D, T(0));
    return;
  }
  const int64_t mem_off = (((l * s.B + b) * g.H + h) * S) * D;
  T* q = ws + w.q + task * w.dh_ld;
  const T* qrow = ws + w.q2 + b * w.d_ld + h * D;
  for (int64_t i = 0; i < D; ++i) q[i] = qrow[i] * s.scale;
  T* sc = ws + w.scores + task * w.s_ld;
  const int64_t nk = S - ms;
  scores<L>(q, s.memory_k + mem_off + ms * D, nk, D, sc);
  if (R > 0) {
    const T* bias = s.packed + s.lay.layer(l).cross_bias + h * (2 * R + 1);
    const int64_t pos = (s.pos_offset ? s.pos_offset[b] : 0) + s.seqlens[b];
    for (int64_t j = ms; j < S; ++j) sc[j - ms] += bias[std::clamp<int64_t>(j - ms - pos, -R, R) + R];
  }
  const T lsum = softmax_unnormalised<L>(sc, nk);
  weighted_rows<L>(sc, s.memory_v + mem_off + ms * D, nk, D, lsum, ws + w.acc + task * w.dh_ld, out);
}

// ---- embeddings and the end of the step ------------------------------------------------------------------------

// h[b] = tok_emb[tok[b]] (+ pos_emb[pos_offset[b] + seqlens[b]] for Enigma).
template <typename T>
EF_INLINE void embed(const Step<T>& s) {
  const Geometry& g = s.g;
  T* h = s.work + s.w.h;
  for (int64_t b = 0; b < s.B; ++b) {
    const T* e = s.packed + s.lay.tok_emb + s.tok[b] * g.d;
    T* hb = h + b * s.w.d_ld;
    if (g.enigma()) {
      const int64_t pos = (s.pos_offset ? s.pos_offset[b] : 0) + s.seqlens[b];
      const T* pe = s.packed + s.lay.pos_emb + pos * g.d;
      for (int64_t i = 0; i < g.d; ++i) hb[i] = e[i] + pe[i];
    } else {
      std::memcpy(hb, e, g.d * sizeof(T));
    }
  }
}

}  // namespace decode
}  // namespace enigma_fast
