"""Token sampling without host-device synchronisation: greedy, temperature, top-k, top-p.

Sampling uses the exponential-race form of categorical sampling (argmax of p / E with E ~ Exp(1)), which needs
no cumulative sum over the vocabulary on the host and no ``.item()``; a ``torch.Generator`` makes it seedable.
"""

from __future__ import annotations

import torch

__all__ = ["sample"]


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token per row.

    Args:
        logits: ``(B, V)`` unnormalised scores.
        temperature: 0 means greedy (argmax); otherwise logits are divided by it.
        top_k: keep the k largest logits per row (None or >= V: all).
        top_p: keep the smallest set of tokens whose probability mass reaches top_p (nucleus), always >= 1 token.
        generator: random source (on logits' device) for reproducible draws.

    Returns:
        ``(B,)`` int64 token ids, on logits' device.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
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
