// Unit tests of the torch-free attention tile helpers at every instruction-set level this CPU runs: the small
// GEMM (A read as a matrix and as a transpose), the row dot products and the vectorised exp, against
// straightforward double-precision evaluations; and the clamped relative-offset segments.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "attention/attention_tile.h"
#include "check.h"

using namespace enigma_fast;
using namespace enigma_fast::attention;

namespace {

// Entry points per level (the kernels are always_inline: they compile for the level of the function they are in).
template <Isa L, typename A>
EF_INLINE void gemm_at(int64_t M, int64_t N, int64_t K, const A* a, int64_t rs, int64_t cs, const A* b, int64_t ldb,
                       A* c, int64_t ldc, bool acc) {
  gemm<A, L>(M, N, K, a, rs, cs, b, ldb, c, ldc, acc);
}
template <Isa L>
EF_INLINE void band_at(int64_t M, int64_t N, int64_t K, const float* a, int64_t rs, int64_t cs, const float* b,
                       int64_t ldb, float* c, int64_t ldc, bool acc, int band, int64_t diag) {
  gemm<float, L>(M, N, K, a, rs, cs, b, ldb, c, ldc, acc, Causal{static_cast<Band>(band), diag});
}
template <Isa L>
EF_INLINE void dots_at(int64_t m, int64_t n, int64_t Dp, const float* x, int64_t ldx, const float* y, int64_t ldy,
                       float* out, int64_t ldo) {
  row_dots<float, L>(m, n, Dp, x, ldx, y, ldy, out, ldo);
}
template <Isa L>
EF_INLINE void exp_at(const float* x, float* y, int64_t n) {
  using V = cpu::Vec<float, L>::type;
  constexpr int W = cpu::Vec<float, L>::W;
  for (int64_t i = 0; i < n; i += W) cpu::vstore(y + i, cpu::vexp(cpu::vload<V>(x + i)));
}
EF_DEFINE_ISA_ENTRIES(void, gemm_f32,
                      (int64_t M, int64_t N, int64_t K, const float* a, int64_t rs, int64_t cs, const float* b,
                       int64_t ldb, float* c, int64_t ldc, bool acc),
                      (M, N, K, a, rs, cs, b, ldb, c, ldc, acc), gemm_at)
EF_DEFINE_ISA_ENTRIES(void, gemm_f64,
                      (int64_t M, int64_t N, int64_t K, const double* a, int64_t rs, int64_t cs, const double* b,
                       int64_t ldb, double* c, int64_t ldc, bool acc),
                      (M, N, K, a, rs, cs, b, ldb, c, ldc, acc), gemm_at)
EF_DEFINE_ISA_ENTRIES(void, band_f32,
                      (int64_t M, int64_t N, int64_t K, const float* a, int64_t rs, int64_t cs, const float* b,
                       int64_t ldb, float* c, int64_t ldc, bool acc, int band, int64_t diag),
                      (M, N, K, a, rs, cs, b, ldb, c, ldc, acc, band, diag), band_at)
EF_DEFINE_ISA_ENTRIES(void, dots_f32,
                      (int64_t m, int64_t n, int64_t Dp, const float* x, int64_t ldx, const float* y, int64_t ldy,
                       float* out, int64_t ldo),
                      (m, n, Dp, x, ldx, y, ldy, out, ldo), dots_at)
EF_DEFINE_ISA_ENTRIES(void, exp_f32, (const float* x, float* y, int64_t n), (x, y, n), exp_at)

void gemm_any(int64_t M, int64_t N, int64_t K, const float* a, int64_t rs, int64_t cs, const float* b, int64_t ldb,
              float* c, int64_t ldc, bool acc) {
  gemm_f32(M, N, K, a, rs, cs, b, ldb, c, ldc, acc);
}
void gemm_any(int64_t M, int64_t N, int64_t K, const double* a, int64_t rs, int64_t cs, const double* b, int64_t ldb,
              double* c, int64_t ldc, bool acc) {
  gemm_f64(M, N, K, a, rs, cs, b, ldb, c, ldc, acc);
}

// C (+)= A B with A stored row-major (lda) or as its transpose (A(i, k) at k * lda + i).
template <typename A>
void test_gemm(int64_t M, int64_t N, int64_t K, bool accumulate, bool transposed_a) {
  std::mt19937 rng(static_cast<unsigned>(M * 1000 + N * 10 + K + transposed_a));
  std::uniform_real_distribution<double> d(-1.0, 1.0);
  const int64_t lda = (transposed_a ? M : K) + 3, ldb = N + 5, ldc = N + 7;  // padded leading dimensions
  std::vector<A> a((transposed_a ? K : M) * lda), b(K * ldb), c(M * ldc);
  for (auto& e : a) e = static_cast<A>(d(rng));
  for (auto& e : b) e = static_cast<A>(d(rng));
  for (auto& e : c) e = static_cast<A>(d(rng));
  const std::vector<A> c0 = c;
  const int64_t rs = transposed_a ? 1 : lda, cs = transposed_a ? lda : 1;
  gemm_any(M, N, K, a.data(), rs, cs, b.data(), ldb, c.data(), ldc, accumulate);
  const double tol = std::is_same_v<A, float> ? 1e-4 : 1e-12;
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double want = accumulate ? static_cast<double>(c0[i * ldc + j]) : 0.0;
      for (int64_t k = 0; k < K; ++k) want += static_cast<double>(a[i * rs + k * cs]) * b[k * ldb + j];
      EF_EXPECT_NEAR(c[i * ldc + j], want, tol * (1 + std::fabs(want)));
    }
    for (int64_t j = N; j < ldc; ++j) EF_EXPECT(c[i * ldc + j] == c0[i * ldc + j]);  // padding untouched
  }
}

