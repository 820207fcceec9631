// Whole-step decode op family: the schemas, declared once, and the packing of the weights (ATen, every device).
// The CPU step is decode_cpu.cpp, the CUDA one decode_cuda.cu. Math: docs/kernels.md, "The whole-step decode".
//
//   decode_pack(weights, geometry) -> packed
//       weights in the canonical order below, geometry the ints of core/decode_layout.h (GeometryIndex); packed is
//       one flat tensor of the weights' dtype laid out for the device's step kernel (CPU: 64-column panels of
//       every projection; CUDA: row-major matrices), made once and reused by every step.
//   decode_step(packed, geometry, eps, tok, k_cache!, v_cache!, seqlens!, key_start?, pos_offset?, memory_k?,
//               memory_v?, memory_start?, logits!, work!) -> ()
//       one token per row tok (B,) through the whole stack: its key/value of every layer are written into the caches
//       (L, B, H, Tmax, D) at seqlens[b], it attends to the row's keys [key_start[b], seqlens[b]] (and, Enigma, to
//       the memory (L, B, H, S, D) from memory_start[b], at position pos_offset[b] + seqlens[b]), the logits (B, V)
//       are written, and seqlens is advanced by one. work: the step's scratch (decode_workspace_numel elements).
//
// Canonical weight order (the modules' parameters; an absent bias or cross bias is an empty tensor):
//   tok_emb (V, d), pos_emb (n_pos, d) (Enigma; empty for EnBERT), lm_head (V, d), norm_f (d), then per layer
//   norm1 (d), qkv.weight (3d, d), qkv.bias (3d), rel_emb (H, 2P-1, D), out.weight (d, d), out.bias (d),
//   norm2 (d), fc.weight (F, d), fc.bias (F), proj.weight (d, F), proj.bias (d)
//   and for Enigma norm_cross (d), cross.q.weight (d, d), cross.q.bias (d), cross.out.weight (d, d),
//   cross.out.bias (d), cross.rel_bias (H, 2R+1).
#include <torch/library.h>

#include <string>

#include "decode/decode.h"

TORCH_LIBRARY_FRAGMENT(enigma_fast, m) {
  m.def("decode_pack(Tensor[] weights, int[] geometry) -> Tensor");
  m.def("decode_step(Tensor packed, int[] geometry, float eps, Tensor tok, Tensor(a!) k_cache, Tensor(b!) v_cache, "
        "Tensor(c!) seqlens, Tensor? key_start, Tensor? pos_offset, Tensor? memory_k, Tensor? memory_v, "
        "Tensor? memory_start, Tensor(d!) logits, Tensor(e!) work) -> ()");
}

