"""What EnBERT and Enigma share: weight init, loss, input checks, checkpoint folders and the ``generate`` entry
point.

Input checks: token id tensors must be ``(B, T)`` int32/int64 on the model's device (ValueError otherwise, no
host sync), and their values in ``[0, vocab_size)``: one min/max reduction per tensor and a single host read for
all of them per call (``check_id_ranges``), skipped while ``torch.compile`` traces (compiled code keeps
inductor's own index asserts). A bad id raises a one-line ValueError naming the tensor, the range, the value and
its position, instead of ``IndexError: index out of range in self`` (or a device-side assert on CUDA).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from enigma_fast import tokenizers
from enigma_fast.models import checkpoint
from enigma_fast.nn import KVCache

__all__ = ["IGNORE_INDEX", "DNALanguageModel", "IdRange", "check_id_ranges", "check_id_tensor"]

IGNORE_INDEX = -100  # targets with this value are left out of the loss


def check_id_tensor(
    name: str, t: Any, device: torch.device | None = None, *, dims: int = 2, shape: Sequence[int | None] | None = None
) -> None:
    """Check (without reading values) that ``t`` is an int32/int64 tensor of ``dims`` dimensions on ``device``
    whose sizes match ``shape`` (None = any size there). TypeError for a non-tensor, ValueError otherwise."""
    want = "(B, T)" if dims == 2 else "(B,)"
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a {want} int32/int64 tensor, got {type(t).__name__}")
    if t.dim() != dims or t.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be a {want} int32/int64 tensor, got {t.dtype} {tuple(t.shape)}")
    if shape is not None and any(w is not None and w != g for w, g in zip(shape, t.shape, strict=True)):
        expect = "(" + ", ".join("*" if w is None else str(w) for w in shape) + (",)" if dims == 1 else ")")
        raise ValueError(f"{name} must be {want} = {expect}, got {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the model is on {device}")


class IdRange(NamedTuple):
    """One check for ``check_id_ranges``: every element of ``t`` in ``[lo, hi)`` or equal to ``ignore``;
    ``what`` describes the range in the error message. ``t`` None or empty: nothing to check."""

    name: str
    t: torch.Tensor | None
    lo: int
    hi: int
    what: str
    ignore: int | None = None


def check_id_ranges(checks: Sequence[IdRange]) -> None:
    """Check the value ranges of several tensors with one ``aminmax`` each and one host read for all; nothing
    while ``torch.compile`` traces. Raises a one-line ValueError naming the first bad value and its position."""
    if torch.compiler.is_compiling():
        return
    todo = []
    for c in checks:
        if c.t is None or not c.t.numel():
            continue
        t = c.t if c.ignore is None else c.t.masked_fill(c.t == c.ignore, c.lo)
        todo.append((c, t))
    if not todo:
        return
    stats = torch.stack([m.long() for _, t in todo for m in torch.aminmax(t)]).tolist()
    for j, (c, t) in enumerate(todo):
        if stats[2 * j] < c.lo or stats[2 * j + 1] >= c.hi:
            pos = tuple(((t < c.lo) | (t >= c.hi)).nonzero()[0].tolist())
            where = ", ".join(map(str, pos))
            raise ValueError(f"{c.name} must hold {c.what}, got {int(t[pos])} at {c.name}[{where}]")


class DNALanguageModel(nn.Module):
    """Base class: seed-style init (normal(0, 0.02) weights, zero biases), cross-entropy loss, save/load.

    Subclasses set ``config_class`` and implement ``forward`` plus the generation hooks ``allocate_cache``,
    ``prefill`` and ``decode_step`` that :mod:`enigma_fast.generation` drives.
    """

    config_class: ClassVar[type]
    tokenizer: Any = None  # set by from_pretrained when the folder holds tokenizer.json

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @staticmethod
    def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) over targets != ignore_index; logits ``(B, T, V)``, targets
        ``(B, T)``."""
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1).long(), ignore_index=ignore_index
        )

    def num_parameters(self) -> int:
        """Number of distinct parameters (a tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute every transformer block's activations during the backward instead of keeping them
        (non-reentrant ``torch.utils.checkpoint`` per block): a block then keeps only its inputs, two
        ``(B, T, d_model)`` tensors, at the cost of a second forward of each block. Results and gradients are
        unchanged; generation and ``torch.no_grad`` are unaffected."""
        from enigma_fast.models.layers import Block

        for m in self.modules():
            if isinstance(m, Block):
                m.activation_checkpointing = bool(enabled)

    def _device(self) -> torch.device:
        return self.tok_emb.weight.device

    def _id_range(self, name: str, t: torch.Tensor | None, targets: bool = False) -> IdRange:
        """Token ids of ``t`` in ``[0, vocab_size)`` (targets: or ``IGNORE_INDEX``)."""
        V = self.config.vocab_size
        if targets:
            return IdRange(name, t, 0, V, f"token ids in [0, vocab_size={V}) or {IGNORE_INDEX}", IGNORE_INDEX)
        return IdRange(name, t, 0, V, f"token ids in [0, vocab_size={V})")

    @staticmethod
    def _start_range(name: str, t: torch.Tensor | None, length: int) -> IdRange:
        """Left-padding starts ``t`` ``(B,)`` in ``[0, length)``: at least one real token per row."""
        return IdRange(name, t, 0, length, f"left-padding starts in [0, {length}) (at least one real token per row)")

    # -------------------------------------------------------------------------------------------------------
    # checkpoints
    # -------------------------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, tokenizer: Any = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and (given or attached) ``tokenizer.json`` to folder ``path``,
        atomically. No pickle is involved."""
        tok = tokenizer if tokenizer is not None else self.tokenizer
        return checkpoint.save_state(self, self.config.to_dict(), path, tok)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
    ) -> DNALanguageModel:
        """Build the model from ``path/config.json`` (validated by ``config_class.from_dict``: a wrong field type
        or value in the file raises a one-line ValueError naming the file and the field) and load
        ``path/model.safetensors``
        (errors list every missing, unexpected or mis-shaped tensor); attaches ``path/tokenizer.json`` as
        ``model.tokenizer``."""
        raw = checkpoint.read_config(path)
        try:
            config = cls.config_class.from_dict(raw)
        except (TypeError, ValueError) as err:  # one line: the file, then the field, expected and got
            raise ValueError(f"{Path(path) / checkpoint.CONFIG_NAME}: {err}") from None
        model = cls(config)
        checkpoint.load_state(model, path)
        tok_file = Path(path) / checkpoint.TOKENIZER_NAME
        if tok_file.is_file():
            model.tokenizer = tokenizers.from_file(str(tok_file))
        model.to(device=device, dtype=dtype)
        return model.eval()

    # -------------------------------------------------------------------------------------------------------
    # generation
    # -------------------------------------------------------------------------------------------------------
    def _layer_caches(self, n_layer: int, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> dict:
        """``n_layer`` static KV caches of ``max_len`` positions sharing one ``seqlens`` ``(batch,)`` tensor."""
        c = self.config
        seqlens = torch.zeros(batch, dtype=torch.int32, device=device)
        caches = []
        for _ in range(n_layer):
            kv = KVCache.allocate(batch, c.n_head, max_len, c.head_dim, dtype=dtype, device=device)
            kv.seqlens = seqlens
            caches.append(kv)
        return {"layers": caches, "seqlens": seqlens}

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` after the prompts ``idx`` ``(B, T)`` with the KV-cached generator; returns
        ``(B, T + max_new_tokens)``: the prompts followed by the new tokens. Other keyword arguments
        (``prompt_lengths``, ``eos_id``, ``seed``, ``compile``, ``vocab``: by default only tokens made of the letters
        the model was trained on) are those of :func:`enigma_fast.generation.generate`."""
        from enigma_fast.generation import generate  # the generator is built on the models, not the reverse

        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, **kwargs)
