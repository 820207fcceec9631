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

inline void check_dtype(const at::Tensor& q, const char* op) {
  const auto t = q.scalar_type();
  const bool cuda = q.is_cuda();
  const bool ok = t == at::kFloat || t == at::kBFloat16 || t == at::kDouble || (cuda && t == at::kHalf);
  TORCH_CHECK(ok, op, ": q must be float32, bfloat16 or float64", cuda ? " or float16" : "", " on ", q.device(),
              ", got ", dtype_name(t));
}

// A (B, H, T, D) tensor like q (same B, H, D, dtype and device) whose last dimension is contiguous.
inline void check_like_q(const at::Tensor& q, const at::Tensor& t, const char* name, const char* op) {
  check_same_device(q, "q", t, name);
  check_same_dtype(q, "q", t, name);
  TORCH_CHECK(t.dim() == 4 && t.size(0) == q.size(0) && t.size(1) == q.size(1) && t.size(3) == q.size(3), op, ": ",
              name, " must be (B, H, T, D) = (", q.size(0), ", ", q.size(1), ", *, ", q.size(3), "), got ", t.sizes());
  TORCH_CHECK(t.size(3) <= 1 || t.stride(3) == 1, op, ": ", name,
              " must have a contiguous last dimension (stride 1), got strides ", t.strides(), "; call .contiguous()");
}

inline void check_q(const at::Tensor& q, const char* op) {
  check_dtype(q, op);
  TORCH_CHECK(q.dim() == 4, op, ": q must be (B, H, Tq, D), got shape ", q.sizes());
  TORCH_CHECK(q.size(3) > 0, op, ": q must have a non-empty head dimension D, got shape ", q.sizes());
  TORCH_CHECK(q.size(3) <= 1 || q.stride(3) == 1, op,
              ": q must have a contiguous last dimension (stride 1), got strides ", q.strides(), "; call .contiguous()");
}

// Returns P (0 when rel_emb is None).
inline int64_t check_rel_emb(const at::Tensor& q, const std::optional<at::Tensor>& rel_emb, const char* op) {
  if (!rel_emb.has_value()) return 0;
  const at::Tensor& r = *rel_emb;
  check_same_device(q, "q", r, "rel_emb");
  check_same_dtype(q, "q", r, "rel_emb");
  TORCH_CHECK(r.dim() == 3 && r.size(0) == q.size(1) && r.size(2) == q.size(3) && r.size(1) % 2 == 1, op,
              ": rel_emb must be (H, 2P-1, D) = (", q.size(1), ", *, ", q.size(3), ") with an odd middle size, got ",
              r.sizes());
  return (r.size(1) + 1) / 2;
}

inline void check_index_vector(const at::Tensor& q, const std::optional<at::Tensor>& t, const char* name,
                               const char* op) {
  if (!t.has_value()) return;
  check_same_device(q, "q", *t, name);
  TORCH_CHECK(t->scalar_type() == at::kInt || t->scalar_type() == at::kLong, op, ": ", name,
              " must be int32 or int64, got ", dtype_name(t->scalar_type()));
  TORCH_CHECK(t->dim() == 1 && t->size(0) == q.size(0), op, ": ", name, " must be (B,) = (", q.size(0), ",), got ",
              t->sizes());
}

// Shared by forward and backward. Returns P.
inline int64_t check_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const std::optional<at::Tensor>& rel_emb, const std::optional<at::Tensor>& key_start,
                         const char* op) {
  check_q(q, op);
  check_like_q(q, k, "k", op);
  check_like_q(q, v, "v", op);
  TORCH_CHECK(v.size(2) == k.size(2), op, ": v must have k's length Tk = ", k.size(2), ", got ", v.size(2));
  TORCH_CHECK(q.size(2) <= k.size(2), op, ": needs Tq <= Tk (queries are the last Tq positions), got Tq = ",
              q.size(2), " > Tk = ", k.size(2));
  check_index_vector(q, key_start, "key_start", op);
  return check_rel_emb(q, rel_emb, op);
}

inline int64_t check_bwd(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const std::optional<at::Tensor>& rel_emb, const std::optional<at::Tensor>& key_start,
                         const at::Tensor& out, const at::Tensor& lse) {
  const char* op = "rel_attention_bwd";
  const int64_t P = check_fwd(q, k, v, rel_emb, key_start, op);
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{dout, "dout"}, {out, "out"}}) {
    check_same_device(q, "q", t, name);
    check_same_dtype(q, "q", t, name);
    TORCH_CHECK(t.sizes() == q.sizes(), op, ": ", name, " must have q's shape ", q.sizes(), ", got ", t.sizes());
    TORCH_CHECK(t.size(3) <= 1 || t.stride(3) == 1, op, ": ", name, " must have a contiguous last dimension");
  }
  check_same_device(q, "q", lse, "lse");
  TORCH_CHECK(lse.scalar_type() == stat_dtype(q.scalar_type()), op, ": lse must be ",
              dtype_name(stat_dtype(q.scalar_type())), ", got ", dtype_name(lse.scalar_type()));
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == q.size(0) && lse.size(1) == q.size(1) && lse.size(2) == q.size(2), op,
              ": lse must be (B, H, Tq) = (", q.size(0), ", ", q.size(1), ", ", q.size(2), "), got ", lse.sizes());
  return P;
}

// Returns P. Checks shapes only: whether cache_seqlens[b] + Tq fits in Tmax needs the values (the CPU
// implementation checks them; a CUDA one would clamp or assert on the device).
inline int64_t check_kvcache(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                             const std::optional<at::Tensor>& rel_emb, const at::Tensor& cache_seqlens,
                             const std::optional<at::Tensor>& k_new, const std::optional<at::Tensor>& v_new,
                             const std::optional<at::Tensor>& key_start) {
  const char* op = "rel_attention_with_kvcache";
  check_q(q, op);
  check_like_q(q, k_cache, "k_cache", op);
  check_like_q(q, v_cache, "v_cache", op);
  TORCH_CHECK(v_cache.size(2) == k_cache.size(2), op, ": v_cache must have k_cache's length Tmax = ",
              k_cache.size(2), ", got ", v_cache.size(2));
  TORCH_CHECK(q.size(2) <= k_cache.size(2), op, ": needs Tq <= Tmax, got Tq = ", q.size(2), " > Tmax = ",
              k_cache.size(2));
  check_index_vector(q, cache_seqlens, "cache_seqlens", op);
  check_index_vector(q, key_start, "key_start", op);
  TORCH_CHECK(k_new.has_value() == v_new.has_value(), op, ": k_new and v_new must be given together");
  if (k_new.has_value()) {
    for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{*k_new, "k_new"}, {*v_new, "v_new"}}) {
      check_like_q(q, t, name, op);
      TORCH_CHECK(t.size(2) == q.size(2), op, ": ", name, " must have q's length Tq = ", q.size(2), ", got ",
                  t.size(2));
    }
  }
  return check_rel_emb(q, rel_emb, op);
}

}  // namespace attention
}  // namespace enigma_fast
