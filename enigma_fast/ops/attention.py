"""Relative-position attention ops: public functions, fake (meta) implementations and autograd for the kernels.

The kernels are ``torch.ops.enigma_fast.{rel_attention_fwd, rel_attention_bwd, rel_attention_kvcache}`` (schemas
in csrc/attention/attention.cpp). Where no kernel serves a device/dtype (no extension, or no kernel registered for
that device yet), the functions run ``enigma_fast.reference``; a CUDA kernel registering the same op names is picked
up with no change here. Both paths check their arguments with the same function (``enigma_fast.reference.checks``),
first.
"""

from __future__ import annotations

import torch

from enigma_fast import _extension, reference
from enigma_fast.reference.checks import check_rel_attention, check_rel_attention_with_kvcache

__all__ = ["rel_attention", "rel_attention_with_kvcache"]

_CPU = frozenset({torch.float32, torch.bfloat16, torch.float64})
_CUDA = frozenset({torch.float32, torch.bfloat16, torch.float16})
_extension.register_op("rel_attention", ("rel_attention_fwd", "rel_attention_bwd"), {"cpu": _CPU, "cuda": _CUDA})
_extension.register_op("rel_attention_with_kvcache", ("rel_attention_kvcache",), {"cpu": _CPU, "cuda": _CUDA})


def _scale(q: torch.Tensor, scale: float | None) -> float:
    return q.shape[-1] ** -0.5 if scale is None else float(scale)


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
    """Fused attention with a learned relative-position term (Shaw et al., 2018); memory O(T).

    Query i sits at position ``p_i = Tk - Tq + i``, key j at ``j``;
    ``r(i, j) = clamp(j - p_i, -(P-1), P-1) + (P-1)``;
    ``s_ij = scale * q_i . (k_j + rel_emb[h, r(i, j)])`` (``scale`` defaults to ``D**-0.5``); keys ``j > p_i``
    (``causal``) and ``j < key_start[b]`` are masked; ``out_i = sum_j softmax_j(s_ij) v_j``, zeros for a row whose
    keys are all masked. Differentiable in q, k, v and rel_emb.

    Args:
        q: ``(B, H, Tq, D)``; k, v: ``(B, H, Tk, D)`` with ``Tq <= Tk``; float32/bfloat16/float64 on CPU. Any
            strides with a contiguous last dimension (e.g. slices of a fused QKV projection) are read in place.
        rel_emb: ``(H, 2P-1, D)`` relative embeddings for offsets ``-(P-1) .. P-1``, or None.
        causal: mask keys after each query.
        scale: score scale, default ``D**-0.5``.
        key_start: ``(B,)`` int32/int64, first valid key of each row (left padding), or None.

    Returns:
        ``(B, H, Tq, D)``, contiguous, q's dtype.

    Raises:
        TypeError: q not floating, another tensor of another dtype, a non-integer key_start, causal not a bool.
        ValueError: a bad shape, device or layout (the message names the argument).
    """
    check_rel_attention(q, k, v, rel_emb, key_start, causal, scale)
    if not _extension.has_kernel("rel_attention", q.device.type, q.dtype):
        return reference.rel_attention(q, k, v, rel_emb, causal=causal, scale=scale, key_start=key_start)
    out, _ = torch.ops.enigma_fast.rel_attention_fwd(q, k, v, rel_emb, key_start, causal, _scale(q, scale))
    return out


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
    """Attention of new queries over a static KV cache (decode / chunked prefill); not differentiable.

    ``k_new``/``v_new`` ``(B, H, Tq, D)`` are first written into ``k_cache``/``v_cache`` ``(B, H, Tmax, D)`` in
    place at ``cache_seqlens[b] + t``. Row b then holds ``n_b = cache_seqlens[b] + Tq`` keys (``cache_seqlens[b]``
    without k_new, the cache already holding the queries' own keys) and query i sits at ``n_b - Tq + i``: with
    k_new that is ``cache_seqlens[b] + i``, causal within the new tokens. Scores, relative term, ``key_start``
    masking and the all-masked rule are those of :func:`rel_attention`. Shapes never change between steps.

    Args:
        q: ``(B, H, Tq, D)``.
        k_cache, v_cache: ``(B, H, Tmax, D)``, last dimension contiguous; mutated when k_new is given.
        rel_emb: ``(H, 2P-1, D)`` or None.
        cache_seqlens: ``(B,)`` int32/int64, tokens already in each row of the cache.
        k_new, v_new: ``(B, H, Tq, D)`` or None (both or neither).
        key_start: ``(B,)`` first valid key of each row (left padding), or None.
        scale: default ``D**-0.5``.

    Returns:
        ``(B, H, Tq, D)``, q's dtype.

    Raises:
        TypeError / ValueError as :func:`rel_attention`, and for a bad cache, cache_seqlens or k_new/v_new; on the
        CPU also for cache_seqlens values out of range (``0 <= cache_seqlens[b]``,
        ``cache_seqlens[b] + Tq <= Tmax`` with k_new, ``cache_seqlens[b] >= Tq`` without). The caches are left
        unchanged when it raises.
    """
    check_rel_attention_with_kvcache(q, k_cache, v_cache, rel_emb, cache_seqlens, k_new, v_new, key_start, scale)
    if not _extension.has_kernel("rel_attention_with_kvcache", q.device.type, q.dtype):
        return reference.rel_attention_with_kvcache(
            q,
            k_cache,
            v_cache,
            rel_emb,
            cache_seqlens=cache_seqlens,
            k_new=k_new,
            v_new=v_new,
            key_start=key_start,
            scale=scale,
        )
    return torch.ops.enigma_fast.rel_attention_kvcache(
        q, k_cache, v_cache, rel_emb, cache_seqlens, k_new, v_new, key_start, _scale(q, scale)
    )


