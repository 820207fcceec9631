// Definitions of the input checks declared in rms_norm/rms_norm.h. They live in a C++ translation unit of their own, so
// the CUDA sources (compiled through nvcc) only call them: every message that formats numbers or shapes is
// built by the host compiler's C++ code, never inside an nvcc-compiled file (tests/test_cuda_sources.py).
#include "rms_norm/rms_norm.h"

namespace enigma_fast {
namespace rms_norm {

void check_dtype(const at::Tensor& x, const char* op) {
  const auto t = x.scalar_type();
  const bool cuda = x.is_cuda();
  const bool ok = t == at::kFloat || t == at::kBFloat16 || t == at::kDouble || (cuda && t == at::kHalf);
  TORCH_CHECK(ok, op, ": x must be float32, bfloat16 or float64", cuda ? " or float16" : "", " on ", x.device(),
              ", got ", dtype_name(t));
}

void check_weight(const at::Tensor& x, const std::optional<at::Tensor>& weight, int64_t n, const char* op) {
  if (!weight.has_value()) return;
  const at::Tensor& w = *weight;
  check_same_device(x, "x", w, "weight");
  check_same_dtype(x, "x", w, "weight");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == n, op, ": weight must be (", n, ",) to match the last dimension of x, got ",
              w.sizes());
  TORCH_CHECK(w.is_contiguous(), op, ": weight must be contiguous");
}

RowView check_fwd(const at::Tensor& x, const std::optional<at::Tensor>& weight, double eps,
                         const std::optional<at::Tensor>& residual, const char* op) {
  check_dtype(x, op);
  TORCH_CHECK(eps >= 0.0, op, ": eps must be >= 0, got ", eps);
  RowView v = row_view(x, "x");
  TORCH_CHECK(v.n > 0, op, ": the last dimension of x must be non-empty, got shape ", x.sizes());
  check_weight(x, weight, v.n, op);
  if (residual.has_value()) {
    check_same_device(x, "x", *residual, "residual");
    check_same_dtype(x, "x", *residual, "residual");
    TORCH_CHECK(residual->sizes() == x.sizes(), op, ": residual must have the shape of x ", x.sizes(), ", got ",
                residual->sizes());
  }
  return v;
}

BwdArgs check_bwd(const at::Tensor& dy, const at::Tensor& h, const std::optional<at::Tensor>& weight,
                         const at::Tensor& rstd, const std::optional<at::Tensor>& dh) {
  const char* op = "rms_norm_bwd";
  check_dtype(h, op);
  check_same_device(h, "h", dy, "dy");
  check_same_dtype(h, "h", dy, "dy");
  TORCH_CHECK(dy.sizes() == h.sizes(), op, ": dy must have the shape of the input ", h.sizes(), ", got ", dy.sizes());
  BwdArgs a{row_view(dy, "dy"), row_view(h, "h"), RowView{0, 0, 0}, dh.has_value()};
  check_weight(h, weight, a.h.n, op);
  check_same_device(h, "h", rstd, "rstd");
  TORCH_CHECK(rstd.scalar_type() == stat_dtype(h.scalar_type()), op, ": rstd must be ",
              dtype_name(stat_dtype(h.scalar_type())), ", got ", dtype_name(rstd.scalar_type()));
  TORCH_CHECK(rstd.is_contiguous() && rstd.numel() == a.h.rows, op, ": rstd must be contiguous with ", a.h.rows,
              " elements (one per row), got shape ", rstd.sizes());
  if (a.has_dh) {
    check_same_device(h, "h", *dh, "dh");
    check_same_dtype(h, "h", *dh, "dh");
    TORCH_CHECK(dh->sizes() == h.sizes(), op, ": dh must have the shape of the input ", h.sizes(), ", got ",
                dh->sizes());
    a.dh = row_view(*dh, "dh");
  }
  return a;
}

}  // namespace rms_norm
}  // namespace enigma_fast
