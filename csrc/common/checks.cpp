// Definitions of the input checks declared in common/checks.h. They live in a C++ translation unit of their own, so
// the CUDA sources (compiled through nvcc) only call them: every message that formats numbers or shapes is
// built by the host compiler's C++ code, never inside an nvcc-compiled file (tests/test_cuda_sources.py).
#include "common/checks.h"

namespace enigma_fast {

RowView row_view(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() >= 1, name, " must have at least 1 dimension, got a 0-d tensor");
  const int64_t d = t.dim();
  const int64_t n = t.size(d - 1);
  int64_t rows = 1;
  for (int64_t i = 0; i < d - 1; ++i) rows *= t.size(i);
  if (rows == 0 || n == 0) return RowView{rows, n, n};  // nothing is read: any strides will do
  TORCH_CHECK(n <= 1 || t.stride(d - 1) == 1, name, " must have a contiguous last dimension (stride 1), got stride ",
              t.stride(d - 1), " for shape ", t.sizes(), "; call .contiguous() first");
  int64_t row_stride = n;
  if (d >= 2 && rows > 1) {
    // The innermost leading dimension of size > 1 gives the row stride; every outer one must be a whole
    // multiple of it, so that row r sits at r * row_stride.
    int64_t inner = -1;
    for (int64_t i = d - 2; i >= 0; --i)
      if (t.size(i) > 1) {
        inner = i;
        break;
      }
    row_stride = t.stride(inner);
    int64_t expected = row_stride * t.size(inner);
    for (int64_t i = inner - 1; i >= 0; --i) {
      if (t.size(i) == 1) continue;
      TORCH_CHECK(t.stride(i) == expected, name, " has leading dimensions that cannot be read as evenly spaced rows ",
                  "(shape ", t.sizes(), ", strides ", t.strides(), "); call .contiguous() first");
      expected *= t.size(i);
    }
    TORCH_CHECK(row_stride >= n, name, " has overlapping rows (row stride ", row_stride, " < row length ", n,
                "); call .contiguous() first");
  }
  return RowView{rows, n, row_stride};
}

void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name) {
  TORCH_CHECK(a.device() == b.device(), b_name, " must be on the same device as ", a_name, " (", a.device(),
              "), got ", b.device());
}

void check_same_dtype(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), b_name, " must have the same dtype as ", a_name, " (",
              dtype_name(a.scalar_type()), "), got ", dtype_name(b.scalar_type()));
}

}  // namespace enigma_fast
