"""Which token ids generation and infilling may emit.

A tokenizer reads every DNA/IUPAC letter in either case (its lossless fallback alphabet), but a model writes
what it was trained to write. By default the sampler keeps only the ids whose letters are all among the letters
of the training data (``tokenizer.trained_letters``, recorded by the trainer in tokenizer.json; the four bases
A/C/G/T for folders written before the record existed); ``vocab="full"`` allows every piece and fallback token of
the tokenizer; a ``(vocab_size,)`` bool tensor is a mask of the caller's. Special tokens and sentinels are never
emitted (except the ``eos_id`` a caller asks generation to stop on). The mask is built once per call, on the
device, and applied to the logits before sampling (``logits.masked_fill(~mask, -inf)``): no host read in the
decode loop, the same for every row of a batch, and compatible with greedy, temperature, top-k and top-p (which
then act on the allowed ids only).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["VOCAB_CHOICES", "emit_mask"]

VOCAB_CHOICES = ("trained", "full")


def emit_mask(
    tokenizer: Any, vocab: str | torch.Tensor, vocab_size: int, device: torch.device, keep: Iterable[int] = ()
) -> torch.Tensor | None:
    """The ``(vocab_size,)`` bool mask of the ids a sampler may emit, on ``device``; None = every id.

    Args:
        tokenizer: the model's tokenizer, or None (a model built in code without one: its ids have no names, so a
            string ``vocab`` restricts nothing and None is returned).
        vocab: ``"trained"`` (ids made of ``tokenizer.trained_letters``), ``"full"`` (every piece and fallback
            token), or a ``(vocab_size,)`` bool tensor (True = may be emitted).
        vocab_size: the model's vocabulary size V (ids ``>= tokenizer.vocab_size`` are never allowed by a string).
        device: where the mask goes (the logits' device).
        keep: ids allowed whatever ``vocab`` says (the ``eos_id`` generation stops on).

    Raises:
        TypeError / ValueError, one line naming ``vocab``: another value, a tensor of another shape or dtype, or a
        mask that allows no id.
    """
    if isinstance(vocab, torch.Tensor):
        if vocab.dtype != torch.bool or vocab.shape != (vocab_size,):
            raise ValueError(
                f"vocab must be 'trained', 'full' or a ({vocab_size},) bool tensor, got {vocab.dtype} "
                f"{tuple(vocab.shape)}"
            )
        mask = vocab.to(device=device, copy=True)
    elif isinstance(vocab, str) and vocab in VOCAB_CHOICES:
        if tokenizer is None:
            return None
        mask = tokenizer.output_mask(vocab_size, full_vocab=vocab == "full").to(device=device, copy=True)
    else:
        shown = f"{type(vocab).__name__} {vocab!r}"[:80]
        raise TypeError(f"vocab must be 'trained', 'full' or a ({vocab_size},) bool tensor, got {shown}")
    for i in keep:
        mask[i] = True
    if not bool(mask.any()):  # once per call, before any sampling
        raise ValueError(f"vocab allows no token id of the model's {vocab_size}")
    return mask
