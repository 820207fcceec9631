"""Relative-position multi-head attention module over the fused ``rel_attention`` ops, with a static KV cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from enigma_fast import ops
from enigma_fast.reference.attention import rel_attention_with_dropout

__all__ = ["KVCache", "RelativeMultiHeadAttention"]


@dataclass
class KVCache:
    """Static per-layer cache: ``k``/``v`` ``(B, H, Tmax, D)`` and ``seqlens`` ``(B,)`` int32 tokens held.

    Layers write their new keys/values at ``seqlens`` but never advance it: the caller does
    ``cache.seqlens += T`` once per step after every layer sharing it has run (shapes never change).
    """

    k: torch.Tensor
    v: torch.Tensor
    seqlens: torch.Tensor

    @classmethod
    def allocate(
        cls, batch: int, n_head: int, max_len: int, head_dim: int, *, dtype: torch.dtype, device: torch.device | str
    ) -> KVCache:
        """Zero caches of ``max_len`` positions and ``seqlens = 0``."""
        shape = (batch, n_head, max_len, head_dim)
        return cls(
            torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(batch, dtype=torch.int32, device=device),
        )


class RelativeMultiHeadAttention(nn.Module):
    """Multi-head attention with learned relative-position embeddings (Shaw et al., 2018).

    One fused ``(3 d_model, d_model)`` QKV projection and an output projection; ``rel_emb`` is ``(H, 2P-1, D)``
    with ``P = max_rel_pos`` (offsets beyond ``P-1`` share the edge embedding). Self-attention:
    ``forward(x)``; cross-attention: ``forward(x, memory)`` projects x with the Q rows of the fused weight and
    memory with its K and V rows (one fused KV product); as in the op, this needs T <= S and the T queries sit
    at the last T of the S memory positions for the relative term (``max_rel_pos=1`` makes it position-free).
    With ``cache``, the new keys/values are appended to the cache and attended causally (decode).
    Attention dropout > 0 applies only in training and then runs the pure-PyTorch reference path (the fused
    kernels have no dropout); eval and dropout=0 use the fused kernels.

    Shapes: x ``(B, T, d_model)``, memory ``(B, S, d_model)``, key_start ``(B,)`` (left padding), output
    ``(B, T, d_model)``.
    """

    def __init__(
        self, d_model: int, n_head: int, max_rel_pos: int, causal: bool, bias: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if d_model % n_head != 0:
            raise ValueError(f"d_model must be divisible by n_head, got d_model={d_model}, n_head={n_head}")
        if max_rel_pos < 1:
            raise ValueError(f"max_rel_pos must be >= 1, got {max_rel_pos}")
        self.d_model, self.n_head, self.head_dim = d_model, n_head, d_model // n_head
        self.max_rel_pos, self.causal, self.dropout = max_rel_pos, causal, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.rel_emb = nn.Parameter(torch.empty(n_head, 2 * max_rel_pos - 1, self.head_dim))
        nn.init.normal_(self.rel_emb, std=0.02)

    def _heads(self, t: torch.Tensor, n: int) -> list[torch.Tensor]:
        # (B, T, n * C) -> n views (B, H, T, D) of the projection output (no copies; the ops read strides).
        # unbind, not n selects: its backward stacks the n gradients into one tensor, where each select's would
        # materialise a zero (B, T, n, H, D) gradient and the n of them would then be summed.
        B, T, _ = t.shape
        return [u.transpose(1, 2) for u in t.view(B, T, n, self.n_head, self.head_dim).unbind(2)]

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        key_start: torch.Tensor | None = None,
        cache: KVCache | None = None,
        prefill: bool = False,
    ) -> torch.Tensor:
        """Attend from x to itself (memory None) or to memory; with cache, append x's keys/values and decode.

        ``prefill=True`` (with an empty cache) runs the fused prefill attention over x and writes its keys and
        values at cache positions ``0 .. T-1``; the caller then sets ``cache.seqlens`` to T.
        """
        B, T, C = x.shape
        d = self.d_model
        if memory is None:
            q, k, v = self._heads(self.qkv(x), 3)
        else:
            w, b = self.qkv.weight, self.qkv.bias
            (q,) = self._heads(F.linear(x, w[:d], None if b is None else b[:d]), 1)
            k, v = self._heads(F.linear(memory, w[d:], None if b is None else b[d:]), 2)
        # Under autocast the projections come out in the autocast dtype while rel_emb stays a float32 parameter.
        rel_emb = self.rel_emb if self.rel_emb.dtype == q.dtype else self.rel_emb.to(q.dtype)
        if cache is not None and prefill:
            if memory is not None:
                raise ValueError("prefill is for self-attention")
            y = ops.rel_attention(q, k, v, rel_emb, causal=self.causal, key_start=key_start)
            cache.k[:, :, :T].copy_(k)
            cache.v[:, :, :T].copy_(v)
        elif cache is not None:
            if memory is not None:
                raise ValueError("cache is for self-attention; for cross-attention pass the same memory each step")
            y = ops.rel_attention_with_kvcache(
                q, cache.k, cache.v, rel_emb, cache_seqlens=cache.seqlens, k_new=k, v_new=v, key_start=key_start
            )
        elif self.training and self.dropout > 0.0:
            y = rel_attention_with_dropout(
                q, k, v, rel_emb, dropout_p=self.dropout, causal=self.causal, key_start=key_start
            )
        else:
            y = ops.rel_attention(q, k, v, rel_emb, causal=self.causal, key_start=key_start)
        return self.out(y.transpose(1, 2).reshape(B, T, C))
