// Definitions of the input checks declared in attention/attention.h. They live in a C++ translation unit of their own, so
// the CUDA sources (compiled through nvcc) only call them: every message that formats numbers or shapes is
// built by the host compiler's C++ code, never inside an nvcc-compiled file (tests/test_cuda_sources.py).
#include "attention/attention.h"

namespace enigma_fast {
namespace attention {

void check_dtype(const at::Tensor& q, const char* op) {
  const auto t = q.scalar_type();
  const bool cuda = q.is_cuda();
  const bool ok = t == at::kFloat || t == at::kBFloat16 || t == at::kDouble || (cuda && t == at::kHalf);
  TORCH_CHECK(ok, op, ": q must be float32, bfloat16 or float64", cuda ? " or float16" : "", " on ", q.device(),
              ", got ", dtype_name(t));
}

void check_like_q(const at::Tensor& q, const at::Tensor& t, const char* name, const char* op) {
  check_same_device(q, "q", t, name);
  check_same_dtype(q, "q", t, name);
  TORCH_CHECK(t.dim() == 4 && t.size(0) == q.size(0) && t.size(1) == q.size(1) && t.size(3) == q.size(3), op, ": ",
              name, " must be (B, H, T, D) = (", q.size(0), ", ", q.size(1), ", *, ", q.size(3), "), got ", t.sizes());
  TORCH_CHECK(t.size(3) <= 1 || t.stride(3) == 1, op, ": ", name,
              " must have a contiguous last dimension (stride 1), got strides ", t.strides(), "; call .contiguous()");
}

void check_q(const at::Tensor& q, const char* op) {
  check_dtype(q, op);
  TORCH_CHECK(q.dim() == 4, op, ": q must be (B, H, Tq, D), got shape ", q.sizes());
  TORCH_CHECK(q.size(3) > 0, op, ": q must have a non-empty head dimension D, got shape ", q.sizes());
  TORCH_CHECK(q.size(3) <= 1 || q.stride(3) == 1, op,
              ": q must have a contiguous last dimension (stride 1), got strides ", q.strides(), "; call .contiguous()");
}

int64_t check_rel_emb(const at::Tensor& q, const std::optional<at::Tensor>& rel_emb, const char* op) {
  if (!rel_emb.has_value()) return 0;
  const at::Tensor& r = *rel_emb;
  check_same_device(q, "q", r, "rel_emb");
  check_same_dtype(q, "q", r, "rel_emb");
  TORCH_CHECK(r.dim() == 3 && r.size(0) == q.size(1) && r.size(2) == q.size(3) && r.size(1) % 2 == 1, op,
              ": rel_emb must be (H, 2P-1, D) = (", q.size(1), ", *, ", q.size(3), ") with an odd middle size, got ",
              r.sizes());
  return (r.size(1) + 1) / 2;
}

void check_index_vector(const at::Tensor& q, const std::optional<at::Tensor>& t, const char* name,
                               const char* op) {
  if (!t.has_value()) return;
  check_same_device(q, "q", *t, name);
  TORCH_CHECK(t->scalar_type() == at::kInt || t->scalar_type() == at::kLong, op, ": ", name,
              " must be int32 or int64, got ", dtype_name(t->scalar_type()));
  TORCH_CHECK(t->dim() == 1 && t->size(0) == q.size(0), op, ": ", name, " must be (B,) = (", q.size(0), ",), got ",
              t->sizes());
}

int64_t check_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
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

int64_t check_bwd(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
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

int64_t check_kvcache(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
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

void warn_no_fused_cuda_kernel(int64_t D, c10::ScalarType t) {
  TORCH_WARN_ONCE("rel_attention on CUDA: no fused kernel for head dim ", D, " / ", dtype_name(t),
                  " here; running an ATen composite with a materialised (Tq x Tk) score matrix (slow, O(T^2) memory)."
                  " Fused kernels: D in {32, 64, 128}.");
}

}  // namespace attention
}  // namespace enigma_fast
