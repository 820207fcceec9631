// Storage types of the CPU kernels for torch dtypes, and typed pointers into tensors.
//
// The torch-free cores work on float, double and bf16_t (common/bf16.h); at::BFloat16 has bf16_t's layout, so a
// bfloat16 tensor's data is read in place as bf16_t.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>

#include "common/bf16.h"

namespace enigma_fast {

template <typename scalar_t>
struct Kernel {
  using type = scalar_t;
};
template <>
struct Kernel<at::BFloat16> {
  using type = bf16_t;
};

// Read-only typed pointer to t's data.
template <typename scalar_t>
const typename Kernel<scalar_t>::type* ptr(const at::Tensor& t) {
  return reinterpret_cast<const typename Kernel<scalar_t>::type*>(t.data_ptr());
}

// Writable typed pointer to t's data.
template <typename scalar_t>
typename Kernel<scalar_t>::type* mut_ptr(const at::Tensor& t) {
  return reinterpret_cast<typename Kernel<scalar_t>::type*>(t.data_ptr());
}

}  // namespace enigma_fast
