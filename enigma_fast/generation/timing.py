"""Timed generation: the prefill and the decode steps measured apart (``generate --benchmark``, the benchmarks).

The first token comes out of the prefill (prompts through the model, the first sampling); every later token is one
decode step. ``timed_generate`` runs :func:`enigma_fast.generation.stream` and reads the clock at the first token
and at the end, synchronising the device there (two host reads for the whole run, none per token).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from enigma_fast.generation.generator import stream

__all__ = ["GenerationTiming", "timed_generate"]


@dataclass(frozen=True)
class GenerationTiming:
    """Times of one generation: ``prefill_s`` (setup, prompts through the model, first token), ``decode_s`` (the
    ``steps`` decode steps after it), for ``batch`` rows of ``prompt_len`` prompt tokens."""

    batch: int
    prompt_len: int
    steps: int
    prefill_s: float
    decode_s: float

    @property
    def new_tokens(self) -> int:
        return self.batch * (self.steps + 1)

    @property
    def tokens_per_s(self) -> float:
        """New tokens per second over the whole run (prefill included)."""
        return self.new_tokens / (self.prefill_s + self.decode_s)

    @property
    def decode_tokens_per_s(self) -> float:
        """New tokens per second of the decode steps alone."""
        return self.batch * self.steps / self.decode_s if self.steps else float("nan")

    @property
    def prefill_us_per_token(self) -> float:
        """Prefill time per prompt token (all rows), in microseconds."""
        return 1e6 * self.prefill_s / (self.batch * self.prompt_len)

    @property
    def decode_us_per_step(self) -> float:
        """Time of one decode step (one new token for every row), in microseconds."""
        return 1e6 * self.decode_s / self.steps if self.steps else float("nan")

    def summary(self) -> str:
        """One line: tokens/s, prefill per prompt token, decode per step."""
        return (
            f"{self.new_tokens} new tokens in {self.prefill_s + self.decode_s:.3f} s: {self.tokens_per_s:.1f} tokens/s "
            f"(batch {self.batch}); prefill {1e3 * self.prefill_s:.1f} ms = {self.prefill_us_per_token:.1f} us per "
            f"prompt token; decode {self.decode_tokens_per_s:.1f} tokens/s = {self.decode_us_per_step:.1f} us per step"
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_generate(
    model: Any, idx: torch.Tensor, max_new_tokens: int, **kwargs: Any
) -> tuple[torch.Tensor, GenerationTiming]:
    """:func:`enigma_fast.generation.generate` with the prefill and the decode steps timed apart; returns the
    ``(B, T + n)`` tokens and a :class:`GenerationTiming`. Keyword arguments are ``generate``'s."""
    _sync(idx.device)
    t0 = time.perf_counter()
    it = stream(model, idx, max_new_tokens, **kwargs)
    first = next(it)
    _sync(idx.device)
    t1 = time.perf_counter()
    rest = list(it)
    _sync(idx.device)
    t2 = time.perf_counter()
    new = torch.stack([first, *rest], dim=1)
    timing = GenerationTiming(idx.shape[0], idx.shape[1], len(rest), t1 - t0, t2 - t1)
    return torch.cat([idx.long(), new.long()], dim=1), timing
