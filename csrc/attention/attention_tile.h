// Torch-free building blocks of the CPU attention kernels: a register-blocked small GEMM and a vectorised exp
// over 64-byte GCC vectors (16 floats / 8 doubles), plus the clamped relative-offset arithmetic.
//
// Every matrix here is row-major with an explicit leading dimension. gemm computes C (M x N) (+)= A (M x K) B (K x N)
// with N a multiple of the vector width: rows of B are loaded as vectors and each A element is broadcast, so C is
// built in registers (up to 16 accumulators) and written once. The callers compile these once per x86 ISA level
// (target_clones in attention_cpu.cpp): AVX-512 gets one zmm per vector, AVX2 two ymm, plain x86-64 four xmm.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__GNUC__)
#define EF_ATTN_INLINE inline __attribute__((always_inline))
#else
#define EF_ATTN_INLINE inline
#endif

namespace enigma_fast {
namespace attention {

template <typename A>
struct VecT;
template <>
struct VecT<float> {
  typedef float type __attribute__((vector_size(64)));
  typedef int32_t itype __attribute__((vector_size(64)));
  static constexpr int W = 16;
};
template <>
struct VecT<double> {
  typedef double type __attribute__((vector_size(64)));
  typedef int64_t itype __attribute__((vector_size(64)));
  static constexpr int W = 8;
};

template <typename A>
EF_ATTN_INLINE void vload(typename VecT<A>::type& v, const A* p) {
  std::memcpy(&v, p, sizeof(v));
}

template <typename A>
EF_ATTN_INLINE void vstore(A* p, const typename VecT<A>::type& v) {
  std::memcpy(p, &v, sizeof(v));
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// C[MR x NV*W] (+)= A[MR x K] B[K x NV*W], all in registers.
template <typename A, int MR, int NV>
EF_ATTN_INLINE void gemm_block(int64_t K, const A* a, int64_t lda, const A* b, int64_t ldb, A* c, int64_t ldc,
                               bool accumulate) {
  using V = typename VecT<A>::type;
  constexpr int W = VecT<A>::W;
  V acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      acc[r][n] = V{};
      if (accumulate) vload(acc[r][n], c + r * ldc + n * W);
    }
  for (int64_t k = 0; k < K; ++k) {
    V bv[NV];
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) vload(bv[n], b + k * ldb + n * W);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const A av = a[r * lda + k];
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) acc[r][n] += av * bv[n];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) vstore(c + r * ldc + n * W, acc[r][n]);
}

template <typename A, int MR, int NV>
EF_ATTN_INLINE void gemm_panel(int64_t M, int64_t K, const A* a, int64_t lda, const A* b, int64_t ldb, A* c,
                               int64_t ldc, bool accumulate) {
  int64_t i = 0;
  for (; i + MR <= M; i += MR) gemm_block<A, MR, NV>(K, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate);
  for (; i < M; ++i) gemm_block<A, 1, NV>(K, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate);
}

// C (M x N) = A (M x K) B (K x N), or += when accumulate. N must be a multiple of VecT<A>::W; B and C are read
// and written over N columns (callers pad their buffers).
template <typename A>
EF_ATTN_INLINE void gemm(int64_t M, int64_t N, int64_t K, const A* a, int64_t lda, const A* b, int64_t ldb, A* c,
                         int64_t ldc, bool accumulate) {
  constexpr int W = VecT<A>::W;
  int64_t n = 0;
  for (; n + 4 * W <= N; n += 4 * W) gemm_panel<A, 4, 4>(M, K, a, lda, b + n, ldb, c + n, ldc, accumulate);
  if (n + 2 * W <= N) {
    gemm_panel<A, 8, 2>(M, K, a, lda, b + n, ldb, c + n, ldc, accumulate);
    n += 2 * W;
  }
  for (; n < N; n += W) gemm_panel<A, 8, 1>(M, K, a, lda, b + n, ldb, c + n, ldc, accumulate);
}

// exp(x) for a vector, x <= ~88; returns exactly 0 below -87 (and for -inf). Cephes-style: x = n ln2 + r with
// |r| <= ln2/2, a degree-6 polynomial for e^r, 2^n from the exponent bits. Relative error ~2 ulp.
// In place, taking a reference: passing 64-byte vectors by value would depend on the ISA's calling convention.
EF_ATTN_INLINE void vexp(VecT<float>::type& x) {
  using V = VecT<float>::type;
  using I = VecT<float>::itype;
  const V lo = V{} - 87.0f, hi = V{} + 88.0f;
  V xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const V t = xc * 1.44269504088896341f;
  const V n = (t + 12582912.0f) - 12582912.0f;  // round to nearest
  V r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const I e = (__builtin_convertvector(n, I) + 127) << 23;
  V scale;
  std::memcpy(&scale, &e, sizeof(scale));
  const V res = p * scale;
  x = x < lo ? V{} : res;
}

// Clamped relative offset: clamp(o, -(P-1), P-1).
EF_ATTN_INLINE int64_t clamp_offset(int64_t o, int64_t P) {
  return o < -(P - 1) ? -(P - 1) : (o > P - 1 ? P - 1 : o);
}

// For a row at position pos and keys j0 .. j0+n-1, the key counts [0, lo) clamp to offset -(P-1), [hi, n) clamp
// to P-1, and [lo, hi) are unclamped (offset j0 + jj - pos).
EF_ATTN_INLINE void clamp_segments(int64_t pos, int64_t j0, int64_t n, int64_t P, int64_t* lo, int64_t* hi) {
  int64_t l = pos - (P - 1) - j0, h = pos + P - j0;
  l = l < 0 ? 0 : (l > n ? n : l);
  h = h < l ? l : (h > n ? n : h);
  *lo = l;
  *hi = h;
}

}  // namespace attention
}  // namespace enigma_fast
