// RMSNorm op family: the schemas, declared once. Implementations: rms_norm_cpu.cpp (CPU), rms_norm_cuda.cu (CUDA).
//
//   rms_norm_fwd(x, weight?, eps)            -> (y, rstd)      y = x * rstd * weight, rstd = rsqrt(mean(x^2) + eps)
//   add_rms_norm_fwd(x, residual, weight?, eps) -> (y, h, rstd) with h = x + residual normalised instead of x
//   rms_norm_bwd(dy, h, weight?, rstd, dh?, compute_dweight) -> (dx, dweight)   dx includes dh when given;
//                                                 dweight is (N,) when weight is given and asked for, else (0,)
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(enigma_fast, m) {
  m.def("rms_norm_fwd(Tensor x, Tensor? weight, float eps) -> (Tensor, Tensor)");
  m.def("add_rms_norm_fwd(Tensor x, Tensor residual, Tensor? weight, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("rms_norm_bwd(Tensor dy, Tensor h, Tensor? weight, Tensor rstd, Tensor? dh, bool compute_dweight) -> "
        "(Tensor, Tensor)");
}
