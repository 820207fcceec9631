// RMSNorm op family: argument checks and output allocation shared by the CPU and CUDA implementations.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "common/checks.h"

namespace enigma_fast {
namespace rms_norm {

// Dtype of the saved reciprocal RMS: float32 statistics, float64 for float64 inputs.
inline c10::ScalarType stat_dtype(c10::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_dtype(const at::Tensor& x, const char* op);

void check_weight(const at::Tensor& x, const std::optional<at::Tensor>& weight, int64_t n, const char* op);

RowView check_fwd(const at::Tensor& x, const std::optional<at::Tensor>& weight, double eps,
                         const std::optional<at::Tensor>& residual, const char* op);

inline at::Tensor alloc_rstd(const at::Tensor& x) {
  auto sizes = x.sizes().vec();
  sizes.pop_back();
  return at::empty(sizes, x.options().dtype(stat_dtype(x.scalar_type())));
}

struct BwdArgs {
  RowView dy, h, dh;
  bool has_dh;
};

BwdArgs check_bwd(const at::Tensor& dy, const at::Tensor& h, const std::optional<at::Tensor>& weight,
                         const at::Tensor& rstd, const std::optional<at::Tensor>& dh);

}  // namespace rms_norm
}  // namespace enigma_fast
