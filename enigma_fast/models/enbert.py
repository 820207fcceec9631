"""EnBERT: decoder-only DNA language model with relative-position attention (no absolute positions).

    h = embed(idx)                                   # (B, T, d_model)
    for each block:  h += attn_causal(norm1(h));  h += ffn(norm2(h))
    logits = lm_head(norm_f(h))                      # (B, T, vocab)

Every self-attention is causal: logits at position t depend on tokens 0..t only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from enigma_fast.models.base import DNALanguageModel, check_id_ranges, check_id_tensor
from enigma_fast.models.config import EnBERTConfig
from enigma_fast.models.decode import decode_weights
from enigma_fast.models.layers import Block, run_blocks
from enigma_fast.nn import RMSNorm

__all__ = ["EnBERT"]


class EnBERT(DNALanguageModel):
    """Decoder-only model; ``forward(idx, targets=None, key_start=None) -> (logits, loss)``."""

    config_class = EnBERTConfig

    def __init__(self, config: EnBERTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(
                c.d_model,
                c.n_head,
                c.ffn_mult,
                c.max_rel_pos,
                causal=True,
                cross=False,
                bias=c.bias,
                dropout=c.dropout,
                norm_eps=c.norm_eps,
            )
            for _ in range(c.n_layer)
        )
        self.norm_f = RMSNorm(c.d_model, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.apply(self._init_weights)
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def _check(self, idx: torch.Tensor, targets: torch.Tensor | None, key_start: torch.Tensor | None) -> None:
        """Shapes, dtypes and devices of the forward inputs, then their values (one host read; see base)."""
        dev = self._device()
        check_id_tensor("idx", idx, dev)
        B, T = idx.shape
        if targets is not None:
            check_id_tensor("targets", targets, dev, shape=(B, T))
        if key_start is not None:
            check_id_tensor("key_start", key_start, dev, dims=1, shape=(B,))
        check_id_ranges(
            [
                self._id_range("idx", idx),
                self._id_range("targets", targets, targets=True),
                self._start_range("key_start", key_start, T),
            ]
        )

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, key_start: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, T, vocab)`` for token ids ``idx`` ``(B, T)``, and the mean cross-entropy against
        ``targets`` ``(B, T)`` (``-100`` = ignore) when given. ``key_start`` ``(B,)``: left padding per row.

        Ids must lie in ``[0, vocab_size)`` and ``key_start`` in ``[0, T)``: ValueError naming the tensor, value
        and position otherwise (checked with one host read; skipped under ``torch.compile``)."""
        self._check(idx, targets, key_start)
        h = self.drop(self.tok_emb(idx))
        y = run_blocks(self.blocks, self.norm_f, h, key_start=key_start)
        logits = self.lm_head(y)
        loss = self.lm_loss(logits, targets) if targets is not None else None
        return logits, loss

    # generation hooks -------------------------------------------------------------------------------------
    def decode_weights(self) -> tuple[list[torch.Tensor], Any]:
        """The decode step's weights and geometry for ``enigma_fast.ops.decode_pack`` (the parameters, no copies)."""
        return decode_weights(self, enigma=False)

    def allocate_cache(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> dict:
        """Static caches for ``max_len`` positions: one KVCache per block, all sharing one ``seqlens`` tensor."""
        return self._layer_caches(self.config.n_layer, batch, max_len, device, dtype)

    def prefill(self, idx: torch.Tensor, key_start: torch.Tensor | None, cache: dict) -> torch.Tensor:
        """Run the prompts ``idx`` ``(B, T)`` (left-padded; ``key_start`` their first real token) into an empty
        cache; returns the logits of the last position ``(B, vocab)``."""
        h = self.tok_emb(idx)
        y = run_blocks(self.blocks, self.norm_f, h, key_start=key_start, caches=cache["layers"], prefill=True)
        cache["seqlens"].fill_(idx.shape[1])
        cache["key_start"] = key_start
        return self.lm_head(y[:, -1])

    def decode_step(self, tok: torch.Tensor, cache: dict) -> torch.Tensor:
        """One new token per row ``tok`` ``(B, 1)`` at position ``cache['seqlens']``; returns logits ``(B, vocab)``
        and advances the cache by one."""
        h = self.tok_emb(tok)
        y = run_blocks(self.blocks, self.norm_f, h, key_start=cache.get("key_start"), caches=cache["layers"])
        cache["seqlens"].add_(1)
        return self.lm_head(y[:, -1])

    def cache_length(self, prompt_len: int, max_new_tokens: int) -> int:
        """Cache positions needed to sample ``max_new_tokens`` after a ``prompt_len``-token prompt."""
        return prompt_len + max_new_tokens

    def max_new_tokens_for(self, prompt_len: int) -> int:
        """How many tokens can follow a prompt of ``prompt_len`` tokens within block_size."""
        return self.config.block_size - prompt_len
