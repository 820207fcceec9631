// Input checks shared by every op family. Messages name the argument, what was expected and what came.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

namespace enigma_fast {

inline std::string dtype_name(c10::ScalarType t) { return std::string(c10::toString(t)); }

// A tensor seen as `rows` rows of `n` contiguous elements, `row_stride` elements apart: any tensor whose last
// dimension is contiguous and whose leading dimensions collapse into one (a slice of a wider projection, say).
struct RowView {
  int64_t rows;
  int64_t n;
  int64_t row_stride;
};

RowView row_view(const at::Tensor& t, const char* name);

void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name);

void check_same_dtype(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name);

}  // namespace enigma_fast
