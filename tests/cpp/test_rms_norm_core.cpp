// Unit tests of the torch-free RMSNorm row kernels, at every instruction-set level this CPU runs, against a
// straightforward double-precision evaluation.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "check.h"
#include "rms_norm/rms_norm_core.h"

using namespace enigma_fast;
using cpu::Isa;

namespace {

// Entry points per level (the row kernels are always_inline: they compile for the level of their caller).
template <Isa L, typename T>
EF_INLINE float fwd_at(const T* x, const T* res, const T* w, T* y, T* h, int64_t n, float eps) {
  return rms_norm::fwd_row<L, T>(x, res, w, y, h, n, eps);
}
template <Isa L>
EF_INLINE void bwd_at(const float* dy, const float* h, const float* w, const float* dh, float r, float* dx, float* dw,
                      int64_t n) {
  rms_norm::bwd_row<L, float>(dy, h, w, dh, r, dx, dw, n);
}
EF_DEFINE_ISA_ENTRIES(float, fwd_f32,
                      (const float* x, const float* res, const float* w, float* y, float* h, int64_t n, float eps),
                      (x, res, w, y, h, n, eps), fwd_at)
EF_DEFINE_ISA_ENTRIES(float, fwd_bf16,
                      (const bf16_t* x, const bf16_t* res, const bf16_t* w, bf16_t* y, bf16_t* h, int64_t n,
                       float eps),
                      (x, res, w, y, h, n, eps), fwd_at)
EF_DEFINE_ISA_ENTRIES(void, bwd_f32,
                      (const float* dy, const float* h, const float* w, const float* dh, float r, float* dx,
                       float* dw, int64_t n),
                      (dy, h, w, dh, r, dx, dw, n), bwd_at)

std::vector<double> random_vec(std::mt19937& rng, int64_t n, double lo = -2.0, double hi = 2.0) {
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<double> v(static_cast<size_t>(n));
  for (auto& e : v) e = d(rng);
  return v;
}

void test_bf16_conversion() {
  // Exactly representable values round-trip; ties round to even; NaN stays NaN; infinities stay.
  for (float f : {0.0f, 1.0f, -2.5f, 65280.0f, 1.0f / 1024}) EF_EXPECT(bf16_to_float(float_to_bf16(f)) == f);
  const float tie_down = 1.0f + 1.0f / 256;  // halfway between 1 and 1 + 2^-7: rounds to the even one, 1
  EF_EXPECT(bf16_to_float(float_to_bf16(tie_down)) == 1.0f);
  const float tie_up = 1.0f + 3.0f / 256;  // halfway between 1 + 2^-7 and 1 + 2^-6: rounds up to 1 + 2^-6
  EF_EXPECT(bf16_to_float(float_to_bf16(tie_up)) == 1.0f + 1.0f / 64);
  EF_EXPECT(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
  EF_EXPECT(std::isinf(bf16_to_float(float_to_bf16(INFINITY))));
}

void test_forward_backward(int64_t n, bool with_weight, bool with_residual) {
  std::mt19937 rng(static_cast<unsigned>(n * 7 + with_weight * 3 + with_residual));
  const auto x = random_vec(rng, n), res = random_vec(rng, n), w = random_vec(rng, n, 0.5, 1.5);
  const auto dy = random_vec(rng, n), dh = random_vec(rng, n);
  const double eps = 1e-5;

  // Double-precision oracle.
  std::vector<double> h(n);
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) {
    h[i] = x[i] + (with_residual ? res[i] : 0.0);
    ss += h[i] * h[i];
  }
  const double r = 1.0 / std::sqrt(ss / n + eps);
  double gh = 0;
  for (int64_t i = 0; i < n; ++i) gh += dy[i] * (with_weight ? w[i] : 1.0) * h[i];

  // Float kernel.
  std::vector<float> xf(x.begin(), x.end()), rf(res.begin(), res.end()), wf(w.begin(), w.end());
  std::vector<float> dyf(dy.begin(), dy.end()), dhf(dh.begin(), dh.end());
  std::vector<float> y(n), hout(n), dx(n), dw(n, 0.0f);
  const float rk = fwd_f32(xf.data(), with_residual ? rf.data() : nullptr, with_weight ? wf.data() : nullptr, y.data(),
                           with_residual ? hout.data() : nullptr, n, static_cast<float>(eps));
  EF_EXPECT_NEAR(rk, r, 1e-5 * r);
  const float* hk = with_residual ? hout.data() : xf.data();
  bwd_f32(dyf.data(), hk, with_weight ? wf.data() : nullptr, with_residual ? dhf.data() : nullptr, rk, dx.data(),
          dw.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const double wi = with_weight ? w[i] : 1.0;
    EF_EXPECT_NEAR(y[i], h[i] * r * wi, 1e-5);
    if (with_residual) EF_EXPECT_NEAR(hout[i], h[i], 1e-6);
    const double dxi = r * (dy[i] * wi - h[i] * r * r * gh / n) + (with_residual ? dh[i] : 0.0);
    EF_EXPECT_NEAR(dx[i], dxi, 1e-4);
    EF_EXPECT_NEAR(dw[i], dy[i] * h[i] * r, 1e-5);
  }

  // bfloat16 storage: within bfloat16 rounding of the oracle.
  std::vector<bf16_t> xb(n), wb(n), yb(n);
  for (int64_t i = 0; i < n; ++i) {
    xb[i] = float_to_bf16(static_cast<float>(x[i]));
    wb[i] = float_to_bf16(static_cast<float>(w[i]));
  }
  fwd_bf16(xb.data(), nullptr, wb.data(), yb.data(), nullptr, n, static_cast<float>(eps));
  double ssb = 0;
  for (int64_t i = 0; i < n; ++i) ssb += double(bf16_to_float(xb[i])) * bf16_to_float(xb[i]);
  const double rb = 1.0 / std::sqrt(ssb / n + eps);
  for (int64_t i = 0; i < n; ++i) {
    const double expect = double(bf16_to_float(xb[i])) * rb * bf16_to_float(wb[i]);
    EF_EXPECT_NEAR(bf16_to_float(yb[i]), expect, 1e-2 * std::fabs(expect) + 1e-6);
  }
}

}  // namespace

EF_TEST_MAIN({
  test_bf16_conversion();
  for (int level = 0; level <= static_cast<int>(cpu::best_isa()); ++level) {
    std::printf("level %s\n", cpu::isa_name(cpu::set_isa_cap(static_cast<Isa>(level))));
    for (int64_t n : {1, 7, 15, 16, 17, 129, 1024, 4099})
      for (bool w : {false, true})
        for (bool res : {false, true}) test_forward_backward(n, w, res);
  }
})
