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

// acc[0..n) += c * x[0..n)
template <Isa L, typename T>
EF_INLINE void axpy(T* acc, T c, const T* x, int64_t n) {
  using V = VecT<T, L>;
  constexpr int W = cpu::Vec<T, L>::W;
  int64_t i = 0;
  for (; i + W <= n; i += W) cpu::vstore(acc + i, cpu::vload<V>(x + i) * c + cpu::vload<V>(acc + i));
  for (; i < n; ++i) acc[i] += c * x[i];
}

// ---- linear layers ---------------------------------------------------------------------------------------------

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
    attention::gemm<T, L>(M, nb, lin.K, x, ldx, 1, packed + lin.w + p * lin.K * nb, nb, c, ldy, false);
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

// out[0..D) = sum_j p[j] v_j / l over rows v_j (ld D) j < n, accumulated in acc (D elements of scratch).
template <Isa L, typename T>
EF_INLINE void weighted_rows(const T* p, const T* v, int64_t n, int64_t D, T l, T* acc, T* out) {
  std::fill(acc, acc + D, T(0));
  for (int64_t j = 0; j < n; ++j) axpy<L>(acc, p[j], v + j * D, D);
  const T inv = l > 0 ? T(1) / l : T(0);
  for (int64_t i = 0; i < D; ++i) out[i] = acc[i] * inv;
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
