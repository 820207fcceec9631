"""Reference relative-position attention: materialised (Tq x Tk) scores, written for clarity, not speed.

The test oracle for the fused kernels and the fallback where none serves. Semantics (design.md):

    q: (B, H, Tq, D)   k, v: (B, H, Tk, D)   Tq <= Tk   rel_emb: (H, 2P-1, D) or None
    query i sits at position p_i = Tk - Tq + i, key j at position j
    r(i, j) = clamp(j - p_i, -(P-1), P-1) + (P-1)
    s_ij    = scale * q_i . (k_j + rel_emb[h, r(i, j)])            scale defaults to D**-0.5
    masked: j > p_i when causal; j < key_start[b] when key_start is given
    out_i   = sum_j softmax_j(s_ij) v_j, a row whose keys are all masked gives zeros (never NaN)

Scores are computed in float32 for 16-bit inputs (float64 stays float64); the output has q's dtype.
"""

from __future__ import annotations

import torch

from enigma_fast.reference.checks import check_rel_attention, check_rel_attention_with_kvcache

__all__ = ["rel_attention", "rel_attention_with_dropout", "rel_attention_with_kvcache"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_emb: torch.Tensor | None,
    pos_q: torch.Tensor,
    masked: torch.Tensor,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Masked softmax attention with the relative term. pos_q: (B, Tq) query positions; masked: (B, Tq, Tk) bool."""
    acc = _acc_dtype(q.dtype)
    qf, kf, vf = q.to(acc), k.to(acc), v.to(acc)
    s = qf @ kf.transpose(-1, -2)  # (B, H, Tq, Tk)
    if rel_emb is not None:
        P = (rel_emb.shape[1] + 1) // 2
        qr = qf @ rel_emb.to(acc).transpose(-1, -2).unsqueeze(0)  # (B, H, Tq, 2P-1): q_i . rel_emb[h, r]
        j = torch.arange(k.shape[2], device=q.device)
        r = (j.view(1, 1, -1) - pos_q.unsqueeze(-1)).clamp(-(P - 1), P - 1) + (P - 1)  # (B, Tq, Tk)
        s = s + torch.gather(qr, -1, r.unsqueeze(1).expand(-1, q.shape[1], -1, -1))
    s = (s * scale).masked_fill(masked.unsqueeze(1), float("-inf"))
    if s.shape[-1] == 0:  # no keys (so no queries either, Tq <= Tk): nothing to normalise
        return (s @ vf).to(q.dtype)
    # Softmax written out so that a row with every key masked gives zeros (and zero gradients), never NaN.
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    denom = e.sum(dim=-1, keepdim=True)
    p = e / torch.where(denom > 0, denom, torch.ones_like(denom))
    if dropout_p > 0.0:
        p = torch.nn.functional.dropout(p, dropout_p, training=True)
    return (p @ vf).to(q.dtype)


def rel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_emb: torch.Tensor | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
    key_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Relative-position attention (see the module docstring for the math).

    Shapes: q ``(B, H, Tq, D)``, k/v ``(B, H, Tk, D)`` with ``Tq <= Tk``, rel_emb ``(H, 2P-1, D)`` or None,
    key_start ``(B,)`` integer or None. Returns ``(B, H, Tq, D)`` in q's dtype. Arguments are checked as the kernels
    check them (``checks.check_rel_attention``).
    """
    check_rel_attention(q, k, v, rel_emb, key_start, causal, scale)
    B, _, Tq, D = q.shape
    Tk = k.shape[2]
    scale = D**-0.5 if scale is None else scale
    pos_q, masked = _positions_and_mask(B, Tq, Tk, causal, key_start, q.device)
    return _attend(q, k, v, rel_emb, pos_q, masked, scale)


def rel_attention_with_dropout(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_emb: torch.Tensor | None = None,
    *,
    dropout_p: float,
    causal: bool = False,
    scale: float | None = None,
    key_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`rel_attention` with dropout (probability ``dropout_p``) on the attention probabilities.

    The training path of modules with attention dropout; the fused kernels have none. Same shapes.
    """
    check_rel_attention(q, k, v, rel_emb, key_start, causal, scale)
    B, _, Tq, D = q.shape
    Tk = k.shape[2]
    scale = D**-0.5 if scale is None else scale
    pos_q, masked = _positions_and_mask(B, Tq, Tk, causal, key_start, q.device)
    return _attend(q, k, v, rel_emb, pos_q, masked, scale, dropout_p)


def _positions_and_mask(
    B: int, Tq: int, Tk: int, causal: bool, key_start: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query positions (B, Tq) = Tk - Tq + i and the (B, Tq, Tk) mask of the prefill op."""
    pos_q = (Tk - Tq + torch.arange(Tq, device=device)).unsqueeze(0).expand(B, -1)
    j = torch.arange(Tk, device=device).view(1, 1, -1)
    masked = torch.zeros(B, Tq, Tk, dtype=torch.bool, device=device)
    if causal:
        masked = masked | (j > pos_q.unsqueeze(-1))
    if key_start is not None:
        masked = masked | (j < key_start.view(B, 1, 1))
    return pos_q, masked


def rel_attention_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    rel_emb: torch.Tensor | None = None,
    *,
    cache_seqlens: torch.Tensor,
    k_new: torch.Tensor | None = None,
    v_new: torch.Tensor | None = None,
    key_start: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention over a static KV cache, appending ``k_new``/``v_new`` in place first.

    Shapes: q ``(B, H, Tq, D)``; k_cache/v_cache ``(B, H, Tmax, D)``; cache_seqlens ``(B,)`` integer (tokens
    already in the cache); k_new/v_new ``(B, H, Tq, D)`` or None. With k_new, row b's new tokens are written at
    ``cache_seqlens[b] + t`` and query i sits at ``cache_seqlens[b] + i``; without, the cache already holds the
    queries' own keys and query i sits at ``cache_seqlens[b] - Tq + i``. Keys ``j <= p_i`` (and
    ``j >= key_start[b]``) are attended. Returns ``(B, H, Tq, D)``.
    """
    check_rel_attention_with_kvcache(
        q, k_cache, v_cache, rel_emb, cache_seqlens, k_new, v_new, key_start, scale, device_values=True
    )
    B, H, Tq, D = q.shape
    Tmax = k_cache.shape[2]
    n_new = 0
    if k_new is not None and Tq > 0:
        n_new = Tq
        # Slot j of row b takes new token j - cache_seqlens[b] when that is in [0, Tq); no other slot changes (a
        # gather, so a cache_seqlens past Tmax that the checks could not read drops tokens, never overwrites).
        t = torch.arange(Tmax, device=q.device).view(1, -1) - cache_seqlens.long().view(B, 1)  # (B, Tmax)
        written = ((t >= 0) & (t < Tq)).view(B, 1, Tmax, 1)
        src = t.clamp(0, Tq - 1).view(B, 1, Tmax, 1).expand(B, H, Tmax, D)
        k_cache.copy_(torch.where(written, k_new.gather(2, src), k_cache))
        v_cache.copy_(torch.where(written, v_new.gather(2, src), v_cache))
    scale = D**-0.5 if scale is None else scale
    n_keys = cache_seqlens.long() + n_new  # (B,)
    pos_q = n_keys.view(B, 1) - Tq + torch.arange(Tq, device=q.device)  # (B, Tq)
    j = torch.arange(Tmax, device=q.device).view(1, 1, -1)
    masked = j > pos_q.unsqueeze(-1)
    if key_start is not None:
        masked = masked | (j < key_start.view(B, 1, 1))
    return _attend(q, k_cache, v_cache, rel_emb, pos_q, masked, scale)