// The causal bands: with A zero where the mask leaves nothing (kKLe: k > i + diag; kKGe: k < i - diag), the banded
// product equals the full one; with kColsLe the columns n <= i + diag equal the full product's.
void test_band(int band, int64_t M, int64_t N, int64_t K, int64_t diag, bool accumulate) {
  std::mt19937 rng(static_cast<unsigned>(band * 7919 + M * 101 + N * 13 + K + diag * 3 + 50));
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  const int64_t lda = K + 1, ldb = N + 3, ldc = N + 5;
  std::vector<float> a(M * lda), b(K * ldb), c(M * ldc), full(M * ldc);
  for (auto& e : b) e = d(rng);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k) {
      const bool zero = (band == 2 && k > i + diag) || (band == 3 && k < i - diag);
      a[i * lda + k] = zero ? 0.0f : d(rng);
    }
  for (int64_t i = 0; i < M * ldc; ++i) c[i] = full[i] = d(rng);
  gemm_f32(M, N, K, a.data(), lda, 1, b.data(), ldb, full.data(), ldc, accumulate);
  band_f32(M, N, K, a.data(), lda, 1, b.data(), ldb, c.data(), ldc, accumulate, band, diag);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t n = 0; n < N; ++n) {
      if (band == 1 && n > i + diag) continue;  // not computed
      EF_EXPECT_NEAR(c[i * ldc + n], full[i * ldc + n], 1e-4 * (1 + std::fabs(full[i * ldc + n])));
    }
}

void test_row_dots(int64_t m, int64_t n, int64_t Dp) {
  std::mt19937 rng(static_cast<unsigned>(m * 100 + n));
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  const int64_t ldx = Dp + 16, ldy = Dp + 32, ldo = n + 3;
  std::vector<float> x(m * ldx), y(n * ldy), out(m * ldo, -7.0f);
  for (auto& e : x) e = d(rng);
  for (auto& e : y) e = d(rng);
  dots_f32(m, n, Dp, x.data(), ldx, y.data(), ldy, out.data(), ldo);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double want = 0;
      for (int64_t t = 0; t < Dp; ++t) want += double(x[i * ldx + t]) * y[j * ldy + t];
      EF_EXPECT_NEAR(out[i * ldo + j], want, 1e-5 * (1 + std::fabs(want)));
    }
    for (int64_t j = n; j < ldo; ++j) EF_EXPECT(out[i * ldo + j] == -7.0f);
  }
}

void test_vexp() {
  const float xs[16] = {0.0f, -1e-7f, -0.5f, -1.0f, -3.3f, -10.0f, -20.0f, -50.0f,
                        -86.0f, -87.5f, -100.0f, -std::numeric_limits<float>::infinity(), 1.0f, 5.5f, 30.0f, 80.0f};
  float y[16];
  exp_f32(xs, y, 16);
  for (int i = 0; i < 16; ++i) {
    if (xs[i] < -87.0f) {
      EF_EXPECT(y[i] == 0.0f);  // underflow and masked scores give exactly zero
    } else {
      const double want = std::exp(static_cast<double>(xs[i]));
      EF_EXPECT_NEAR(y[i] / want, 1.0, 5e-7);
    }
  }
}

void test_clamp_segments() {
  // Brute force over positions, tile starts and P: [0, lo) clamps low, [hi, n) clamps high, the rest is exact.
  for (int64_t P = 1; P <= 6; ++P)
    for (int64_t pos = 0; pos < 20; ++pos)
      for (int64_t j0 = 0; j0 < 24; j0 += 3) {
        const int64_t n = 7;
        int64_t lo, hi;
        clamp_segments(pos, j0, n, P, &lo, &hi);
        EF_EXPECT(0 <= lo && lo <= hi && hi <= n);
        for (int64_t jj = 0; jj < n; ++jj) {
          const int64_t o = j0 + jj - pos;
          const int64_t c = clamp_offset(o, P);
          EF_EXPECT(c == (o < -(P - 1) ? -(P - 1) : (o > P - 1 ? P - 1 : o)));
          if (jj < lo) EF_EXPECT(o < -(P - 1));
          if (jj >= hi) EF_EXPECT(o > P - 1);
          if (jj >= lo && jj < hi) EF_EXPECT(c == o);
        }
      }
}

}  // namespace

EF_TEST_MAIN({
  // Every level this CPU runs, the baseline included.
  for (int level = 0; level <= static_cast<int>(cpu::best_isa()); ++level) {
    const Isa l = cpu::set_isa_cap(static_cast<Isa>(level));
    EF_EXPECT(static_cast<int>(l) == level);
    std::printf("level %s\n", cpu::isa_name(l));
    for (bool acc : {false, true})
      for (bool tr : {false, true}) {
        for (int64_t M : {1, 3, 8, 13, 64})
          for (int64_t N : {16, 32, 48, 80, 128}) {
            test_gemm<float>(M, N, 32, acc, tr);
            test_gemm<float>(M, N, 7, acc, tr);
          }
        for (int64_t M : {1, 9, 17})
          for (int64_t N : {16, 48}) test_gemm<double>(M, N, 5, acc, tr);
      }
    for (int64_t m : {1, 3})
      for (int64_t n : {1, 4, 7, 130}) test_row_dots(m, n, 32), test_row_dots(m, n, 80);
    test_vexp();
    for (int band = 1; band <= 3; ++band)
      for (int64_t diag : {-70, -5, 0, 3, 64, 200})
        for (bool acc : {false, true}) {
          test_band(band, 64, 128, 32, diag, acc);
          test_band(band, 13, 48, 64, diag, acc);
          test_band(band, 128, 32, 64, diag, acc);
        }
  }
  test_clamp_segments();
})
