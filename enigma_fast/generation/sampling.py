"""Token sampling without host-device synchronisation: greedy, temperature, top-k, top-p.

Sampling uses the exponential-race form of categorical sampling (argmax of p / E with E ~ Exp(1)), which needs
no cumulative sum over the vocabulary on the host and no ``.item()``; a ``torch.Generator`` makes it seedable.
``check_sampling_args`` validates the options once (the generator calls it before the prompts run, a CLI can
call it before loading anything); ``sample`` checks them on every call.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

__all__ = ["check_sampling_args", "sample"]

# 1 / temperature is capped here: beyond it float32 logits / temperature overflow to inf and the softmax to NaN
# (a temperature of 1e-39 used to give token 0 on every row). Differences of float32 logits times this cap are
# far beyond exp's range, so every temperature below 1e-30 samples exactly as greedy.
_MAX_INV_TEMPERATURE = 1e30


def _got(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _int_arg(name: str, value: Any, lo: int, hi: int | None = None, allow_none: bool = False) -> int | None:
    """``value`` as an int in ``[lo, hi)`` (``hi`` None: no upper bound); TypeError/ValueError naming ``name``."""
    if value is None and allow_none:
        return None
    rng = f"in [{lo}, {hi})" if hi is not None else f">= {lo}"
    want = f"{'None or ' if allow_none else ''}an int {rng}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {want}, got {type(value).__name__} {value!r}"[:200])
    value = int(value)
    if value < lo or (hi is not None and value >= hi):
        raise ValueError(f"{name} must be {want}, got {value}")
    return value


def check_sampling_args(
    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> tuple[float, int | None, float | None]:
    """Validate sampling options; returns them as plain ``(float, int | None, float | None)``.

    ``temperature``: a finite real number >= 0 (0 = greedy). ``top_k``: None or an int >= 1 (values >= the
    vocabulary size keep every token). ``top_p``: None or a real number in (0, 1]. A bool is never accepted as a
    number. TypeError for a wrong type, ValueError for a wrong value, one line naming the option.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a finite number >= 0, got {_got(temperature)}")
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
            raise TypeError(f"top_k must be None or an int >= 1, got {_got(top_k)}")
        top_k = int(top_k)
        if top_k < 1:
            raise ValueError(f"top_k must be None or an int >= 1, got {top_k}")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real):
            raise TypeError(f"top_p must be None or a number in (0, 1], got {_got(top_p)}")
        top_p = float(top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p}")
    return temperature, top_k, top_p


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token per row.

    Args:
        logits: ``(B, V)`` unnormalised scores (floating point).
        temperature: 0 means greedy (argmax); otherwise draw from ``softmax(logits / temperature)``.
        top_k: keep the k largest logits per row (None or >= V: all).
        top_p: keep the smallest set of tokens whose probability mass reaches top_p (nucleus), always >= 1 token.
        generator: random source (on logits' device) for reproducible draws.

    Returns:
        ``(B,)`` int64 token ids, on logits' device. Options are checked by ``check_sampling_args``.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a (B, V) floating-point tensor, got {type(logits).__name__}")
    if logits.dim() != 2 or not logits.dtype.is_floating_point or logits.shape[1] == 0:
        raise ValueError(
            f"logits must be a (B, V) floating-point tensor with V >= 1, got {logits.dtype} {tuple(logits.shape)}"
        )
    return _sample(logits, *check_sampling_args(temperature, top_k, top_p), generator)


def _sample(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None
) -> torch.Tensor:
    """``sample`` on checked options (the decode loop's per-step call)."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    # Shifting by the row maximum changes no probability and keeps the scaled logits finite for any temperature.
    logits = logits.float()
    logits = (logits - logits.amax(dim=-1, keepdim=True)) * min(1.0 / temperature, _MAX_INV_TEMPERATURE)
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the mass before it already reaches top_p (so the first token always stays)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    race = torch.empty_like(probs).exponential_(1.0, generator=generator).clamp_min_(1e-30)
    return (probs / race).argmax(dim=-1)
