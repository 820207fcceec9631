// Relative-position attention op family: the schemas, declared once. The CPU implementation is attention_cpu.cpp;
// a CUDA one registers the same names under the CUDA dispatch key. Math (design.md, "rel_attention"):
//
//   q: (B, H, Tq, D), k, v: (B, H, Tk, D), Tq <= Tk, rel_emb: (H, 2P-1, D) or None, key_start: (B,) int or None
//   query i sits at p_i = Tk - Tq + i, r(i, j) = clamp(j - p_i, -(P-1), P-1) + P-1
//   s_ij = scale * q_i . (k_j + rel_emb[h, r(i, j)]), masked j > p_i (causal) and j < key_start[b]
//
//   rel_attention_fwd(q, k, v, rel_emb?, key_start?, causal, scale) -> (out, lse)
//       out (B, H, Tq, D) contiguous, q's dtype; lse (B, H, Tq) float32 (float64 for float64 inputs), the
//       log-sum-exp of each row's scores, +inf for a row whose keys are all masked (its out row is zero).
//   rel_attention_bwd(dout, q, k, v, rel_emb?, key_start?, out, lse, causal, scale) -> (dq, dk, dv, drel_emb)
//       gradients with the shapes of q, k, v (contiguous) and of rel_emb ((0,) when rel_emb is None).
//   rel_attention_kvcache(q, k_cache!, v_cache!, rel_emb?, cache_seqlens, k_new?, v_new?, key_start?, scale) -> out
//       writes k_new/v_new (B, H, Tq, D) into the caches (B, H, Tmax, D) at cache_seqlens[b] + t, then attends
//       causally: query i of row b sits at n_b - Tq + i with n_b = cache_seqlens[b] + (Tq if k_new else 0),
//       keys j < n_b (and j >= key_start[b]).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(enigma_fast, m) {
  m.def("rel_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? rel_emb, Tensor? key_start, bool causal, "
        "float scale) -> (Tensor, Tensor)");
  m.def("rel_attention_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor? rel_emb, Tensor? key_start, "
        "Tensor out, Tensor lse, bool causal, float scale) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("rel_attention_kvcache(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor? rel_emb, "
        "Tensor cache_seqlens, Tensor? k_new, Tensor? v_new, Tensor? key_start, float scale) -> Tensor");
}