namespace enigma_fast {
namespace decode {
namespace {

struct Expect {
  std::string name;
  std::vector<int64_t> shape;  // empty: the tensor must be empty (absent bias)
};

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

std::vector<Expect> expected(const Geometry& g) {
  const int64_t d = g.d;
  auto opt = [&](bool present, std::vector<int64_t> s) { return present ? s : std::vector<int64_t>{}; };
  std::vector<Expect> e = {{"tok_emb", {g.V, d}},
                           {"pos_emb", opt(g.enigma(), {g.npos, d})},
                           {"lm_head", {g.V, d}},
                           {"norm_f", {d}}};
  const bool b = g.bias != 0;
  for (int64_t l = 0; l < g.L; ++l) {
    const std::string p = "layer " + std::to_string(l) + " ";
    e.push_back({p + "norm1", {d}});
    e.push_back({p + "qkv.weight", {3 * d, d}});
    e.push_back({p + "qkv.bias", opt(b, {3 * d})});
    e.push_back({p + "rel_emb", {g.H, 2 * g.P - 1, g.D}});
    e.push_back({p + "out.weight", {d, d}});
    e.push_back({p + "out.bias", opt(b, {d})});
    e.push_back({p + "norm2", {d}});
    e.push_back({p + "fc.weight", {g.F, d}});
    e.push_back({p + "fc.bias", opt(b, {g.F})});
    e.push_back({p + "proj.weight", {d, g.F}});
    e.push_back({p + "proj.bias", opt(b, {d})});
    if (g.enigma()) {
      e.push_back({p + "norm_cross", {d}});
      e.push_back({p + "cross.q.weight", {d, d}});
      e.push_back({p + "cross.q.bias", opt(b, {d})});
      e.push_back({p + "cross.out.weight", {d, d}});
      e.push_back({p + "cross.out.bias", opt(b, {d})});
      e.push_back({p + "cross.rel_bias", opt(g.R > 0, {g.H, 2 * g.R + 1})});
    }
  }
  return e;
}

// Layer l's weights start here in the canonical list.
int64_t layer_base(const Geometry& g, int64_t l) { return 4 + l * (g.enigma() ? 17 : 11); }

}  // namespace

at::Tensor pack_weights(at::TensorList weights, at::IntArrayRef geometry, int64_t nb) {
  const char* op = "decode_pack";
  const Geometry g = checked_geometry(geometry, op);
  const std::vector<Expect> want = expected(g);
  TORCH_CHECK_VALUE(weights.size() == want.size(), op, ": weights must hold ", want.size(),
                    " tensors for this geometry (4 + ", g.L, " layers x ", g.enigma() ? 17 : 11, "), got ",
                    weights.size());
  const at::Tensor& first = weights[0];
  for (size_t i = 0; i < want.size(); ++i) {
    const at::Tensor& w = weights[i];
    const std::string name = "weights[" + std::to_string(i) + "] (" + want[i].name + ")";
    TORCH_CHECK_VALUE(w.device() == first.device(), op, ": ", name, " must be on ", first.device(), ", got ",
                      w.device());
    if (want[i].shape.empty()) {
      TORCH_CHECK_VALUE(w.numel() == 0, op, ": ", name, " must be empty for this geometry, got shape ", w.sizes());
      continue;
    }
    TORCH_CHECK_TYPE(w.scalar_type() == first.scalar_type(), op, ": ", name, " must be ",
                     dtype_name(first.scalar_type()), " like weights[0], got ", dtype_name(w.scalar_type()));
    TORCH_CHECK_VALUE(w.sizes() == at::IntArrayRef(want[i].shape), op, ": ", name, " must be ",
                      shape_str(want[i].shape), ", got ", w.sizes());
  }
  const Layout lay = make_layout(g, nb);
  at::Tensor out = at::zeros({lay.total}, first.options().memory_format(at::MemoryFormat::Contiguous));
  auto region = [&](int64_t off, int64_t n) { return out.narrow(0, off, n); };
  auto raw = [&](int64_t off, const at::Tensor& w) { region(off, w.numel()).view(w.sizes()).copy_(w); };
  // W (N, K) as panels: panel p, row k, column j holds W[p nb + j, k] (zero past N).
  auto panels = [&](const Linear& lin, const at::Tensor& w, const at::Tensor* bias) {
    const int64_t np = lin.Np / nb;
    at::Tensor dst = region(lin.w, lin.Np * lin.K).view({np, lin.K, nb});
    dst.narrow(0, 0, lin.N / nb).copy_(w.narrow(0, 0, lin.N / nb * nb).view({lin.N / nb, nb, lin.K}).transpose(1, 2));
    const int64_t tail = lin.N % nb;
    if (tail) dst[np - 1].narrow(1, 0, tail).copy_(w.narrow(0, lin.N - tail, tail).t());
    if (bias && lin.b >= 0) region(lin.b, lin.N).copy_(*bias);
  };
  raw(lay.tok_emb, weights[0]);
  if (g.enigma()) raw(lay.pos_emb, weights[1]);
  panels(lay.head, weights[2], nullptr);
  raw(lay.norm_f, weights[3]);
  for (int64_t l = 0; l < g.L; ++l) {
    const LayerLayout y = lay.layer(l);
    const int64_t i = layer_base(g, l);
    raw(y.norm1, weights[i]);
    panels(y.qkv, weights[i + 1], &weights[i + 2]);
    region(y.rel, g.H * g.P * g.D).view({g.H, g.P, g.D}).copy_(weights[i + 3].narrow(1, 0, g.P));
    panels(y.out, weights[i + 4], &weights[i + 5]);
    raw(y.norm2, weights[i + 6]);
    panels(y.fc, weights[i + 7], &weights[i + 8]);
    panels(y.proj, weights[i + 9], &weights[i + 10]);
    if (g.enigma()) {
      raw(y.norm_cross, weights[i + 11]);
      panels(y.cq, weights[i + 12], &weights[i + 13]);
      panels(y.cout, weights[i + 14], &weights[i + 15]);
      if (g.R > 0) raw(y.cross_bias, weights[i + 16]);
    }
  }
  return out;
}

}  // namespace decode
}  // namespace enigma_fast
