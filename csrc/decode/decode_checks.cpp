// Definitions of the input checks declared in decode/decode.h. They live in a C++ translation unit of their own, so
// the CUDA sources (compiled through nvcc) only call them: every message that formats numbers or shapes is
// built by the host compiler's C++ code, never inside an nvcc-compiled file (tests/test_cuda_sources.py).
#include "decode/decode.h"

#include <string>

namespace enigma_fast {
namespace decode {

Geometry checked_geometry(at::IntArrayRef geometry, const char* op) {
  Geometry g;
  const std::string err = parse_geometry(geometry.data(), static_cast<int64_t>(geometry.size()), &g);
  TORCH_CHECK_VALUE(err.empty(), op, ": ", err);
  return g;
}

void check_vector(const at::Tensor& t, const char* name, int64_t B, const at::Device& dev, bool int32_only,
                         const char* op) {
  TORCH_CHECK_VALUE(t.device() == dev, op, ": ", name, " must be on ", dev, ", got ", t.device());
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kInt || (!int32_only && st == at::kLong), op, ": ", name, " must be ",
                   int32_only ? "int32" : "int32 or int64", ", got ", dtype_name(st));
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == B && t.is_contiguous(), op, ": ", name,
                    " must be a contiguous (B,) = (", B, ",) tensor, got shape ", t.sizes());
}

void check_like(const at::Tensor& t, const char* name, at::IntArrayRef shape, const at::Tensor& packed,
                       const char* op) {
  TORCH_CHECK_VALUE(t.device() == packed.device(), op, ": ", name, " must be on ", packed.device(), ", got ",
                    t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == packed.scalar_type(), op, ": ", name, " must be ",
                   dtype_name(packed.scalar_type()), " like the packed weights, got ", dtype_name(t.scalar_type()));
  TORCH_CHECK_VALUE(t.sizes() == shape && t.is_contiguous(), op, ": ", name, " must be a contiguous ", shape,
                    " tensor, got shape ", t.sizes(), t.is_contiguous() ? "" : " (not contiguous)");
}

StepShapes check_step(const Geometry& g, const at::Tensor& packed, const at::Tensor& tok,
                             const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& seqlens,
                             const std::optional<at::Tensor>& key_start, const std::optional<at::Tensor>& pos_offset,
                             const std::optional<at::Tensor>& memory_k, const std::optional<at::Tensor>& memory_v,
                             const std::optional<at::Tensor>& memory_start, const at::Tensor& logits,
                             const at::Tensor& work, double eps, bool dtype_ok) {
  const char* op = "decode_step";
  const int64_t nb = panel_width(packed.device());
  const Layout lay = make_layout(g, nb);
  TORCH_CHECK_TYPE(dtype_ok, op, ": packed weights of dtype ", dtype_name(packed.scalar_type()),
                   " have no kernel on ", packed.device());
  TORCH_CHECK_VALUE(packed.dim() == 1 && packed.numel() == lay.total && packed.is_contiguous(), op,
                    ": packed must be the (", lay.total, ",) tensor decode_pack makes for this geometry on ",
                    packed.device(), ", got shape ", packed.sizes());
  TORCH_CHECK_VALUE(tok.device() == packed.device(), op, ": tok must be on ", packed.device(), ", got ", tok.device());
  TORCH_CHECK_TYPE(tok.scalar_type() == at::kLong, op, ": tok must be int64, got ", dtype_name(tok.scalar_type()));
  TORCH_CHECK_VALUE(tok.dim() == 1 && tok.size(0) >= 1 && tok.is_contiguous(), op,
                    ": tok must be a contiguous (B,) tensor with B >= 1, got shape ", tok.sizes());
  StepShapes s;
  s.B = tok.size(0);
  TORCH_CHECK_VALUE(k_cache.dim() == 5, op, ": k_cache must be (L, B, H, Tmax, D) = (", g.L, ", ", s.B, ", ", g.H,
                    ", *, ", g.D, "), got shape ", k_cache.sizes());
  s.Tmax = k_cache.size(3);
  TORCH_CHECK_VALUE(s.Tmax >= 1, op, ": k_cache must hold at least one position, got shape ", k_cache.sizes());
  check_like(k_cache, "k_cache", {g.L, s.B, g.H, s.Tmax, g.D}, packed, op);
  check_like(v_cache, "v_cache", {g.L, s.B, g.H, s.Tmax, g.D}, packed, op);
  check_vector(seqlens, "seqlens", s.B, packed.device(), true, op);
  if (key_start.has_value()) check_vector(*key_start, "key_start", s.B, packed.device(), false, op);
  if (pos_offset.has_value()) check_vector(*pos_offset, "pos_offset", s.B, packed.device(), false, op);
  if (memory_start.has_value()) check_vector(*memory_start, "memory_start", s.B, packed.device(), false, op);
  TORCH_CHECK_VALUE(memory_k.has_value() == g.enigma() && memory_v.has_value() == g.enigma(), op,
                    g.enigma() ? ": an Enigma decoder needs memory_k and memory_v (L, B, H, S, D)"
                               : ": an EnBERT takes no memory_k / memory_v");
  TORCH_CHECK_VALUE(g.enigma() || (!pos_offset.has_value() && !memory_start.has_value()), op,
                    ": pos_offset and memory_start are for an Enigma decoder; an EnBERT has no positions or memory");
  if (g.enigma()) {
    TORCH_CHECK_VALUE(memory_k->dim() == 5, op, ": memory_k must be (L, B, H, S, D) = (", g.L, ", ", s.B, ", ", g.H,
                      ", *, ", g.D, "), got shape ", memory_k->sizes());
    s.S = memory_k->size(3);
    TORCH_CHECK_VALUE(s.S >= 1, op, ": memory_k must hold at least one position, got shape ", memory_k->sizes());
    check_like(*memory_k, "memory_k", {g.L, s.B, g.H, s.S, g.D}, packed, op);
    check_like(*memory_v, "memory_v", {g.L, s.B, g.H, s.S, g.D}, packed, op);
  }
  check_like(logits, "logits", {s.B, g.V}, packed, op);
  const Work w = make_work(g, s.B, s.Tmax, s.S, nb);
  TORCH_CHECK_VALUE(work.device() == packed.device() && work.scalar_type() == packed.scalar_type() &&
                        work.dim() == 1 && work.numel() >= w.total && work.is_contiguous(),
                    op, ": work must be a contiguous 1-d ", dtype_name(packed.scalar_type()), " tensor of at least ",
                    w.total, " elements on ", packed.device(), ", got ", dtype_name(work.scalar_type()), " ",
                    work.sizes(), " on ", work.device());
  TORCH_CHECK_VALUE(eps >= 0, op, ": eps must be >= 0, got ", eps);
  return s;
}

void check_cuda_pack_dtype(c10::ScalarType st) {
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf,
                   "decode_pack: the CUDA kernel takes float32, bfloat16 or float16 weights, got ", dtype_name(st));
}

void check_cuda_head_dim(int64_t D, int64_t max_d, const char* op) {
  TORCH_CHECK_VALUE(D <= max_d, op, ": the CUDA kernel takes head dimensions up to ", max_d, ", got ", D);
}

}  // namespace decode
}  // namespace enigma_fast
