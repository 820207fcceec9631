"""Fill-in-the-middle (FIM) rows for a decoder-only model, as pure functions of a seed.

A window of data tokens ``d`` (``D`` tokens) is cut at ``0 <= i < j <= D`` into a prefix ``d[:i]``, a middle
``d[i:j]`` (at least one token) and a suffix ``d[j:]``, and reordered prefix-suffix-middle (PSM, Bavarian et al.
2022, "Efficient Training of Language Models to Fill in the Middle")::

    <pre> prefix <suf> suffix <mid> middle <eot>                  D + 4 tokens

A left-to-right model trained on such rows (next-token loss on every token but the three markers, whose places are
chosen at random) predicts the middle from both of its flanks, and still learns the plain next-token task on the
prefix, the suffix and the rows left as they are. The markers are the tokenizer's sentinels ``<mask_0>`` (pre),
``<mask_1>`` (suf) and ``<mask_2>`` (mid); ``<eot>`` is its ``<eos>`` (where a middle of free length ends).

Suffix-prefix-middle (SPM, the paper's variant "<PRE> <SUF> suffix <MID> prefix middle"), ``mode="spm"``::

    <pre> <suf> suffix <mid> prefix middle <eot>                  D + 4 tokens

puts the prefix right before the middle, as in a left-to-right row: with relative positions the middle's nearest left
context is then where a plain window has it, and the suffix is read first. Both modes place the middle after
``len(prefix) + len(suffix) + 3`` tokens.

Cuts: with probability ``rate`` a row is reordered (else it stays a plain window of ``D + 4`` data tokens, the same
length); ``i`` and ``j`` are two distinct points drawn uniformly from ``0..D`` and sorted (the paper's uniform
split at the token level). Step ``s`` draws from ``numpy.random.default_rng([seed, s, FIM_STREAM])``, so a resumed
run draws the same rows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "FIM_MODES",
    "FIM_STREAM",
    "FimMarkers",
    "fim_markers",
    "fim_mode",
    "fim_rows",
    "fim_sequence",
    "train_fim_cuts",
]

FIM_STREAM = 0x46494D00  # "FIM": the third seed word of the cuts
FIM_MODES = ("psm", "spm")


class FimMarkers(NamedTuple):
    """Token ids of the four FIM specials."""

    pre: int
    suf: int
    mid: int
    eot: int


def fim_markers(tok: Any) -> FimMarkers:
    """The markers of tokenizer ``tok`` (module doc); ValueError when it has fewer than 3 sentinels."""
    if tok.num_sentinels < 3:
        raise ValueError(
            f"fill-in-the-middle needs a tokenizer with at least 3 sentinel tokens (<pre>, <suf>, <mid>), got "
            f"{tok.num_sentinels}"
        )
    s = tok.sentinel_ids
    return FimMarkers(s[0], s[1], s[2], tok.eos_id)


def fim_mode(model: Any) -> str:
    """The row order a fill-in-the-middle model was trained on: ``"spm"`` when its config says ``fim_spm``, else
    ``"psm"``."""
    return "spm" if getattr(model.config, "fim_spm", False) else "psm"


def train_fim_cuts(seed: int, step: int, n: int, data_len: int, rate: float) -> np.ndarray:
    """Cuts ``(n, 2)`` int64 ``(i, j)`` of the ``n`` rows of training step ``step`` over ``data_len`` data tokens, or
    ``(-1, -1)`` for a row left plain (probability ``1 - rate``)."""
    if data_len < 1:
        raise ValueError(f"a fill-in-the-middle row needs at least 1 data token, got {data_len}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fim_rate must be in [0, 1], got {rate}")
    rng = np.random.default_rng([seed, step, FIM_STREAM])
    pick = rng.random(n) < rate
    a = rng.integers(0, data_len + 1, size=n)
    b = rng.integers(0, data_len, size=n)
    b = b + (b >= a)  # uniform over the points other than a
    cuts = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
    cuts[~pick] = -1
    return cuts


def fim_sequence(
    prefix: np.ndarray, middle: np.ndarray, suffix: np.ndarray, m: FimMarkers, mode: str = "psm"
) -> np.ndarray:
    """``(len(prefix) + len(suffix) + len(middle) + 4,)`` int64: ``<pre> prefix <suf> suffix <mid> middle <eot>``
    (``mode="psm"``) or ``<pre> <suf> suffix <mid> prefix middle <eot>`` (``"spm"``)."""
    if mode == "psm":
        parts = [[m.pre], prefix, [m.suf], suffix, [m.mid], middle, [m.eot]]
    elif mode == "spm":
        parts = [[m.pre], [m.suf], suffix, [m.mid], prefix, middle, [m.eot]]
    else:
        raise ValueError(f"fim mode must be one of {FIM_MODES}, got {mode!r}")
    return np.concatenate(parts).astype(np.int64)


def fim_rows(rows: np.ndarray, cuts: np.ndarray, m: FimMarkers, mode: str = "psm") -> tuple[np.ndarray, np.ndarray]:
    """Training rows ``(B, L)`` (L >= 5) of data tokens to model rows ``(B, L)`` and a loss mask ``(B, L - 1)`` bool
    over their targets ``[:, 1:]``. A row with cuts ``(i, j)`` becomes the ``mode`` sequence of its first ``L - 4``
    tokens (module doc), its marker targets (``<suf>``, ``<mid>``) left out of the loss; a row with ``(-1, -1)``
    stays as it is, every target in the loss."""
    rows = np.asarray(rows, dtype=np.int64)
    B, L = rows.shape
    if L < 5:
        raise ValueError(f"fill-in-the-middle rows need at least 5 tokens, got {L}")
    out = rows.copy()
    loss = np.ones((B, L - 1), dtype=bool)
    D = L - 4
    for r in np.flatnonzero(cuts[:, 0] >= 0).tolist():
        i, j = (int(x) for x in cuts[r])
        if not 0 <= i < j <= D:
            raise ValueError(f"cuts of row {r} must satisfy 0 <= i < j <= {D}, got ({i}, {j})")
        d = rows[r, :D]
        out[r] = fim_sequence(d[:i], d[i:j], d[j:], m, mode)
        loss[r] = (out[r, 1:] != m.suf) & (out[r, 1:] != m.mid)
    return out, loss
