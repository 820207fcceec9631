// Unit tests of the torch-free attention tile helpers: the small GEMM, the vectorised exp and the clamped
// relative-offset segments, against straightforward double-precision evaluations.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "attention/attention_tile.h"
#include "check.h"

using namespace enigma_fast::attention;

namespace {

template <typename A>
void test_gemm(int64_t M, int64_t N, int64_t K, bool accumulate) {
  std::mt19937 rng(static_cast<unsigned>(M * 1000 + N * 10 + K));
  std::uniform_real_distribution<double> d(-1.0, 1.0);
  const int64_t lda = K + 3, ldb = N + 5, ldc = N + 7;  // padded leading dimensions
  std::vector<A> a(M * lda), b(K * ldb), c(M * ldc);
  for (auto& e : a) e = static_cast<A>(d(rng));
  for (auto& e : b) e = static_cast<A>(d(rng));
  for (auto& e : c) e = static_cast<A>(d(rng));
  const std::vector<A> c0 = c;
  gemm<A>(M, N, K, a.data(), lda, b.data(), ldb, c.data(), ldc, accumulate);
  const double tol = std::is_same_v<A, float> ? 1e-4 : 1e-12;
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double want = accumulate ? static_cast<double>(c0[i * ldc + j]) : 0.0;
      for (int64_t k = 0; k < K; ++k) want += static_cast<double>(a[i * lda + k]) * b[k * ldb + j];
      EF_EXPECT_NEAR(c[i * ldc + j], want, tol * (1 + std::fabs(want)));
    }
    for (int64_t j = N; j < ldc; ++j) EF_EXPECT(c[i * ldc + j] == c0[i * ldc + j]);  // padding untouched
  }
}

void test_vexp() {
  using V = VecT<float>::type;
  const float xs[16] = {0.0f, -1e-7f, -0.5f, -1.0f, -3.3f, -10.0f, -20.0f, -50.0f,
                        -86.0f, -87.5f, -100.0f, -std::numeric_limits<float>::infinity(), 1.0f, 5.5f, 30.0f, 80.0f};
  V x;
  for (int i = 0; i < 16; ++i) x[i] = xs[i];
  vexp(x);
  for (int i = 0; i < 16; ++i) {
    if (xs[i] < -87.0f) {
      EF_EXPECT(x[i] == 0.0f);  // underflow and masked scores give exactly zero
    } else {
      const double want = std::exp(static_cast<double>(xs[i]));
      EF_EXPECT_NEAR(x[i] / want, 1.0, 5e-7);
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
  for (bool acc : {false, true}) {
    for (int64_t M : {1, 3, 8, 13, 64})
      for (int64_t N : {16, 32, 48, 80, 128}) {
        test_gemm<float>(M, N, 32, acc);
        test_gemm<float>(M, N, 7, acc);
      }
    for (int64_t M : {1, 9})
      for (int64_t N : {8, 24, 40}) test_gemm<double>(M, N, 5, acc);
  }
  test_vexp();
  test_clamp_segments();
})
