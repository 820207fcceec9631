// Torch-free building blocks of the CPU attention kernels, sized to the instruction-set level they are compiled
// for (common/simd.h): a register-blocked small GEMM, row dot products, and the clamped relative-offset arithmetic.
//
// gemm computes C (M x N) (+)= A (M x K) B (K x N). B and C are row-major with a leading dimension and N a multiple
// of the vector width W (callers pad); A is addressed through two strides, A(i, k) = a[i * rs + k * cs], so a
// matrix and its transpose are read in place alike. The micro-kernel keeps an MR x NV block of C in vector
// registers: per k it loads NV vectors of B's row k and broadcasts MR elements of A's column k. MR and NV follow
// the level's register file (see Blocking): MR * NV accumulators + NV B vectors + the broadcast (+ a product
// temporary without FMA) must fit, or the compiler spills and the kernel runs at a fraction of its speed.
//
// Without a broadcast load (x86 SSE2, the default level) every broadcast of an element of A is a load and a
// shuffle, and the shuffles compete with the multiplies and adds for the same vector ports. There the float GEMM
// first copies each block of MR rows of A, over the block's K range, as broadcast vectors (one shuffle per element,
// not one per element and panel of B), and the micro-kernel multiplies B's vectors by those vectors read from
// memory: per k, MR x NV multiplies and adds and no shuffle (gemm_bcast).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "common/simd.h"

namespace enigma_fast {
namespace attention {

using cpu::Isa;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Register blocking of the broadcast micro-kernel at level L: rows per block for panels of 4, 2 and 1 vectors.
template <Isa L>
struct Blocking {
  static constexpr int kRegs = cpu::IsaTraits<L>::kRegs;
  static constexpr int kSpare = cpu::IsaTraits<L>::kFma ? 1 : 2;  // the broadcast, and a product temporary
  static constexpr int rows(int nv) {
    const int r = (kRegs - nv - kSpare) / nv;
    return r > 16 ? 16 : r;
  }
  static constexpr bool kWide = kRegs >= 32;  // 4-vector panels only where 32 registers hold 24 accumulators
  static constexpr int MR4 = rows(4), MR2 = rows(2), MR1 = rows(1);
};

// C[MR x NV*W] (+)= A[MR x K] B[K x NV*W], the block held in registers.
template <typename A, Isa L, int MR, int NV>
EF_INLINE void gemm_block(int64_t K, const A* a, int64_t rs, int64_t cs, const A* b, int64_t ldb, A* c, int64_t ldc,
                          bool accumulate) {
  using V = typename cpu::Vec<A, L>::type;
  constexpr int W = cpu::Vec<A, L>::W;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc[r][n] = accumulate ? cpu::vload<V>(c + r * ldc + n * W) : V{};
  for (int64_t k = 0; k < K; ++k) {
    V bv[NV];
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) bv[n] = cpu::vload<V>(b + k * ldb + n * W);
    const A* ak = a + k * cs;
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const A av = ak[r * rs];  // vector * scalar: one broadcast load (embedded in the FMA on AVX-512)
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) acc[r][n] = bv[n] * av + acc[r][n];
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) cpu::vstore(c + r * ldc + n * W, acc[r][n]);
}

// Which part of a product a causal mask leaves, per row i of C, with diag = the row's offset: the product of a
// diagonal attention tile is zero (or masked) beyond it, so blocks of rows skip that part exactly.
//   kNone:    everything
//   kColsLe:  columns n <= i + diag of C (S = q K^T, dP = dO V^T: later columns are masked anyway; not written)
//   kKLe:     reduction indices k <= i + diag (O += P V, dQ += dS K: P and dS are zero beyond)
//   kKGe:     reduction indices k >= i - diag (dV += P^T dO, dK += dS^T q: zero before)
enum class Band { kNone, kColsLe, kKLe, kKGe };
struct Causal {
  Band band = Band::kNone;
  int64_t diag = 0;
};

