// The whole-step decode on the CPU: ATen glue (checks, value checks before anything is written) around the
// torch-free kernels of core/decode_kernels.h, and the order of the step's phases.
//
// A step is a fixed sequence of phases; those with enough work split it over the threads (the pool of
// common/core/parallel.h: caller and workers claim chunks, so a descheduled worker never holds a step up):
//   embed | per layer: norm1, qkv panels, self-attention tasks (row, head), out panels, [Enigma: norm_cross, cross
//   q panels, cross-attention tasks, cross out panels], norm2, fc panels (+ GELU), proj panels | norm_f, lm_head
//   panels, logits copied out, seqlens += 1.
// Every output element is computed by one chunk in a fixed order, so results do not depend on the thread count.
// Each phase call runs the instruction-set level active at that moment (EF_DEFINE_ISA_ENTRIES). Nothing is
// allocated: the buffers are the caller's (caches, logits, work).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/core/parallel.h"
#include "common/cpu_isa.h"
#include "decode/core/decode_kernels.h"
#include "decode/decode.h"

namespace enigma_fast {
namespace decode {
namespace {

enum class Phase : int {
  kEmbed,
  kNorm1,
  kQkv,
  kSelfAttention,
  kOut,
  kNormCross,
  kCrossQ,
  kCrossAttention,
  kCrossOut,
  kNorm2,
  kFc,
  kProj,
  kNormF,
  kHead
};

// Items [i0, i1) of phase ph in layer l: panels of a projection, (row, head) tasks of an attention, or the whole
// phase (serial phases, i0 = 0, i1 = 1). Each kernel is inlined at one call site only (the switch picks its
// operands), which keeps the per-level code, and the compile time, small.
template <Isa L, typename T>
EF_INLINE void run_phase(const Step<T>& s, Phase ph, int64_t l, int64_t i0, int64_t i1) {
  const Work& w = s.w;
  T* ws = s.work;
  const int64_t ld = w.d_ld;
  const LayerLayout y = s.lay.layer(l);
  const T* P = s.packed;
  const Linear* lin = nullptr;  // a projection: lin, its input x (row stride ldx), output out (ldo), GELU
  const T* x = ws + w.y;
  int64_t ldx = ld, ldo = ld;
  T* out = nullptr;
  bool gelu = false;
  const T* add = nullptr;  // a norm: the branch output to add first (null: none), its weight
  int64_t norm_w = -1;
  bool cross = false;
  switch (ph) {
    case Phase::kEmbed: embed(s); return;
    case Phase::kNorm1: add = l == 0 ? nullptr : ws + w.f, norm_w = y.norm1; break;
    case Phase::kQkv: lin = &y.qkv, out = ws + w.qkv, ldo = w.qkv_ld; break;
    case Phase::kSelfAttention: break;
    case Phase::kOut: lin = &y.out, x = ws + w.att, out = ws + w.a; break;
    case Phase::kNormCross: add = ws + w.a, norm_w = y.norm_cross; break;
    case Phase::kCrossQ: lin = &y.cq, out = ws + w.q2; break;
    case Phase::kCrossAttention: cross = true; break;
    case Phase::kCrossOut: lin = &y.cout, x = ws + w.att, out = ws + w.a; break;
    case Phase::kNorm2: add = ws + w.a, norm_w = y.norm2; break;
    case Phase::kFc: lin = &y.fc, out = ws + w.u, ldo = w.f_ld, gelu = true; break;
    case Phase::kProj: lin = &y.proj, x = ws + w.u, ldx = w.f_ld, out = ws + w.f; break;
    case Phase::kNormF: add = ws + w.f, norm_w = s.lay.norm_f; break;
    case Phase::kHead: lin = &s.lay.head, out = ws + w.logit, ldo = w.v_ld; break;
  }
  if (lin) {
    linear_panels<L>(P, *lin, s.lay.nb, x, ldx, s.B, out, ldo, i0, i1, gelu);
  } else if (norm_w >= 0) {
    norm_rows<L>(ws + w.h, add, ld, P + norm_w, ws + w.y, s.B, s.g.d, s.eps);
  } else {
    for (int64_t t = i0; t < i1; ++t) {
      if (cross) cross_attention<L>(s, l, t / s.g.H, t % s.g.H);
      else self_attention<L>(s, l, t / s.g.H, t % s.g.H);
    }
  }
}

EF_DEFINE_ISA_ENTRIES(void, phase_f32, (const Step<float>& s, Phase ph, int64_t l, int64_t i0, int64_t i1),
                      (s, ph, l, i0, i1), run_phase)
EF_DEFINE_ISA_ENTRIES(void, phase_f64, (const Step<double>& s, Phase ph, int64_t l, int64_t i0, int64_t i1),
                      (s, ph, l, i0, i1), run_phase)

inline void phase(const Step<float>& s, Phase ph, int64_t l, int64_t i0, int64_t i1) { phase_f32(s, ph, l, i0, i1); }
inline void phase(const Step<double>& s, Phase ph, int64_t l, int64_t i0, int64_t i1) { phase_f64(s, ph, l, i0, i1); }

// Below this estimated single-thread time a phase runs on the calling thread: a parallel region costs about a
// microsecond while the pool's workers are spinning (they are, between the back-to-back phases of a step).
constexpr double kSplitNs = 2500;

template <typename T>
void run_step(const Step<T>& s) {
  const int threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  auto serial = [&](Phase ph, int64_t l) { phase(s, ph, l, 0, 1); };
  auto split = [&](Phase ph, int64_t l, int64_t n, double item_ns) {
    if (threads <= 1 || n < 2 || n * item_ns < kSplitNs) {
      phase(s, ph, l, 0, n);
      return;
    }
    parallel_for(0, n, 1, threads, [&](int64_t i0, int64_t i1) { phase(s, ph, l, i0, i1); });
  };
  const Geometry& g = s.g;
  const int64_t nb = s.lay.nb, B = s.B;
  // Per-panel cost: its K x nb weights streamed once (~0.1 ns an element) plus B rows of multiply-adds.
  auto panel_ns = [&](const Linear& lin) { return lin.K * nb * (0.1 + 0.02 * B); };
  auto panels = [&](Phase ph, int64_t l, const Linear& lin) { split(ph, l, lin.panels(nb), panel_ns(lin)); };
  // Per attention task: its keys' dot products and weighted sums (~0.5 ns per key and head-dimension element).
  const double keys = std::max<double>(1, s.Tmax / 2.0);
  serial(Phase::kEmbed, 0);
  for (int64_t l = 0; l < g.L; ++l) {
    const LayerLayout y = s.lay.layer(l);
    serial(Phase::kNorm1, l);
    panels(Phase::kQkv, l, y.qkv);
    split(Phase::kSelfAttention, l, B * g.H, 0.5 * g.D * keys);
    panels(Phase::kOut, l, y.out);
    if (g.enigma()) {
      serial(Phase::kNormCross, l);
      panels(Phase::kCrossQ, l, y.cq);
      split(Phase::kCrossAttention, l, B * g.H, 0.5 * g.D * s.S);
      panels(Phase::kCrossOut, l, y.cout);
    }
    serial(Phase::kNorm2, l);
    panels(Phase::kFc, l, y.fc);
    panels(Phase::kProj, l, y.proj);
  }
  serial(Phase::kNormF, 0);
  panels(Phase::kHead, 0, s.lay.head);
  const T* lg = s.work + s.w.logit;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t v = 0; v < g.V; ++v) s.logits[b * g.V + v] = lg[b * s.w.v_ld + v];
  for (int64_t b = 0; b < B; ++b) s.seqlens[b] += 1;
}

Index index_of(const std::optional<at::Tensor>& t) {
  Index r;
  if (t.has_value()) r.p = t->data_ptr(), r.i64 = t->scalar_type() == at::kLong;
  return r;
}

// The values a step depends on, checked before anything is written: token ids, cache room, positions.
template <typename T>
void check_values(const Step<T>& s) {
  const char* op = "decode_step";
  for (int64_t b = 0; b < s.B; ++b) {
    TORCH_CHECK_VALUE(s.tok[b] >= 0 && s.tok[b] < s.g.V, op, ": tok must hold token ids in [0, vocab_size=", s.g.V,
                      "), got ", s.tok[b], " at tok[", b, "]");
    const int64_t n = s.seqlens[b];
    TORCH_CHECK_VALUE(n >= 0 && n < s.Tmax, op, ": seqlens[", b, "] = ", n,
                      " leaves no room in the caches for one more token (Tmax = ", s.Tmax, ")");
    if (s.g.enigma()) {
      const int64_t pos = (s.pos_offset ? s.pos_offset[b] : 0) + n;
      TORCH_CHECK_VALUE(pos >= 0 && pos < s.g.npos, op, ": the token of row ", b, " sits at position pos_offset + ",
                        "seqlens = ", pos, ", outside the position table [0, ", s.g.npos, ")");
    }
  }
}

at::Tensor decode_pack_cpu(at::TensorList weights, at::IntArrayRef geometry) {
  TORCH_CHECK_VALUE(!weights.empty(), "decode_pack: weights must not be empty");
  const auto st = weights[0].scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble,
                   "decode_pack: the CPU kernel takes float32 or float64 weights, got ", dtype_name(st));
  return pack_weights(weights, geometry, kCpuPanel);
}

void decode_step_cpu(const at::Tensor& packed, at::IntArrayRef geometry, double eps, const at::Tensor& tok,
                     const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& seqlens,
                     const std::optional<at::Tensor>& key_start, const std::optional<at::Tensor>& pos_offset,
                     const std::optional<at::Tensor>& memory_k, const std::optional<at::Tensor>& memory_v,
                     const std::optional<at::Tensor>& memory_start, const at::Tensor& logits, const at::Tensor& work) {
  const Geometry g = checked_geometry(geometry, "decode_step");
  const auto st = packed.scalar_type();
  const StepShapes sh = check_step(g, packed, tok, k_cache, v_cache, seqlens, key_start, pos_offset, memory_k,
                                   memory_v, memory_start, logits, work, eps, st == at::kFloat || st == at::kDouble);
  AT_DISPATCH_FLOATING_TYPES(st, "decode_step_cpu", [&] {
    Step<scalar_t> s;
    s.g = g;
    s.lay = make_layout(g, kCpuPanel);
    s.w = make_work(g, sh.B, sh.Tmax, sh.S, kCpuPanel);
    s.B = sh.B, s.Tmax = sh.Tmax, s.S = sh.S;
    s.eps = static_cast<scalar_t>(eps);
    s.scale = static_cast<scalar_t>(1.0 / std::sqrt(static_cast<double>(g.D)));
    s.packed = packed.data_ptr<scalar_t>();
    s.tok = tok.data_ptr<int64_t>();
    s.seqlens = seqlens.data_ptr<int32_t>();
    s.key_start = index_of(key_start);
    s.pos_offset = index_of(pos_offset);
    s.memory_start = index_of(memory_start);
    s.k_cache = k_cache.data_ptr<scalar_t>();
    s.v_cache = v_cache.data_ptr<scalar_t>();
    if (g.enigma()) {
      s.memory_k = memory_k->data_ptr<scalar_t>();
      s.memory_v = memory_v->data_ptr<scalar_t>();
    }
    s.logits = logits.data_ptr<scalar_t>();
    s.work = work.data_ptr<scalar_t>();
    check_values(s);
    run_step(s);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(enigma_fast, CPU, m) {
  m.impl("decode_pack", &decode_pack_cpu);
  m.impl("decode_step", &decode_step_cpu);
}

}  // namespace decode
}  // namespace enigma_fast
