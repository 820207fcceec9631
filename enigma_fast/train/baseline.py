"""Order-k Markov baseline: the bits per base a context-counting model reaches on the same split.

For an order k the probability of base ``x`` after the k bases ``c`` is the add-one (Laplace) estimate fitted on
the training part::

    p(x | c) = (count(c, x) + alpha) / (count(c) + 4 alpha)        alpha = 1

and its held-out cost is the mean of ``-log2 p(x | c)`` over held-out positions. Every order in ``orders`` is
fitted and scored on the same held-out positions (those with at least ``max(orders)`` bases of context inside
their segment); the best one is the baseline. Contexts never cross a segment boundary or an N.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MarkovResult", "base_codes", "markov_baseline"]

logger = logging.getLogger(__name__)

_CODE = np.full(256, 255, dtype=np.uint8)
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _i
    _CODE[_b + 32] = _i  # lower case


@dataclass(frozen=True)
class MarkovResult:
    """``bits[k]``: held-out bits/base of the order-k model; ``best_order`` the order with the fewest."""

    bits: dict[int, float]
    best_order: int
    positions: int

    @property
    def best_bits(self) -> float:
        return self.bits[self.best_order]


def base_codes(pieces: Iterable[str | bytes]) -> np.ndarray:
    """Concatenate DNA strings into codes A0 C1 G2 T3 (either case), every other byte and every boundary
    between pieces as 255, so no context spans two pieces. Returns ``(N,)`` uint8."""
    parts = []
    for p in pieces:
        b = p.encode("latin-1") if isinstance(p, str) else bytes(p)
        parts.append(_CODE[np.frombuffer(b, dtype=np.uint8)])
        parts.append(np.full(1, 255, dtype=np.uint8))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)


def _runs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes with non-bases as 0 (int64), and the number of bases in a row ending at each position."""
    valid = codes != 255
    last_bad = np.maximum.accumulate(np.where(~valid, np.arange(len(codes)), -1))
    return np.where(valid, codes, 0).astype(np.int64), np.arange(len(codes)) - last_bad


def _extend(ids: np.ndarray, c: np.ndarray, k: int) -> None:
    """Turn order-(k-1) ids (c[i] + 4 c[i-1] + ... + 4^(k-1) c[i-k+1]) into order-k ids, in place."""
    if k:
        ids[k:] += c[:-k] << (2 * k)


def markov_baseline(
    train_codes: np.ndarray, val_codes: np.ndarray, orders: Sequence[int] = tuple(range(0, 11)), alpha: float = 1.0
) -> MarkovResult:
    """Fit order-k Markov models on ``train_codes`` and score ``val_codes`` (codes from :func:`base_codes`)."""
    orders = sorted(set(orders))
    if not orders or orders[0] < 0 or orders[-1] > 12:
        raise ValueError(f"orders must be within [0, 12], got {orders}")
    kmax = orders[-1]
    tc, trun = _runs(train_codes)
    vc, vrun = _runs(val_codes)
    scored = vrun >= kmax + 1  # positions with kmax bases of context (and a base themselves)
    if not scored.any():
        raise ValueError(f"the held-out part has no position with {kmax} bases of context")
    tids, vids = tc.copy(), vc.copy()  # order-0 ids: the base itself
    bits: dict[int, float] = {}
    for k in range(kmax + 1):
        _extend(tids, tc, k)
        _extend(vids, vc, k)
        if k not in orders:
            continue
        counts = np.bincount(tids[trun >= k + 1], minlength=4 ** (k + 1)).reshape(4**k, 4).astype(np.float64)
        totals = counts.sum(axis=1)
        # id = c[i] + 4 * (context id): the low base-4 digit is the predicted base
        v = vids[scored]
        ctx, nxt = v >> 2, v & 3
        p = (counts[ctx, nxt] + alpha) / (totals[ctx] + 4 * alpha)
        bits[k] = float(-np.log2(p).mean())
        logger.debug("order-%d Markov: %.4f bits/base", k, bits[k])
    best = min(bits, key=bits.get)
    return MarkovResult(bits, best, int(scored.sum()))