// Rows [i, i + mr) of one panel (first column n0): the block product restricted by the band.
template <typename A, Isa L, int MR, int NV>
EF_INLINE void gemm_rows(int64_t i, int64_t K, const A* a, int64_t rs, int64_t cs, const A* b, int64_t ldb, A* c,
                         int64_t ldc, bool accumulate, int64_t n0, Causal cz) {
  int64_t k0 = 0, k1 = K;
  if (cz.band == Band::kColsLe && n0 > i + MR - 1 + cz.diag) return;
  if (cz.band == Band::kKLe) k1 = std::min<int64_t>(K, i + MR + cz.diag);
  if (cz.band == Band::kKGe) k0 = std::max<int64_t>(0, i - cz.diag);
  if (k1 <= k0 && accumulate) return;
  if (k1 < k0) k1 = k0;
  gemm_block<A, L, MR, NV>(k1 - k0, a + i * rs + k0 * cs, rs, cs, b + k0 * ldb, ldb, c + i * ldc, ldc, accumulate);
}

// All M rows of one panel of NV vectors: blocks of MR rows, the rest in blocks of 4, 3, 2, 1.
template <typename A, Isa L, int MR, int NV>
EF_INLINE void gemm_panel(int64_t M, int64_t K, const A* a, int64_t rs, int64_t cs, const A* b, int64_t ldb, A* c,
                          int64_t ldc, bool accumulate, int64_t n0, Causal cz) {
  int64_t i = 0;
  for (; i + MR <= M; i += MR) gemm_rows<A, L, MR, NV>(i, K, a, rs, cs, b, ldb, c, ldc, accumulate, n0, cz);
  if constexpr (MR > 4) {
    for (; i + 4 <= M; i += 4) gemm_rows<A, L, 4, NV>(i, K, a, rs, cs, b, ldb, c, ldc, accumulate, n0, cz);
  }
  switch (M - i) {
    case 3: gemm_rows<A, L, 3, NV>(i, K, a, rs, cs, b, ldb, c, ldc, accumulate, n0, cz); break;
    case 2: gemm_rows<A, L, 2, NV>(i, K, a, rs, cs, b, ldb, c, ldc, accumulate, n0, cz); break;
    case 1: gemm_rows<A, L, 1, NV>(i, K, a, rs, cs, b, ldb, c, ldc, accumulate, n0, cz); break;
    default: break;
  }
}

// Whether the float GEMM of level L copies A as broadcast vectors first (see the header): levels whose ISA has no
// broadcast load or FMA (x86 SSE2). NEON's multiply-by-lane and every AVX level's broadcast load need no copy.
template <typename A, Isa L>
inline constexpr bool kBroadcastA =
    std::is_same_v<A, float> && !cpu::IsaTraits<L>::kFma && cpu::Vec<A, L>::W == 4 && cpu::IsaTraits<L>::kRegs == 16;

// The calling thread's buffer for broadcast copies of A: n floats, 64-byte aligned, grown when needed and kept.
inline float* broadcast_buffer(size_t n) {
  thread_local std::unique_ptr<float[]> buf;
  thread_local size_t cap = 0;
  if (cap < n + 16) {
    buf.reset(new float[n + 16]);
    cap = n + 16;
  }
  const uintptr_t p = reinterpret_cast<uintptr_t>(buf.get());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}

// C[MR x NV*W] (+)= A B with A given as broadcast vectors: A(r, k) in every lane of ab + (k * MR + r) * W.
template <typename A, Isa L, int MR, int NV>
EF_INLINE void gemm_block_bcast(int64_t K, const A* __restrict__ ab, const A* b, int64_t ldb, A* c, int64_t ldc,
                                bool accumulate) {
  using V = typename cpu::Vec<A, L>::type;
  constexpr int W = cpu::Vec<A, L>::W;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc[r][n] = accumulate ? cpu::vload<V>(c + r * ldc + n * W) : V{};
  for (int64_t k = 0; k < K; ++k) {
    V bv[NV];
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) bv[n] = cpu::vload<V>(b + k * ldb + n * W);
    const V* ak = reinterpret_cast<const V*>(__builtin_assume_aligned(ab + k * MR * W, 16));
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) acc[r][n] = bv[n] * ak[r] + acc[r][n];  // the aligned load folds into the multiply
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) cpu::vstore(c + r * ldc + n * W, acc[r][n]);
}

