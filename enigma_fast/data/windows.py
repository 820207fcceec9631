"""Train/validation splits of a token store, random training windows and the tiling of held-out data.

Segments are ``(N, 2)`` int64 rows ``(token_offset, num_tokens)`` into a store's id array.

* ``split_segments``: by ``"position"`` the last ``fraction`` of every record is held out (one chromosome: its
  last 10%); by ``"record"`` whole records from the end of the list are held out until they reach ``fraction``
  of the tokens.
* ``WindowSampler``: the windows of step ``s`` are a pure function of ``(seed, s)``: a window start is drawn
  uniformly over every position where a whole window fits, so resuming at step s needs no sampler state,
  and under DDP every rank draws the same global batch and keeps its own rows.
* ``eval_windows``: windows that tile the held-out segments so that every held-out token (but the first of a
  segment) is scored exactly once, each with at least ``window - stride`` tokens of context;
  ``eval_window_arrays`` gives the same windows as three arrays, planned without a Python loop over windows
  (a 2.5 Mbp record read in windows of 128 is ~26,000 windows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["EvalWindow", "EvalWindowArrays", "WindowSampler", "eval_window_arrays", "eval_windows", "split_segments"]

SPLITS = ("position", "record")


def split_segments(segments: np.ndarray, fraction: float, by: str = "position") -> tuple[np.ndarray, np.ndarray]:
    """Split store segments ``(S, 3)`` rows ``(record, offset, length)`` into train and validation ``(N, 2)``
    rows ``(offset, length)``; see the module doc for the two rules."""
    if by not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {by!r}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    train: list[tuple[int, int]] = []
    val: list[tuple[int, int]] = []
    recs = np.unique(segments[:, 0])
    if by == "record":
        if len(recs) < 2:
            raise ValueError("split='record' needs at least two records; use split='position' for one sequence")
        sizes = {int(r): int(segments[segments[:, 0] == r, 2].sum()) for r in recs}
        target, held, held_out = fraction * sum(sizes.values()), 0, set()
        for r in reversed(recs.tolist()):
            if held >= target or len(held_out) == len(recs) - 1:
                break
            held_out.add(r)
            held += sizes[r]
        for rec, off, n in segments.tolist():
            (val if rec in held_out else train).append((off, n))
    else:
        for r in recs.tolist():
            rows = segments[segments[:, 0] == r]
            total = int(rows[:, 2].sum())
            cut = total - int(round(fraction * total))  # tokens of this record before the cut stay in training
            seen = 0
            for _, off, n in rows.tolist():
                keep = min(max(cut - seen, 0), n)
                if keep:
                    train.append((off, keep))
                if n - keep:
                    val.append((off + keep, n - keep))
                seen += n
    as_array = lambda rows: np.asarray(rows, dtype=np.int64).reshape(-1, 2)  # noqa: E731
    return as_array(train), as_array(val)


class WindowSampler:
    """Random windows of ``window`` consecutive ids from ``segments`` of ``tokens``.

    ``batch(step, n)`` returns ids ``(n, window)`` int64 and a reverse-complement flag per row ``(n,)`` bool
    (all False unless ``rc_prob > 0``). Each start is drawn uniformly among all starts where a window fits
    inside one segment; the draw depends only on ``(seed, step)``.
    """

    def __init__(self, tokens: np.ndarray, segments: np.ndarray, window: int, seed: int, rc_prob: float = 0.0):
        self.tokens, self.window, self.seed, self.rc_prob = tokens, window, seed, rc_prob
        fits = segments[segments[:, 1] >= window]
        if not len(fits):
            longest = int(segments[:, 1].max()) if len(segments) else 0
            raise ValueError(
                f"window of {window} tokens is longer than every training sequence (the longest holds {longest} "
                "tokens); use a smaller window or more data"
            )
        self.offsets = fits[:, 0]
        self.counts = fits[:, 1] - window + 1  # window starts per segment
        self.cum = np.cumsum(self.counts)

    @property
    def num_starts(self) -> int:
        """How many distinct windows there are."""
        return int(self.cum[-1])

    def draw(self, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Window starts ``(n,)`` int64 (offsets into ``tokens``) and reverse-complement flags ``(n,)`` of ``step``."""
        rng = np.random.default_rng([self.seed, step])
        flat = rng.integers(0, self.num_starts, size=n)
        seg = np.searchsorted(self.cum, flat, side="right")
        starts = self.offsets[seg] + flat - (self.cum[seg] - self.counts[seg])
        flips = rng.random(n) < self.rc_prob if self.rc_prob > 0 else np.zeros(n, dtype=bool)
        return starts, flips

    def gather(self, starts: np.ndarray) -> np.ndarray:
        """The windows at ``starts``: ids ``(len(starts), window)`` int64, read from the (memory-mapped) ids."""
        return np.stack([np.asarray(self.tokens[s : s + self.window], dtype=np.int64) for s in starts.tolist()])

    def batch(self, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``draw`` then ``gather``: ids ``(n, window)`` and flags ``(n,)``."""
        starts, flips = self.draw(step, n)
        return self.gather(starts), flips


@dataclass(frozen=True)
class EvalWindow:
    """A held-out window: ids ``tokens[start : start + length]``; targets at window positions >= ``score_from``
    are scored (position i of the window predicts id i; the first id is never a target)."""

    start: int
    length: int
    score_from: int


class EvalWindowArrays(NamedTuple):
    """The windows of ``eval_windows`` as arrays ``(W,)`` int64 each, in the same order: window ``w`` is
    ``tokens[starts[w] : starts[w] + lengths[w]]`` and scores its targets at positions ``>= score_from[w]``."""

    starts: np.ndarray
    lengths: np.ndarray
    score_from: np.ndarray


def eval_window_arrays(segments: np.ndarray, window: int, stride: int) -> EvalWindowArrays:
    """``eval_windows`` as arrays, planned with array arithmetic over the segments ``(S, 2)``.

    A segment ``(off, n)`` with ``n > window`` gets ``1 + m`` windows, ``m = ceil((n - window) / stride)``:
    window 0 at ``off`` scoring from 1; window ``k = 1 .. m-1`` at ``off + k * stride`` scoring from
    ``window - stride``; the last at ``off + n - window`` scoring from ``window + (m - 1) * stride - (n - window)``.
    A segment of ``2 <= n <= window`` ids gets one window ``(off, n, 1)``; shorter ones none."""
    if not 0 < stride <= window - 1:
        raise ValueError(f"eval stride must be in [1, window - 1 = {window - 1}], got {stride}")
    seg = np.asarray(segments, dtype=np.int64).reshape(-1, 2)
    seg = seg[seg[:, 1] >= 2]
    off, n = seg[:, 0], seg[:, 1]
    extra = np.where(n > window, -(-(n - window) // stride), 0)  # m: windows after the first
    count = 1 + extra
    first = np.cumsum(count) - count  # index of each segment's first window
    total = int(count.sum())
    k = np.arange(total, dtype=np.int64) - np.repeat(first, count)  # window number within its segment
    off_w, n_w, m_w = np.repeat(off, count), np.repeat(n, count), np.repeat(extra, count)
    lengths = np.minimum(n_w, window)
    starts = off_w + k * stride
    score_from = np.where(k == 0, 1, window - stride)
    last = (k == m_w) & (k > 0)
    starts[last] = (off_w + n_w - window)[last]
    score_from[last] = (window + (m_w - 1) * stride - (n_w - window))[last]
    return EvalWindowArrays(starts, lengths.astype(np.int64), score_from.astype(np.int64))


def eval_windows(segments: np.ndarray, window: int, stride: int) -> list[EvalWindow]:
    """Windows of ``window`` ids, ``stride`` apart, tiling every segment: each id but a segment's first is
    scored once. A segment shorter than ``window`` gives one short window."""
    a = eval_window_arrays(segments, window, stride)
    return [
        EvalWindow(s, n, f)
        for s, n, f in zip(a.starts.tolist(), a.lengths.tolist(), a.score_from.tolist(), strict=True)
    ]