def _register() -> None:
    lib = torch.ops.enigma_fast

    def stat_dtype(dtype: torch.dtype) -> torch.dtype:
        return torch.float64 if dtype == torch.float64 else torch.float32

    def check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_emb: torch.Tensor | None) -> None:
        torch._check(q.dim() == 4 and k.dim() == 4 and v.dim() == 4, lambda: "rel_attention: q, k, v must be 4-d")
        torch._check(k.shape[:2] == q.shape[:2] and k.shape[3] == q.shape[3], lambda: "rel_attention: k mismatches q")
        torch._check(v.shape == k.shape, lambda: "rel_attention: v must have k's shape")
        torch._check(q.shape[2] <= k.shape[2], lambda: "rel_attention: needs Tq <= Tk")
        for name, t in (("k", k), ("v", v), ("rel_emb", rel_emb)):
            if t is not None:
                msg = f"rel_attention: {name} must be {q.dtype} on q's device {q.device}, got {t.dtype} on {t.device}"
                torch._check(t.device == q.device and t.dtype == q.dtype, lambda msg=msg: msg)
        if rel_emb is not None:
            torch._check(
                rel_emb.dim() == 3 and rel_emb.shape[0] == q.shape[1] and rel_emb.shape[2] == q.shape[3],
                lambda: "rel_attention: rel_emb must be (H, 2P-1, D)",
            )

    @torch.library.register_fake("enigma_fast::rel_attention_fwd")
    def _(q, k, v, rel_emb, key_start, causal, scale):
        check(q, k, v, rel_emb)
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        return out, q.new_empty(q.shape[:3], dtype=stat_dtype(q.dtype))

    @torch.library.register_fake("enigma_fast::rel_attention_bwd")
    def _(dout, q, k, v, rel_emb, key_start, out, lse, causal, scale):
        check(q, k, v, rel_emb)
        fmt = torch.contiguous_format
        drel = torch.empty_like(rel_emb, memory_format=fmt) if rel_emb is not None else q.new_empty((0,))
        return (
            torch.empty_like(q, memory_format=fmt),
            torch.empty_like(k, memory_format=fmt),
            torch.empty_like(v, memory_format=fmt),
            drel,
        )

    @torch.library.register_fake("enigma_fast::rel_attention_kvcache")
    def _(q, k_cache, v_cache, rel_emb, cache_seqlens, k_new, v_new, key_start, scale):
        check(q, k_cache, v_cache, rel_emb)
        return torch.empty_like(q, memory_format=torch.contiguous_format)

    def setup_context(ctx, inputs, output):
        q, k, v, rel_emb, key_start, causal, scale = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, rel_emb, key_start, out, lse)
        ctx.causal, ctx.scale = causal, scale

    def backward(ctx, dout, _dlse):
        q, k, v, rel_emb, key_start, out, lse = ctx.saved_tensors
        # Incoming gradients can be broadcast views (stride 0, e.g. from .sum()); the kernel reads rows in place.
        dq, dk, dv, drel = lib.rel_attention_bwd(
            dout.contiguous(), q, k, v, rel_emb, key_start, out, lse, ctx.causal, ctx.scale
        )
        return dq, dk, dv, (drel if rel_emb is not None else None), None, None, None

    torch.library.register_autograd("enigma_fast::rel_attention_fwd", backward, setup_context=setup_context)


if _extension.EXTENSION is not None:
    _register()
