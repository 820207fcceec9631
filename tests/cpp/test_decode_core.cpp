// Unit tests of the torch-free whole-step decode core: the packed layout, and the CPU kernels (panel linear layer
// with bias and GELU, RMSNorm rows, one self-attention task with the cache write and the relative term) at every
// instruction-set level this CPU runs, against straightforward double-precision evaluations.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <tuple>
#include <vector>

#include "check.h"
#include "decode/core/decode_kernels.h"

using namespace enigma_fast;
using namespace enigma_fast::decode;
using cpu::Isa;

namespace {

template <Isa L>
EF_INLINE void linear_at(const float* packed, const Linear& lin, int64_t nb, const float* x, int64_t ldx, int64_t M,
                         float* y, int64_t ldy, bool gelu) {
  linear_panels<L>(packed, lin, nb, x, ldx, M, y, ldy, 0, lin.panels(nb), gelu);
}
EF_DEFINE_ISA_ENTRIES(void, linear_f32,
                      (const float* packed, const Linear& lin, int64_t nb, const float* x, int64_t ldx, int64_t M,
                       float* y, int64_t ldy, bool gelu),
                      (packed, lin, nb, x, ldx, M, y, ldy, gelu), linear_at)

template <Isa L>
EF_INLINE void gelu_at(const float* x, float* y, int64_t n) {
  using V = VecT<float, L>;
  constexpr int W = cpu::Vec<float, L>::W;
  for (int64_t i = 0; i < n; i += W) cpu::vstore(y + i, vgelu(cpu::vload<V>(x + i)));
}
EF_DEFINE_ISA_ENTRIES(void, gelu_f32, (const float* x, float* y, int64_t n), (x, y, n), gelu_at)

template <Isa L>
EF_INLINE void norm_at(float* h, const float* f, int64_t ld, const float* w, float* y, int64_t M, int64_t d,
                       float eps) {
  norm_rows<L>(h, f, ld, w, y, M, d, eps);
}
EF_DEFINE_ISA_ENTRIES(void, norm_f32,
                      (float* h, const float* f, int64_t ld, const float* w, float* y, int64_t M, int64_t d,
                       float eps),
                      (h, f, ld, w, y, M, d, eps), norm_at)

template <Isa L>
EF_INLINE void attn_at(const Step<double>& s, int64_t l, int64_t b, int64_t h) {
  self_attention<L>(s, l, b, h);
}
EF_DEFINE_ISA_ENTRIES(void, attn_f64, (const Step<double>& s, int64_t l, int64_t b, int64_t h), (s, l, b, h), attn_at)

std::vector<float> random_vec(std::mt19937& rng, int64_t n, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(d(rng));
  return v;
}

void test_layout() {
  Geometry g;
  const int64_t geo[kGeometrySize] = {1, 3, 96, 4, 480, 37, 9, 5, 1, 50};
  EF_EXPECT(parse_geometry(geo, kGeometrySize, &g).empty());
  EF_EXPECT(g.D == 24 && g.enigma());
  const int64_t bad[kGeometrySize] = {0, 3, 96, 5, 480, 37, 9, 0, 1, 0};  // 96 % 5 != 0
  EF_EXPECT(!parse_geometry(bad, kGeometrySize, &g).empty());
  EF_EXPECT(parse_geometry(geo, kGeometrySize, &g).empty());
  for (int64_t nb : {int64_t(1), int64_t(64)}) {
    const Layout lay = make_layout(g, nb);
    // every block aligned, layers evenly spaced, nothing overlapping the end
    const LayerLayout l0 = lay.layer(0), l2 = lay.layer(2);
    EF_EXPECT(l2.qkv.w - l0.qkv.w == 2 * lay.layer_size);
    EF_EXPECT(l2.cross_bias - l0.cross_bias == 2 * lay.layer_size);
    EF_EXPECT(l0.qkv.w % kAlign == 0 && l0.proj.b % kAlign == 0 && lay.head.w % kAlign == 0);
    EF_EXPECT(l0.qkv.Np == align_up(3 * g.d, nb) && l0.fc.K == g.d && l0.proj.K == g.F);
    const LayerLayout last = lay.layer(g.L - 1);
    EF_EXPECT(last.proj.b + last.proj.Np <= lay.total);
    EF_EXPECT(lay.head.Np == align_up(g.V, nb));
  }
}

// Packs W (N x K, row-major) into panels of nb columns as decode.cpp does.
void pack_linear(const std::vector<float>& W, const std::vector<float>& b, const Linear& lin, int64_t nb,
                 std::vector<float>& out) {
  for (int64_t n = 0; n < lin.N; ++n)
    for (int64_t k = 0; k < lin.K; ++k) out[lin.w + (n / nb) * lin.K * nb + k * nb + n % nb] = W[n * lin.K + k];
  if (lin.b >= 0)
    for (int64_t n = 0; n < lin.N; ++n) out[lin.b + n] = b[n];
}

void test_linear() {
  std::mt19937 rng(1);
  const int64_t nb = 64;
  // M = 1 .. 7: every row count of the few-row product (gemv_panel) and the first beyond it; 16: the tile GEMM
  for (int64_t M : {1, 2, 3, 4, 5, 6, 7, 16})
    for (auto [N, K] : {std::pair<int64_t, int64_t>{37, 19}, {128, 64}, {200, 130}})
      for (bool gelu : {false, true}) {
        Linear lin;
        lin.N = N, lin.K = K, lin.Np = align_up(N, nb), lin.w = 0, lin.b = lin.Np * K;
        std::vector<float> packed(lin.b + lin.Np, 0.0f);
        const auto W = random_vec(rng, N * K, 0.3), bias = random_vec(rng, N), x = random_vec(rng, M * K);
        pack_linear(W, bias, lin, nb, packed);
        const int64_t ldy = lin.Np + 16;
        for (int li = 0; li <= static_cast<int>(cpu::best_isa()); ++li) {
          cpu::set_isa_cap(static_cast<Isa>(li));
          std::vector<float> y(M * ldy, NAN);
          linear_f32(packed.data(), lin, nb, x.data(), K, M, y.data(), ldy, gelu);
          for (int64_t r = 0; r < M; ++r)
            for (int64_t n = 0; n < lin.Np; ++n) {
              double ref = 0;
              if (n < N) {
                ref = bias[n];
                for (int64_t k = 0; k < K; ++k) ref += double(x[r * K + k]) * W[n * K + k];
                if (gelu) ref = 0.5 * ref * (1 + std::erf(ref / std::sqrt(2.0)));
              }
              EF_EXPECT_NEAR(y[r * ldy + n], ref, 1e-5 * (1 + std::fabs(ref)));
            }
        }
        cpu::reset_isa_cap();
      }
}

void test_gelu() {
  // relative error of the float GELU against double erf, over [-12, 12] (the far negative tail included)
  std::vector<float> x;
  for (int i = -24000; i < 24000; ++i) x.push_back(static_cast<float>(i) * 0.0005f);
  std::vector<float> y(x.size());
  for (int li = 0; li <= static_cast<int>(cpu::best_isa()); ++li) {
    cpu::set_isa_cap(static_cast<Isa>(li));
    gelu_f32(x.data(), y.data(), static_cast<int64_t>(x.size()));
    double worst = 0, at = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double xd = x[i], ref = 0.5 * xd * std::erfc(-xd / std::sqrt(2.0));
      if (std::fabs(ref) < 1e-30) continue;  // near float's subnormal range
      const double err = std::fabs(y[i] - ref) / std::fabs(ref);
      if (err > worst) worst = err, at = xd;
    }
    EF_EXPECT(worst < 5e-7);
    if (worst >= 5e-7) std::fprintf(stderr, "gelu level %d: worst relative error %g at x = %g\n", li, worst, at);
  }
  cpu::reset_isa_cap();
}

