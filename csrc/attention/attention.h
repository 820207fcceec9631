// Relative-position attention op family: argument checks shared by the CPU and CUDA implementations.
// Messages name the argument, what was expected and what came.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "common/checks.h"

namespace enigma_fast {
namespace attention {

// Dtype of the saved log-sum-exp: float32, float64 for float64 inputs.
inline c10::ScalarType stat_dtype(c10::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_dtype(const at::Tensor& q, const char* op);

// A (B, H, T, D) tensor like q (same B, H, D, dtype and device) whose last dimension is contiguous.
void check_like_q(const at::Tensor& q, const at::Tensor& t, const char* name, const char* op);

void check_q(const at::Tensor& q, const char* op);

// Returns P (0 when rel_emb is None).
int64_t check_rel_emb(const at::Tensor& q, const std::optional<at::Tensor>& rel_emb, const char* op);

void check_index_vector(const at::Tensor& q, const std::optional<at::Tensor>& t, const char* name,
                               const char* op);

// Shared by forward and backward. Returns P.
int64_t check_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const std::optional<at::Tensor>& rel_emb, const std::optional<at::Tensor>& key_start,
                         const char* op);

int64_t check_bwd(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const std::optional<at::Tensor>& rel_emb, const std::optional<at::Tensor>& key_start,
                         const at::Tensor& out, const at::Tensor& lse);

// Returns P. Checks shapes only: whether cache_seqlens[b] + Tq fits in Tmax needs the values (the CPU
// implementation checks them; a CUDA one would clamp or assert on the device).
int64_t check_kvcache(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                             const std::optional<at::Tensor>& rel_emb, const at::Tensor& cache_seqlens,
                             const std::optional<at::Tensor>& k_new, const std::optional<at::Tensor>& v_new,
                             const std::optional<at::Tensor>& key_start);

// The one-time warning of the CUDA implementation when no fused kernel serves head dim D / dtype t.
void warn_no_fused_cuda_kernel(int64_t D, c10::ScalarType t);

}  // namespace attention
}  // namespace enigma_fast