// Rows [i, i + MR) of C over every panel, A copied as broadcast vectors once for all panels; the causal band as in
// gemm_rows.
template <typename A, Isa L, int MR>
EF_INLINE void gemm_rows_bcast(int64_t i, int64_t N, int64_t K, const A* a, int64_t rs, int64_t cs, const A* b,
                               int64_t ldb, A* c, int64_t ldc, bool accumulate, Causal cz, A* pack) {
  using V = typename cpu::Vec<A, L>::type;
  constexpr int W = cpu::Vec<A, L>::W;
  int64_t k0 = 0, k1 = K;
  if (cz.band == Band::kKLe) k1 = std::min<int64_t>(K, i + MR + cz.diag);
  if (cz.band == Band::kKGe) k0 = std::max<int64_t>(0, i - cz.diag);
  if (k1 <= k0 && accumulate) return;
  if (k1 < k0) k1 = k0;
  const A* ai = a + i * rs;
  for (int64_t k = k0; k < k1; ++k)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const A x = ai[r * rs + k * cs];
      cpu::vstore(pack + ((k - k0) * MR + r) * W, V{x, x, x, x});  // (kBroadcastA: 4 lanes)
    }
  const A* bk = b + k0 * ldb;
  A* ci = c + i * ldc;
  int64_t n = 0;
  for (; n + 2 * W <= N; n += 2 * W) {
    if (cz.band == Band::kColsLe && n > i + MR - 1 + cz.diag) return;  // this panel and the later ones masked
    gemm_block_bcast<A, L, MR, 2>(k1 - k0, pack, bk + n, ldb, ci + n, ldc, accumulate);
  }
  if (n < N && !(cz.band == Band::kColsLe && n > i + MR - 1 + cz.diag))
    gemm_block_bcast<A, L, MR, 1>(k1 - k0, pack, bk + n, ldb, ci + n, ldc, accumulate);
}

template <typename A, Isa L>
EF_INLINE void gemm_bcast(int64_t M, int64_t N, int64_t K, const A* a, int64_t rs, int64_t cs, const A* b,
                          int64_t ldb, A* c, int64_t ldc, bool accumulate, Causal cz) {
  constexpr int W = cpu::Vec<A, L>::W;
  constexpr int MR = Blocking<L>::MR2;  // 2-vector panels: MR x 2 accumulators, 2 B vectors and a product
  A* pack = broadcast_buffer(static_cast<size_t>(MR) * static_cast<size_t>(K) * W);
  int64_t i = 0;
  for (; i + MR <= M; i += MR) gemm_rows_bcast<A, L, MR>(i, N, K, a, rs, cs, b, ldb, c, ldc, accumulate, cz, pack);
  if constexpr (MR > 4) {
    for (; i + 4 <= M; i += 4) gemm_rows_bcast<A, L, 4>(i, N, K, a, rs, cs, b, ldb, c, ldc, accumulate, cz, pack);
  }
  switch (M - i) {
    case 3: gemm_rows_bcast<A, L, 3>(i, N, K, a, rs, cs, b, ldb, c, ldc, accumulate, cz, pack); break;
    case 2: gemm_rows_bcast<A, L, 2>(i, N, K, a, rs, cs, b, ldb, c, ldc, accumulate, cz, pack); break;
    case 1: gemm_rows_bcast<A, L, 1>(i, N, K, a, rs, cs, b, ldb, c, ldc, accumulate, cz, pack); break;
    default: break;
  }
}

