"""Transformer pieces shared by EnBERT and Enigma: feed-forward, cross-attention, pre-norm blocks, and the
fused residual stream that runs a stack of blocks.

The residual stream uses ``add_rms_norm``: each residual add is fused with the norm that follows it, so
``h = h + branch; y = norm(h)`` is one pass. Each block leaves its feed-forward output ``f`` for the next one to
add (fused with that block's first norm; the last ``f`` is added by the final norm):

    f = None
    for each block i:  y, h = norm1_i(f, h);  a = attn(y);  y, h = norm2_i(a, h);  f = ffn(y)
    y, h = final_norm(f, h)

which is exactly the textbook ``h += attn(norm1(h)); h += ffn(norm2(h))`` followed by a final norm. A block
touches only its own parameters inside its own ``forward``, so a block is a unit that ``fully_shard`` (FSDP2)
can gather before and free after it runs, and that activation checkpointing can recompute on its own
(``Block.activation_checkpointing``: only the block's inputs ``(f, h)`` are kept for the backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from enigma_fast.nn import KVCache, RelativeMultiHeadAttention, RMSNorm

__all__ = ["Block", "CrossAttention", "FeedForward", "run_blocks"]


class FeedForward(nn.Module):
    """``proj(gelu(fc(x)))`` with width ``mult * d_model``; x ``(B, T, d_model)`` -> ``(B, T, d_model)``."""

    def __init__(self, d_model: int, mult: int, bias: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, mult * d_model, bias=bias)
        self.proj = nn.Linear(mult * d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class CrossAttention(nn.Module):
    """Decoder-to-encoder attention: queries from the decoder, one fused K/V projection of the encoder output.

    With ``rel_pos`` R > 0 the scores carry a learned bias per head and relative position, on the axis the
    decoder tokens share with the source (their ``q_pos``: Enigma's decoder positions)::

        s_ij = q_i . k_j / sqrt(D) + rel_bias[h, clamp(j' - q_pos_i, -R, R) + R]     j' = j - memory_start

    so a decoder token can attend to the source around its own position (the flanks of the gap it fills) without
    first learning to find it by content. The bias depends only on the two positions, so each decoder token gets the
    same result however many tokens follow it, and cached decoding is exact. R = 0: no positional term (checkpoints
    written before it existed). The encoder's K/V can be projected once (``project_memory``) and reused for every
    decoding step. Runs ``F.scaled_dot_product_attention``.

    Shapes: x ``(B, T, d_model)``; memory ``(B, S, d_model)``; memory_start ``(B,)`` first valid memory position
    (left padding of the source) or None; q_pos ``(B, T)`` (needed when R > 0).
    """

    def __init__(self, d_model: int, n_head: int, bias: bool, dropout: float, rel_pos: int = 0) -> None:
        super().__init__()
        self.n_head, self.head_dim, self.dropout = n_head, d_model // n_head, dropout
        self.q = nn.Linear(d_model, d_model, bias=bias)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.rel_pos = rel_pos
        self.rel_bias = None
        if rel_pos > 0:
            self.rel_bias = nn.Parameter(self.local_bias(n_head, rel_pos))

    @staticmethod
    def local_bias(n_head: int, rel_pos: int) -> torch.Tensor:
        """The starting bias ``(H, 2R+1)``: head h peaks at offset c_h = 0, -1, +1, -2, +2, ... (clamped to
        [-R, R]) and falls by 2 per position away from it, so the heads first read the source at the decoder
        token's position and just before and after it (the flanks of its gap); learned from there."""
        h = torch.arange(n_head)
        centre = (((h + 1) // 2) * torch.where(h % 2 == 1, -1, 1)).clamp(-rel_pos, rel_pos).float()
        offsets = torch.arange(-rel_pos, rel_pos + 1, dtype=torch.float32)
        return -2.0 * (offsets[None, :] - centre[:, None]).abs()

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of the encoder output, each ``(B, H, S, D)``."""
        B, S, _ = memory.shape
        kv = self.kv(memory).view(B, S, 2, self.n_head, self.head_dim)
        return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_start: torch.Tensor | None = None,
        q_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        k, v = memory_kv
        q = self.q(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        mask = None
        if memory_start is not None:
            pos = torch.arange(k.shape[2], device=x.device)
            mask = (pos[None, :] >= memory_start[:, None]).view(B, 1, 1, -1)
        if self.rel_bias is not None:
            if q_pos is None:
                raise ValueError("cross-attention with a relative-position bias needs q_pos (B, T)")
            kpos = torch.arange(k.shape[2], device=x.device).expand(B, -1)
            if memory_start is not None:
                kpos = kpos - memory_start[:, None].long()
            rel = (kpos[:, None, :] - q_pos.long()[:, :, None]).clamp(-self.rel_pos, self.rel_pos) + self.rel_pos
            bias = self.rel_bias[:, rel].permute(1, 0, 2, 3).to(q.dtype)  # (B, H, T, S)
            if mask is not None:
                bias = bias.masked_fill(~mask, float("-inf"))
            mask = bias
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-norm transformer block: relative self-attention, optional cross-attention, GELU feed-forward."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        ffn_mult: int,
        max_rel_pos: int,
        *,
        causal: bool,
        cross: bool,
        bias: bool,
        dropout: float,
        norm_eps: float,
        cross_rel_pos: int = 0,
    ) -> None:
        super().__init__()
        self.norm1 = RMSNorm(d_model, eps=norm_eps)
        self.attn = RelativeMultiHeadAttention(d_model, n_head, max_rel_pos, causal, bias=bias, dropout=dropout)
        self.norm_cross = RMSNorm(d_model, eps=norm_eps) if cross else None
        self.cross = CrossAttention(d_model, n_head, bias, dropout, cross_rel_pos) if cross else None
        self.norm2 = RMSNorm(d_model, eps=norm_eps)
        self.ffn = FeedForward(d_model, ffn_mult, bias)
        self.drop = nn.Dropout(dropout)
        # recompute this block's activations in the backward instead of keeping them (training only)
        self.activation_checkpointing = False

    def forward(
        self,
        f: torch.Tensor | None,
        h: torch.Tensor,
        *,
        key_start: torch.Tensor | None = None,
        cache: KVCache | None = None,
        prefill: bool = False,
        memory: torch.Tensor | None = None,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory_start: torch.Tensor | None = None,
        cross_pos: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block on the residual stream ``h`` ``(B, T, d_model)`` whose previous block left the branch output
        ``f`` ``(B, T, d_model)`` (None for the first block) still to be added:

            h = h + f;  h = h + attn(norm1(h));  [h = h + cross(norm_cross(h), memory)];  return ffn(norm2(h)), h

        Cross-attention reads ``memory_kv`` (K, V ``(B, H, S, D)`` projected once, for cached decoding) or else
        projects ``memory`` ``(B, S, d_model)`` here. With ``activation_checkpointing`` and gradients enabled (and no
        cache), the block runs under non-reentrant ``torch.utils.checkpoint``: same results and gradients, only
        ``(f, h)`` kept for the backward.
        """
        kw = dict(
            key_start=key_start,
            cache=cache,
            prefill=prefill,
            memory=memory,
            memory_kv=memory_kv,
            memory_start=memory_start,
            cross_pos=cross_pos,
        )
        if self.activation_checkpointing and cache is None and torch.is_grad_enabled():
            return checkpoint(self._forward, f, h, use_reentrant=False, **kw)
        return self._forward(f, h, **kw)

    def _forward(
        self,
        f: torch.Tensor | None,
        h: torch.Tensor,
        *,
        key_start: torch.Tensor | None,
        cache: KVCache | None,
        prefill: bool,
        memory: torch.Tensor | None,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None,
        memory_start: torch.Tensor | None,
        cross_pos: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y, h = (self.norm1(h), h) if f is None else self.norm1(f, h)
        a = self.drop(self.attn(y, key_start=key_start, cache=cache, prefill=prefill))
        if self.cross is not None:
            y, h = self.norm_cross(a, h)
            kv = memory_kv if memory_kv is not None else self.cross.project_memory(memory)
            a = self.drop(self.cross(y, kv, memory_start, cross_pos))
        y, h = self.norm2(a, h)
        return self.drop(self.ffn(y)), h


def run_blocks(
    blocks: nn.ModuleList,
    final_norm: RMSNorm,
    h: torch.Tensor,
    *,
    key_start: torch.Tensor | None = None,
    caches: list[KVCache] | None = None,
    prefill: bool = False,
    memory: torch.Tensor | None = None,
    memory_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    memory_start: torch.Tensor | None = None,
    cross_pos: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the residual stream ``h`` ``(B, T, d_model)`` through ``blocks`` and the final norm.

    ``caches`` (one per block) make self-attention append to and read from static KV caches: ``prefill`` for
    the prompt (fused prefill attention, keys/values written at positions 0..T-1), otherwise a decode step at
    ``caches[i].seqlens``. Cross-attention reads ``memory`` ``(B, S, d_model)`` (each block projects its own K/V)
    or ``memory_kv`` (one (K, V) per block, projected once); ``cross_pos`` ``(B, T)`` gives its queries' positions
    (for a relative-position bias). Returns the final normalised states ``(B, T, d_model)``.
    """
    f = None
    for i, blk in enumerate(blocks):
        f, h = blk(
            f,
            h,
            key_start=key_start,
            cache=caches[i] if caches is not None else None,
            prefill=prefill,
            memory=memory,
            memory_kv=memory_kv[i] if memory_kv is not None else None,
            memory_start=memory_start,
            cross_pos=cross_pos,
        )
    y, _ = final_norm(f, h)
    return y
