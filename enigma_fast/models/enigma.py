"""Enigma: encoder-decoder DNA language model (token + learned absolute positions, relative attention).

Two ways to make (source, target) pairs of a window of DNA:

* continuation (``split_window``): the source is the window's first part, the target its continuation;
* span corruption (``span_corrupt``, T5-style): spans of the window are replaced in the source by sentinels
  ``<mask_0>``, ``<mask_1>``, ...; the target is each sentinel followed by its span, then ``<eos>``. A model trained
  so fills gaps from both flanks (``infill``).

Positions run on across source and target: source token s sits at s, target token t at src_len + t, so
``src_len + tgt_len <= block_size``. Left padding of the source (``src_start``) shifts positions so that padding
changes no result.

    memory = encoder(embed(src) + pos(src))                          bidirectional relative self-attention
    h      = embed(tgt_in) + pos(src_len + t)
    for each decoder block: h += attn_causal(norm(h)); h += cross(norm(h), memory); h += ffn(norm(h))
    logits = lm_head(norm_f(h))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from enigma_fast.generation import infill as _infill
from enigma_fast.models.base import IGNORE_INDEX, DNALanguageModel, IdRange, check_id_ranges, check_id_tensor
from enigma_fast.models.config import EnigmaConfig
from enigma_fast.models.layers import Block, run_blocks
from enigma_fast.nn import RMSNorm

__all__ = ["Enigma", "SpanBatch"]


class SpanBatch(NamedTuple):
    """A span-corrupted batch (``Enigma.span_corrupt``): ``src`` ``(B, S)``, ``src_start`` ``(B,)`` or None,
    ``tgt_in``, ``targets`` and ``tgt_pos`` ``(B, T)``; ``model(src, tgt_in, targets, src_start, tgt_pos)``."""

    src: torch.Tensor
    src_start: torch.Tensor | None
    tgt_in: torch.Tensor
    targets: torch.Tensor
    tgt_pos: torch.Tensor


class Enigma(DNALanguageModel):
    """Encoder-decoder model; ``forward(src, tgt_in, targets=None, src_start=None) -> (logits, loss)``."""

    config_class = EnigmaConfig

    def __init__(self, config: EnigmaConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_emb = nn.Embedding(c.block_size, c.d_model)
        self.drop = nn.Dropout(c.dropout)

        def blocks(n: int, decoder: bool) -> nn.ModuleList:
            return nn.ModuleList(
                Block(
                    c.d_model,
                    c.n_head,
                    c.ffn_mult,
                    c.max_rel_pos,
                    causal=decoder,
                    cross=decoder,
                    bias=c.bias,
                    dropout=c.dropout,
                    norm_eps=c.norm_eps,
                    cross_rel_pos=c.cross_rel_pos if decoder else 0,
                )
                for _ in range(n)
            )

        self.encoder = blocks(c.n_encoder_layer, decoder=False)
        self.enc_norm = RMSNorm(c.d_model, eps=c.norm_eps)
        self.decoder = blocks(c.n_decoder_layer, decoder=True)
        self.norm_f = RMSNorm(c.d_model, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.apply(self._init_weights)
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    # ------------------------------------------------------------------------------------------------------
    @staticmethod
    def split_window(
        window: torch.Tensor, src_len: int, bos_id: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split token windows ``(B, L)`` into ``src = window[:, :src_len]``, ``tgt_in = [bos] +
        window[:, src_len:-1]`` and ``targets = window[:, src_len:]`` (teacher forcing)."""
        check_id_tensor("window", window)
        if isinstance(src_len, bool) or not isinstance(src_len, int) or not 0 < src_len < window.shape[1]:
            raise ValueError(f"src_len must be an int in (0, {window.shape[1]}), got {src_len!r}")
        src, targets = window[:, :src_len], window[:, src_len:]
        bos = torch.full_like(targets[:, :1], bos_id)
        return src, torch.cat([bos, targets[:, :-1]], dim=1), targets

    @staticmethod
    def span_corrupt(
        window: torch.Tensor,
        mask: torch.Tensor,
        sentinel_ids: Sequence[int] | torch.Tensor,
        bos_id: int,
        eos_id: int,
        pad_id: int,
    ) -> SpanBatch:
        """Span corruption of token windows ``(B, L)`` by ``mask`` ``(B, L)`` bool (True = cut out).

        A span is a maximal run of True; span j of a row (left to right) gets sentinel ``sentinel_ids[j]``::

            window  a b [c d] e [f] g          (spans in brackets)
            src     a b <mask_0> e <mask_1> g  kept tokens, one sentinel in place of each span
            targets <mask_0> c d <mask_1> f <eos>
            tgt_in  <bos> <mask_0> c d <mask_1> f
            tgt_pos 2     2        2 2 4        4      (source position of the span's sentinel)

        Every token of the window is in the source or in a span, never both. Returns a ``SpanBatch``: ``src``
        ``(B, S)`` left-padded with ``pad_id`` (``src_start`` ``(B,)`` its first real position, None when every row
        has the same length), ``tgt_in`` and ``targets`` ``(B, T)`` right-padded with ``pad_id`` and
        ``IGNORE_INDEX``, and ``tgt_pos`` ``(B, T)`` (0 on padding): each decoder input sits at the (unpadded)
        source position of the sentinel of the span it belongs to (``<bos>`` at that of ``<mask_0>``), so every
        decoder token carries the place of the gap it writes, known before its prediction is made (as infilling
        needs). ValueError when a row has more spans than ``sentinel_ids``.
        """
        check_id_tensor("window", window)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != window.shape:
            raise ValueError(
                f"mask must be a bool tensor of the window's shape {tuple(window.shape)}, got "
                f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}"
            )
        B, L = window.shape
        dev = window.device
        window = window.long()
        sent = torch.as_tensor(sentinel_ids, dtype=torch.long, device=dev).reshape(-1)
        prev = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)
        start = mask & ~prev  # (B, L) first token of each span
        n_spans = start.sum(1)
        most = int(n_spans.max()) if B else 0
        if most > sent.numel():
            raise ValueError(f"mask has {most} spans in a row but only {sent.numel()} sentinel ids were given")
        span_idx = (start.cumsum(1) - 1).clamp_min(0)
        sent_at = sent[span_idx] if sent.numel() else torch.zeros_like(window)  # (B, L) sentinel of each position
        rows = torch.arange(B, device=dev)[:, None]

        def compact(tokens: torch.Tensor, keep: torch.Tensor, fill: int, left: bool) -> tuple[torch.Tensor, ...]:
            n = keep.sum(1)
            width = int(n.max()) if B else 0
            pos = keep.cumsum(1) - 1 + ((width - n)[:, None] if left else 0)
            out = torch.full((B, width), fill, dtype=torch.long, device=dev)
            out[rows.expand_as(keep)[keep], pos[keep]] = tokens[keep]
            return out, n

        keep_src = ~mask | start
        src, src_n = compact(torch.where(start, sent_at, window), keep_src, pad_id, left=True)
        sp = keep_src.long().cumsum(1) - 1  # source position of each window position (masked: its sentinel's)
        # target slots: (sentinel if a span starts here, the token if it is masked) per position, then <eos>
        t_tok = torch.stack([sent_at, window], dim=2).reshape(B, 2 * L)
        t_keep = torch.stack([start, mask], dim=2).reshape(B, 2 * L)
        t_pos = torch.stack([sp, sp], dim=2).reshape(B, 2 * L)
        t_tok = torch.cat([t_tok, torch.full((B, 1), eos_id, dtype=torch.long, device=dev)], dim=1)
        t_keep = torch.cat([t_keep, torch.ones((B, 1), dtype=torch.bool, device=dev)], dim=1)
        t_pos = torch.cat([t_pos, torch.zeros((B, 1), dtype=torch.long, device=dev)], dim=1)
        targets, _ = compact(t_tok, t_keep, IGNORE_INDEX, left=False)
        pos_of_target, _ = compact(t_pos, t_keep, 0, left=False)  # the span each target belongs to
        first = pos_of_target[:, :1] * (n_spans[:, None] > 0)
        tgt_pos = torch.cat([first, pos_of_target[:, :-1]], dim=1)  # the span each input belongs to
        tgt_in = torch.cat([torch.full((B, 1), bos_id, dtype=torch.long, device=dev), targets[:, :-1]], dim=1)
        pad = (tgt_in == IGNORE_INDEX) | (targets == IGNORE_INDEX)
        tgt_in = tgt_in.masked_fill(pad, pad_id)
        tgt_pos = tgt_pos.masked_fill(pad, 0)
        src_start = None
        if B and bool((src_n != src.shape[1]).any()):
            src_start = src.shape[1] - src_n
        return SpanBatch(src, src_start, tgt_in, targets, tgt_pos)

    def _src_len(self, src: torch.Tensor, src_start: torch.Tensor | None) -> torch.Tensor:
        S = src.shape[1]
        full = torch.full((src.shape[0],), S, dtype=torch.long, device=src.device)
        return full if src_start is None else full - src_start.long()

    def encode(self, src: torch.Tensor, src_start: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output ``(B, S, d_model)`` for source ids ``(B, S)`` left-padded up to ``src_start`` ``(B,)``
        (inputs checked as in ``forward``)."""
        dev = self._device()
        check_id_tensor("src", src, dev)
        if src_start is not None:
            check_id_tensor("src_start", src_start, dev, dims=1, shape=(src.shape[0],))
        if src.shape[1] > self.config.block_size:
            raise ValueError(f"source length {src.shape[1]} exceeds block_size {self.config.block_size}")
        check_id_ranges([self._id_range("src", src), self._start_range("src_start", src_start, src.shape[1])])
        return self._encode(src, src_start)

    def _encode(self, src: torch.Tensor, src_start: torch.Tensor | None) -> torch.Tensor:
        B, S = src.shape
        pos = torch.arange(S, device=src.device).expand(B, S)
        if src_start is not None:
            pos = (pos - src_start[:, None].long()).clamp_min(0)
        h = self.drop(self.tok_emb(src) + self.pos_emb(pos))
        return run_blocks(self.encoder, self.enc_norm, h, key_start=src_start)

    def forward(
        self,
        src: torch.Tensor,
        tgt_in: torch.Tensor,
        targets: torch.Tensor | None = None,
        src_start: torch.Tensor | None = None,
        tgt_pos: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoder logits ``(B, T, vocab)`` for source ``(B, S)`` and decoder input ``(B, T)`` (teacher forcing),
        and the mean cross-entropy against ``targets`` ``(B, T)`` (``-100`` = ignore) when given. ``src_start``
        ``(B,)``: left padding of each source row. ``tgt_pos`` ``(B, T)``: the absolute position of each decoder
        input (span corruption: the source position of its span's sentinel, see ``span_corrupt``); None = the
        continuation's ``src_len + t``.

        Ids must lie in ``[0, vocab_size)`` and ``src_start`` in ``[0, S)``: ValueError naming the tensor, value
        and position otherwise (checked with one host read; skipped under ``torch.compile``)."""
        dev = self._device()
        check_id_tensor("src", src, dev)
        B, S = src.shape
        check_id_tensor("tgt_in", tgt_in, dev, shape=(B, None))
        if targets is not None:
            check_id_tensor("targets", targets, dev, shape=tuple(tgt_in.shape))
        if src_start is not None:
            check_id_tensor("src_start", src_start, dev, dims=1, shape=(B,))
        if tgt_pos is not None:
            check_id_tensor("tgt_pos", tgt_pos, dev, shape=tuple(tgt_in.shape))
            if S > self.config.block_size:
                raise ValueError(f"source length {S} exceeds block_size {self.config.block_size}")
        elif S + tgt_in.shape[1] > self.config.block_size:
            raise ValueError(
                f"source + target length {S} + {tgt_in.shape[1]} exceeds block_size {self.config.block_size}"
            )
        P = self.config.block_size
        check_id_ranges(
            [
                self._id_range("src", src),
                self._id_range("tgt_in", tgt_in),
                self._id_range("targets", targets, targets=True),
                self._start_range("src_start", src_start, S),
                IdRange("tgt_pos", tgt_pos, 0, P, f"positions in [0, block_size={P})"),
            ]
        )
        memory = self._encode(src, src_start)
        if tgt_pos is None:
            tgt_pos = self._src_len(src, src_start)[:, None] + torch.arange(tgt_in.shape[1], device=dev)[None, :]
        h = self.drop(self.tok_emb(tgt_in) + self.pos_emb(tgt_pos.long()))
        y = run_blocks(self.decoder, self.norm_f, h, memory=memory, memory_start=src_start, cross_pos=tgt_pos)
        logits = self.lm_head(y)
        loss = self.lm_loss(logits, targets) if targets is not None else None
        return logits, loss

    # generation hooks ---------------------------------------------------------------------------------------
    def allocate_cache(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> dict:
        """Decoder self-attention caches for ``max_len`` target tokens (the bos included), one per block,
        sharing one ``seqlens`` tensor."""
        return self._layer_caches(self.config.n_decoder_layer, batch, max_len, device, dtype)

    def prefill(
        self, idx: torch.Tensor, key_start: torch.Tensor | None, cache: dict, bos_pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode the prompts ``idx`` ``(B, S)`` once (cross-attention K/V kept in the cache), run the decoder on
        the bos token (at position ``bos_pos`` ``(B,)``, default the source length); returns the logits of the
        first target token ``(B, vocab)``."""
        if idx.shape[1] > self.config.block_size:
            raise ValueError(f"source length {idx.shape[1]} exceeds block_size {self.config.block_size}")
        memory = self._encode(idx, key_start)
        cache["memory_kv"] = [blk.cross.project_memory(memory) for blk in self.decoder]
        cache["memory_start"] = key_start
        cache["first_pos"] = self._src_len(idx, key_start)
        bos = torch.full((idx.shape[0], 1), self.config.bos_id, dtype=idx.dtype, device=idx.device)
        pos = (cache["first_pos"] if bos_pos is None else bos_pos.long())[:, None]  # (B, 1)
        h = self.drop(self.tok_emb(bos) + self.pos_emb(pos))
        y = run_blocks(
            self.decoder,
            self.norm_f,
            h,
            caches=cache["layers"],
            prefill=True,
            memory_kv=cache["memory_kv"],
            memory_start=key_start,
            cross_pos=pos,
        )
        cache["seqlens"].fill_(1)
        return self.lm_head(y[:, -1])

    def decode_step(self, tok: torch.Tensor, cache: dict, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Feed one token per row ``(B, 1)`` (at absolute position ``pos`` ``(B,)``, default the next one after the
        source); returns the next logits ``(B, vocab)`` and advances the cache."""
        if pos is None:
            pos = cache["first_pos"] + cache["seqlens"].long()
        pos = pos.long()[:, None]  # (B, 1)
        h = self.drop(self.tok_emb(tok) + self.pos_emb(pos))
        y = run_blocks(
            self.decoder,
            self.norm_f,
            h,
            caches=cache["layers"],
            memory_kv=cache["memory_kv"],
            memory_start=cache["memory_start"],
            cross_pos=pos,
        )
        cache["seqlens"].add_(1)
        return self.lm_head(y[:, -1])

    def cache_length(self, prompt_len: int, max_new_tokens: int) -> int:
        """Decoder cache positions needed for ``max_new_tokens`` (the bos takes one more)."""
        return max_new_tokens + 1

    def max_new_tokens_for(self, prompt_len: int) -> int:
        """How many tokens can follow a prompt of ``prompt_len`` tokens within block_size (bos excluded)."""
        return self.config.block_size - prompt_len - 1

    def infill(self, text: Any, num_samples: int = 1, **kwargs: Any) -> list[list[str]]:
        """Fill the gaps of ``text`` with the attached tokenizer (a model trained with span corruption); see
        :func:`enigma_fast.generation.infill` for the arguments, the gap syntax and the result."""
        if self.tokenizer is None:
            raise ValueError("infill needs the model's tokenizer (model.tokenizer, set by from_pretrained)")
        return _infill(self, self.tokenizer, text, num_samples=num_samples, **kwargs)