void test_norm() {
  std::mt19937 rng(2);
  const int64_t M = 3, d = 37, ld = 48;
  const auto h0 = random_vec(rng, M * ld, 2.0), f = random_vec(rng, M * ld), w = random_vec(rng, d);
  for (int li = 0; li <= static_cast<int>(cpu::best_isa()); ++li) {
    cpu::set_isa_cap(static_cast<Isa>(li));
    std::vector<float> h = h0, y(M * ld, NAN);
    norm_f32(h.data(), f.data(), ld, w.data(), y.data(), M, d, 1e-6f);
    for (int64_t r = 0; r < M; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) {
        const double hv = double(h0[r * ld + i]) + f[r * ld + i];
        EF_EXPECT_NEAR(h[r * ld + i], hv, 1e-6 * (1 + std::fabs(hv)));
        ss += hv * hv;
      }
      const double rstd = 1 / std::sqrt(ss / d + 1e-6);
      for (int64_t i = 0; i < d; ++i) {
        const double ref = (double(h0[r * ld + i]) + f[r * ld + i]) * rstd * w[i];
        EF_EXPECT_NEAR(y[r * ld + i], ref, 2e-6 * (1 + std::fabs(ref)));
      }
    }
  }
  cpu::reset_isa_cap();
}

// One self-attention task in double against the direct formula, for a relative window shorter and longer than
// the row, with and without left padding.
void test_self_attention() {
  std::mt19937 rng(3);
  // head dims 10 (below a vector at most levels: the scalar tail) and 72 (9 double vectors at AVX-512: a block of 8
  // register accumulators and one of 1; 18 at AVX2, 36 at SSE2)
  for (auto [P, ks0, dm] : {std::tuple<int64_t, int64_t, int64_t>{4, 0, 30}, {4, 3, 30}, {64, 2, 30}, {1, 0, 30},
                            {4, 3, 216}, {64, 0, 216}}) {
    Geometry g;
    const int64_t geo[kGeometrySize] = {0, 2, dm, 3, 2 * dm, 11, P, 0, 1, 0};
    EF_EXPECT(parse_geometry(geo, kGeometrySize, &g).empty());
    const int64_t B = 2, Tmax = 23, D = g.D, H = g.H;
    Step<double> s;
    s.g = g;
    s.lay = make_layout(g, 64);
    s.w = make_work(g, B, Tmax, 0, 64);
    s.B = B, s.Tmax = Tmax, s.scale = 1 / std::sqrt(double(D));
    std::vector<double> packed(s.lay.total), work(s.w.total), kc(g.L * B * H * Tmax * D), vc(kc.size());
    std::normal_distribution<double> nd(0, 1);
    for (auto* v : {&packed, &work, &kc, &vc})
      for (auto& x : *v) x = nd(rng);
    std::vector<int32_t> seqlens = {17, 9};
    std::vector<int64_t> key_start = {ks0, 0};
    s.packed = packed.data(), s.work = work.data(), s.k_cache = kc.data(), s.v_cache = vc.data();
    s.seqlens = seqlens.data();
    s.key_start.p = key_start.data();
    const int64_t l = 1;
    for (int li = 0; li <= static_cast<int>(cpu::best_isa()); ++li) {
      cpu::set_isa_cap(static_cast<Isa>(li));
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h) {
          attn_f64(s, l, b, h);
          const int64_t p = seqlens[b];
          const double* row = work.data() + s.w.qkv + b * s.w.qkv_ld;
          const double* kr = kc.data() + (((l * B + b) * H + h) * Tmax) * D;
          const double* vr = vc.data() + (((l * B + b) * H + h) * Tmax) * D;
          for (int64_t i = 0; i < D; ++i) {  // the new key and value landed at p
            EF_EXPECT(kr[p * D + i] == row[g.d + h * D + i]);
            EF_EXPECT(vr[p * D + i] == row[2 * g.d + h * D + i]);
          }
          const double* rel = packed.data() + s.lay.layer(l).rel + h * P * D;
          std::vector<double> sc;
          double m = -INFINITY;
          for (int64_t j = key_start[b]; j <= p; ++j) {
            const int64_t r = std::max<int64_t>(j - p, -(P - 1)) + P - 1;
            double t = 0;
            for (int64_t i = 0; i < D; ++i) t += row[h * D + i] * (kr[j * D + i] + rel[r * D + i]);
            sc.push_back(t * s.scale);
            m = std::max(m, sc.back());
          }
          double z = 0;
          for (double& t : sc) z += (t = std::exp(t - m));
          const double* out = work.data() + s.w.att + b * s.w.d_ld + h * D;
          for (int64_t i = 0; i < D; ++i) {
            double o = 0;
            for (size_t jj = 0; jj < sc.size(); ++jj) o += sc[jj] * vr[(key_start[b] + int64_t(jj)) * D + i];
            EF_EXPECT_NEAR(out[i], o / z, 1e-12);
          }
        }
    }
    cpu::reset_isa_cap();
  }
}

}  // namespace

EF_TEST_MAIN(test_layout(); test_linear(); test_gelu(); test_norm(); test_self_attention())
