"""Random span masks for span corruption (T5-style), as pure functions of a seed.

A mask marks the tokens of a window that are cut out and replaced by sentinels (see ``Enigma.span_corrupt``). For a
window of ``L`` tokens, noise density ``r`` and mean span length ``mu``::

    n = clamp(round(r * L), 1, L - 1)          masked tokens
    m = clamp(round(n / mu), 1, n)             spans (also at most L - n + 1, so kept runs can separate them)

The ``n`` masked tokens are cut into ``m`` non-empty spans, and the ``L - n`` kept tokens into ``m + 1`` runs that
separate them (the two outer runs may be empty, so a span can touch either end of the window; the inner runs are
non-empty, so two spans never touch). Each cut is uniform over the ways to cut (stars and bars). The counts depend
only on ``L``, so every window of a batch gives the same source and target lengths.

Determinism: the masks of training step ``s`` come from ``numpy.random.default_rng([seed, s, TRAIN_STREAM])``
(the windows of that step come from ``[seed, s]``), and the mask of held-out window ``i`` from
``[seed, i, EVAL_STREAM]``: resuming at step ``s``, or scoring the same held-out windows twice, draws the same spans.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EVAL_STREAM",
    "TRAIN_STREAM",
    "check_span_options",
    "eval_span_masks",
    "random_span_mask",
    "span_counts",
    "span_eval_windows",
    "train_span_masks",
]

TRAIN_STREAM = 0x5350414E  # "SPAN": the third seed word of the training masks
EVAL_STREAM = 0x4556414C  # "EVAL": the third seed word of the held-out masks


def check_span_options(noise_density: float, mean_span: float) -> None:
    """ValueError naming the option unless ``0 < noise_density < 1`` and ``mean_span >= 1``."""
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density!r}")
    if not mean_span >= 1.0:
        raise ValueError(f"mean_span must be >= 1, got {mean_span!r}")


def span_counts(length: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    """``(n, m)``: masked tokens and spans of a window of ``length`` tokens (formulas in the module doc).
    ``length`` must be >= 2."""
    check_span_options(noise_density, mean_span)
    if length < 2:
        raise ValueError(f"a span-corrupted window needs at least 2 tokens, got {length}")
    n = min(max(int(round(noise_density * length)), 1), length - 1)
    m = min(max(int(round(n / mean_span)), 1), n, length - n + 1)
    return n, m


def _cut(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths ``(parts,)`` >= 1 summing to ``total``, uniform over all such cuts."""
    if parts == 1:
        return np.array([total], dtype=np.int64)
    cuts = np.sort(rng.choice(total - 1, size=parts - 1, replace=False) + 1)
    return np.diff(np.concatenate(([0], cuts, [total])))


def random_span_mask(length: int, noise_density: float, mean_span: float, rng: np.random.Generator) -> np.ndarray:
    """One mask ``(length,)`` bool: ``m`` spans holding ``n`` tokens in all (``span_counts``), drawn from ``rng``."""
    n, m = span_counts(length, noise_density, mean_span)
    noise = _cut(n, m, rng)
    keep = _cut(length - n + 2, m + 1, rng)  # +2 and -1 at both ends: the outer kept runs may be empty
    keep[0] -= 1
    keep[-1] -= 1
    runs = np.empty(2 * m + 1, dtype=np.int64)
    runs[0::2], runs[1::2] = keep, noise
    flags = np.zeros(2 * m + 1, dtype=bool)
    flags[1::2] = True
    return np.repeat(flags, runs)


def train_span_masks(seed: int, step: int, n: int, length: int, noise_density: float, mean_span: float) -> np.ndarray:
    """Masks ``(n, length)`` bool of the ``n`` windows of training step ``step`` (the global batch, in row order)."""
    rng = np.random.default_rng([seed, step, TRAIN_STREAM])
    return np.stack([random_span_mask(length, noise_density, mean_span, rng) for _ in range(n)])


def eval_span_masks(seed: int, lengths: list[int], noise_density: float, mean_span: float) -> list[np.ndarray]:
    """The mask of each held-out window ``i`` (of ``lengths[i]`` tokens), each drawn from ``(seed, i)`` alone."""
    return [
        random_span_mask(n, noise_density, mean_span, np.random.default_rng([seed, i, EVAL_STREAM]))
        for i, n in enumerate(lengths)
    ]


def span_eval_windows(segments: np.ndarray, window: int, min_length: int = 16) -> np.ndarray:
    """Held-out windows ``(N, 3)`` int64 rows ``(start, length, segment_start)`` tiling each segment ``(offset,
    length)`` without overlap: ``window`` tokens each, the rest of a segment as one shorter window when it holds at
    least ``min_length`` tokens. Each window starts one token or more into its segment, so every window has left
    context (for a left-to-right model scoring the same tokens)."""
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    out: list[tuple[int, int, int]] = []
    for off, n in np.asarray(segments, dtype=np.int64).reshape(-1, 2).tolist():
        pos = off + 1
        while pos < off + n:
            length = min(window, off + n - pos)
            if length >= min(window, min_length):
                out.append((pos, length, off))
            pos += length
    return np.asarray(out, dtype=np.int64).reshape(-1, 3)
