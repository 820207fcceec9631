// Whole-step decode op family: argument checks shared by the CPU and CUDA implementations, and the packing of the
// weights (decode.cpp), which is the same ATen code on every device with the device's panel width. Messages name the
// argument, what was expected and what came.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "common/checks.h"
#include "decode/core/decode_layout.h"

namespace enigma_fast {
namespace decode {

// Panel width of the packed weights: kCpuPanel (decode_layout.h) on the CPU, plain row-major (N, K) matrices on
// CUDA.
constexpr int64_t kCudaPanel = 1;

inline int64_t panel_width(const at::Device& d) { return d.is_cuda() ? kCudaPanel : kCpuPanel; }

Geometry checked_geometry(at::IntArrayRef geometry, const char* op);

// Packs the weights in the canonical order (see decode.cpp) for panel width nb.
at::Tensor pack_weights(at::TensorList weights, at::IntArrayRef geometry, int64_t nb);

// Sizes of a step's caches and memory, from the checked arguments.
struct StepShapes {
  int64_t B = 0, Tmax = 0, S = 0;
};

void check_vector(const at::Tensor& t, const char* name, int64_t B, const at::Device& dev, bool int32_only,
                         const char* op);

void check_like(const at::Tensor& t, const char* name, at::IntArrayRef shape, const at::Tensor& packed,
                       const char* op);

StepShapes check_step(const Geometry& g, const at::Tensor& packed, const at::Tensor& tok,
                             const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& seqlens,
                             const std::optional<at::Tensor>& key_start, const std::optional<at::Tensor>& pos_offset,
                             const std::optional<at::Tensor>& memory_k, const std::optional<at::Tensor>& memory_v,
                             const std::optional<at::Tensor>& memory_start, const at::Tensor& logits,
                             const at::Tensor& work, double eps, bool dtype_ok);

// The CUDA implementation's own limits: float32/bfloat16/float16 weights, head dims up to max_d.
void check_cuda_pack_dtype(c10::ScalarType st);
void check_cuda_head_dim(int64_t D, int64_t max_d, const char* op);

}  // namespace decode
}  // namespace enigma_fast