// C (M x N) = A B, or C += A B when accumulate; A(i, k) = a[i * rs + k * cs]. N must be a multiple of
// Vec<A, L>::W; B and C are read and written over N columns (callers pad their buffers). With a causal band
// (see Band) only the part the mask leaves is computed; with kColsLe the skipped part of C is not written.
template <typename A, Isa L>
EF_INLINE void gemm(int64_t M, int64_t N, int64_t K, const A* a, int64_t rs, int64_t cs, const A* b, int64_t ldb, A* c,
                    int64_t ldc, bool accumulate, Causal cz = Causal{}) {
  if constexpr (kBroadcastA<A, L>) {
    gemm_bcast<A, L>(M, N, K, a, rs, cs, b, ldb, c, ldc, accumulate, cz);
    return;
  }
  using Bk = Blocking<L>;
  constexpr int W = cpu::Vec<A, L>::W;
  int64_t n = 0;
  if constexpr (Bk::kWide) {
    for (; n + 4 * W <= N; n += 4 * W)
      gemm_panel<A, L, Bk::MR4, 4>(M, K, a, rs, cs, b + n, ldb, c + n, ldc, accumulate, n, cz);
  }
  for (; n + 2 * W <= N; n += 2 * W)
    gemm_panel<A, L, Bk::MR2, 2>(M, K, a, rs, cs, b + n, ldb, c + n, ldc, accumulate, n, cz);
  for (; n < N; n += W) gemm_panel<A, L, Bk::MR1, 1>(M, K, a, rs, cs, b + n, ldb, c + n, ldc, accumulate, n, cz);
}

// out[i * ldo + j] = x_i . y_j for i < m, j < n: rows of x (ld ldx) against rows of y (ld ldy), Dp wide (a
// multiple of W, zero-padded past D). The product of few queries with many keys (decode), where transposing the
// keys for gemm would cost more than the products.
template <typename A, Isa L>
EF_INLINE void row_dots(int64_t m, int64_t n, int64_t Dp, const A* x, int64_t ldx, const A* y, int64_t ldy, A* out,
                        int64_t ldo) {
  using V = typename cpu::Vec<A, L>::type;
  constexpr int W = cpu::Vec<A, L>::W;
  for (int64_t i = 0; i < m; ++i) {
    const A* xi = x + i * ldx;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {  // four rows of y at a time: four independent chains
      V a0{}, a1{}, a2{}, a3{};
      const A* y0 = y + j * ldy;
      for (int64_t d = 0; d < Dp; d += W) {
        const V xv = cpu::vload<V>(xi + d);
        a0 = xv * cpu::vload<V>(y0 + d) + a0;
        a1 = xv * cpu::vload<V>(y0 + ldy + d) + a1;
        a2 = xv * cpu::vload<V>(y0 + 2 * ldy + d) + a2;
        a3 = xv * cpu::vload<V>(y0 + 3 * ldy + d) + a3;
      }
      out[i * ldo + j] = cpu::hsum<A>(a0);
      out[i * ldo + j + 1] = cpu::hsum<A>(a1);
      out[i * ldo + j + 2] = cpu::hsum<A>(a2);
      out[i * ldo + j + 3] = cpu::hsum<A>(a3);
    }
    for (; j < n; ++j) {
      V acc{};
      for (int64_t d = 0; d < Dp; d += W) acc = cpu::vload<V>(xi + d) * cpu::vload<V>(y + j * ldy + d) + acc;
      out[i * ldo + j] = cpu::hsum<A>(acc);
    }
  }
}

// Clamped relative offset: clamp(o, -(P-1), P-1).
EF_INLINE int64_t clamp_offset(int64_t o, int64_t P) { return o < -(P - 1) ? -(P - 1) : (o > P - 1 ? P - 1 : o); }

// For a row at position pos and keys j0 .. j0+n-1, the key counts [0, lo) clamp to offset -(P-1), [hi, n) clamp
// to P-1, and [lo, hi) are unclamped (offset j0 + jj - pos).
EF_INLINE void clamp_segments(int64_t pos, int64_t j0, int64_t n, int64_t P, int64_t* lo, int64_t* hi) {
  int64_t l = pos - (P - 1) - j0, h = pos + P - j0;
  l = l < 0 ? 0 : (l > n ? n : l);
  h = h < l ? l : (h > n ? n : h);
  *lo = l;
  *hi = h;
}

}  // namespace attention
}  // namespace enigma_fast
