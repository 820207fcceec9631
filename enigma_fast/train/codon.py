"""Codon-position figures: per-base bits by codon position 1/2/3 in genes, and the Markov peers they are read beside.

Pure numpy; gene calling, models and the command line are in ``codon_eval``.

Coordinates. A stretch of DNA ``s`` (n bases) is read on both strands: the plus strand is ``s``, the minus strand
``rc(s)``, and base i of ``s`` is base ``n - 1 - i`` of ``rc(s)``. A gene is ``(start, end, strand)`` in ``s``
(0-based, half-open, strand +1 or -1). The codon position of a base counts in the gene's own 5' -> 3' direction::

    plus-strand gene:   pos(i) = (i - start) % 3 + 1
    minus-strand gene:  pos(i) = (end - 1 - i) % 3 + 1
                        (in rc(s) coordinates j = n - 1 - i: (j - (n - end)) % 3 + 1)

``gene_phases`` gives them as a ``(2, n)`` array: row 0 the plus strand (plus-strand genes, ``s`` coordinates), row 1
the minus strand (minus-strand genes, ``rc(s)`` coordinates), 0 where a base is not counted: outside genes, in a
gene's first or last codon (the start and stop codons the gene caller chose), or in two genes at once.

Reading. A left-to-right model predicts each base from the bases before it on the strand it reads. A gene is read on
its own coding strand (the **sense** reading): a plus-strand gene from the track of ``s``, a minus-strand gene from
the track of ``rc(s)``, so that for every gene position 3 of a codon is predicted after positions 1 and 2 of the same
codon, as the protein-coding constraint runs. Reading a minus-strand gene from the plus strand's track (the
**antisense** reading, ``antisense``) predicts each codon's position 3 first and position 1 last: a different
question, reported separately. With per-base natural-log probabilities ``lp`` (tracks ``(2, n)``: row 0 on ``s``,
row 1 on ``rc(s)``)::

    bits(k) = - sum over counted bases b with phase k of lp[b] / (number of such bases) / ln 2       k = 1, 2, 3
    contrast = bits(3) - (bits(1) + bits(2)) / 2

Markov peers. ``markov_track``: an order-k chain with add-one smoothing (the trainer's baseline, ``baseline``).
``frame_markov_*``: a 3-periodic chain whose counts are kept per codon position of the predicted base, fitted on the
sense strands of genes, that scores a gene's bases knowing the frame: the contrast a model that knows where codons
start can reach with k bases of context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from enigma_fast.train.baseline import _extend, _runs, base_codes

__all__ = [
    "antisense",
    "codes",
    "context_runs",
    "frame_markov_fit",
    "frame_markov_track",
    "gene_phases",
    "frame_markov_tracks",
    "markov_fit",
    "markov_track",
    "markov_tracks",
    "position_bits",
]

LN2 = float(np.log(2.0))


def codes(seq: str) -> np.ndarray:
    """``(len(seq),)`` uint8 base codes A0 C1 G2 T3 (either case), 255 for any other letter."""
    return base_codes([seq])[:-1]


def context_runs(c: np.ndarray) -> np.ndarray:
    """``(n,)`` int64: the number of A/C/G/T bases in a row ending at each base of code array ``c`` (itself
    included; 0 at a non-base), so an order-k chain scores base i when it is >= k + 1."""
    return np.where(c != 255, _runs(c)[1], 0)


def gene_phases(n: int, genes: Sequence[tuple[int, int, int]], trim_codons: int = 1) -> np.ndarray:
    """``(2, n)`` int8 codon positions (1, 2, 3; 0 = not counted) of the bases of ``genes`` on a stretch of ``n``
    bases: row 0 plus-strand genes in plus coordinates, row 1 minus-strand genes in reverse-complement coordinates
    (see the module doc). ``trim_codons`` codons at each end of a gene are left out, and so is every base two genes
    cover (whatever their strands). A gene must lie in ``[0, n)``; ValueError otherwise."""
    phases = np.zeros((2, n), dtype=np.int8)
    cover = np.zeros(n, dtype=np.int16)
    for start, end, strand in genes:
        if not (0 <= start < end <= n) or strand not in (1, -1):
            raise ValueError(
                f"a gene must be (start, end, strand) with 0 <= start < end <= {n}, strand +-1, got "
                f"{(start, end, strand)}"
            )
        cover[start:end] += 1
        lo, hi = start + 3 * trim_codons, end - 3 * trim_codons
        if lo >= hi:
            continue
        if strand == 1:
            i = np.arange(lo, hi)
            phases[0, i] = (i - start) % 3 + 1
        else:
            j = np.arange(n - hi, n - lo)  # rc coordinates of [lo, hi)
            phases[1, j] = (j - (n - end)) % 3 + 1
    shared = cover > 1
    phases[0, shared] = 0
    phases[1, shared[::-1]] = 0
    return phases


def antisense(phases: np.ndarray) -> np.ndarray:
    """The phases of ``gene_phases`` moved onto the other strand's track: plus-strand genes in reverse-complement
    coordinates (row 1) and minus-strand genes in plus coordinates (row 0), so ``position_bits`` reads every gene
    from the strand opposite its coding strand."""
    return np.ascontiguousarray(phases[::-1, ::-1])


def position_bits(tracks: np.ndarray, phases: np.ndarray) -> dict[str, list[float] | float]:
    """Bits per base by codon position (module doc) of natural-log tracks ``(2, n)`` over the bases whose phase
    ``(2, n)`` is 1, 2 or 3 and whose track value is not NaN: ``bits`` ``[b1, b2, b3]``, ``bases`` ``[n1, n2, n3]``,
    ``coding_bits`` (all three together) and ``contrast`` ``b3 - (b1 + b2) / 2``."""
    tracks = np.asarray(tracks, dtype=np.float64)
    if tracks.shape != phases.shape or tracks.ndim != 2 or tracks.shape[0] != 2:
        raise ValueError(f"tracks must be (2, n) like phases {phases.shape}, got {tracks.shape}")
    bits, bases, total, count = [], [], 0.0, 0
    for k in (1, 2, 3):
        sel = (phases == k) & ~np.isnan(tracks)
        s, c = float(-tracks[sel].sum()), int(sel.sum())
        bits.append(s / c / LN2 if c else float("nan"))
        bases.append(c)
        total, count = total + s, count + c
    return {
        "bits": bits,
        "bases": bases,
        "coding_bits": total / count / LN2 if count else float("nan"),
        "contrast": bits[2] - (bits[0] + bits[1]) / 2,
    }


def _ids(c: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Order-``order`` ids ``c[i] + 4 c[i-1] + ... + 4^order c[i-order]`` ``(n,)`` int64 and whether base i has
    ``order`` bases of context within its run of A/C/G/T ``(n,)`` bool."""
    cc, run = _runs(c)
    ids = cc.copy()
    for k in range(1, order + 1):
        _extend(ids, cc, k)
    return ids, run >= order + 1


def markov_fit(train: Sequence[np.ndarray], order: int) -> np.ndarray:
    """Counts ``(4^order, 4)`` float64 of each base after each context of ``order`` bases in the code arrays
    ``train`` (contexts never cross an array boundary or a non-base)."""
    counts = np.zeros(4 ** (order + 1), dtype=np.float64)
    for c in train:
        ids, ok = _ids(c, order)
        counts += np.bincount(ids[ok], minlength=4 ** (order + 1))
    return counts.reshape(4**order, 4)


def markov_track(counts: np.ndarray, c: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Natural-log probabilities ``(n,)`` of the bases of code array ``c`` under the chain ``counts`` (``markov_fit``)
    with add-alpha smoothing, ``log (count(ctx, x) + alpha) / (count(ctx) + 4 alpha)``; NaN where a base has fewer
    than ``order`` bases of context."""
    order = int(round(np.log(counts.shape[0]) / np.log(4)))
    ids, ok = _ids(c, order)
    v = ids[ok]
    ctx, nxt = v >> 2, v & 3
    out = np.full(len(c), np.nan)
    out[ok] = np.log((counts[ctx, nxt] + alpha) / (counts[ctx].sum(axis=1) + 4 * alpha))
    return out


def frame_markov_fit(train: Sequence[tuple[np.ndarray, np.ndarray]], order: int) -> np.ndarray:
    """Counts ``(3, 4^order, 4)`` of a 3-periodic chain: for each ``(codes, phases)`` pair (a strand's base codes and
    its codon positions from ``gene_phases``), the base after each context of ``order`` bases, kept apart by the codon
    position (1, 2, 3) of the predicted base; bases of phase 0 are not counted (their contexts may be)."""
    size = 4 ** (order + 1)
    counts = np.zeros(3 * size, dtype=np.float64)
    for c, ph in train:
        ids, ok = _ids(c, order)
        sel = ok & (ph > 0)
        counts += np.bincount((ph[sel].astype(np.int64) - 1) * size + ids[sel], minlength=3 * size)
    return counts.reshape(3, 4**order, 4)


def frame_markov_track(counts: np.ndarray, c: np.ndarray, phases: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Natural-log probabilities ``(n,)`` of the bases of ``c`` whose phase is 1, 2 or 3 under the 3-periodic chain
    ``counts`` (``frame_markov_fit``), add-alpha smoothed; NaN elsewhere and where the context is short."""
    order = int(round(np.log(counts.shape[1]) / np.log(4)))
    ids, ok = _ids(c, order)
    sel = ok & (phases > 0)
    v, p = ids[sel], phases[sel].astype(np.int64) - 1
    ctx, nxt = v >> 2, v & 3
    out = np.full(len(c), np.nan)
    out[sel] = np.log((counts[p, ctx, nxt] + alpha) / (counts[p, ctx].sum(axis=1) + 4 * alpha))
    return out


class _Ids:
    """Order-k ids of one code array, extended one order at a time (``_extend``), and its run lengths."""

    def __init__(self, c: np.ndarray) -> None:
        self.c, self.run = _runs(c)
        self.ids, self.order = self.c.copy(), 0

    def to(self, order: int) -> tuple[np.ndarray, np.ndarray]:
        while self.order < order:
            self.order += 1
            _extend(self.ids, self.c, self.order)
        return self.ids, self.run >= order + 1


def markov_tracks(
    train: Sequence[np.ndarray], targets: Sequence[np.ndarray], orders: Sequence[int], alpha: float = 1.0
) -> dict[int, list[np.ndarray]]:
    """``markov_track`` of every code array in ``targets`` under the chain of each order in ``orders`` fitted on
    ``train`` (``markov_fit``): ``{order: [track (n_i,), ...]}``, the ids grown one order at a time."""
    tr, tg = [_Ids(c) for c in train], [_Ids(c) for c in targets]
    out: dict[int, list[np.ndarray]] = {}
    for k in sorted(set(orders)):
        size = 4 ** (k + 1)
        counts = np.zeros(size, dtype=np.float64)
        for t in tr:
            ids, ok = t.to(k)
            counts += np.bincount(ids[ok], minlength=size)
        counts = counts.reshape(4**k, 4)
        totals = counts.sum(axis=1)
        out[k] = []
        for t in tg:
            ids, ok = t.to(k)
            v = ids[ok]
            track = np.full(len(ids), np.nan)
            track[ok] = np.log((counts[v >> 2, v & 3] + alpha) / (totals[v >> 2] + 4 * alpha))
            out[k].append(track)
    return out


def frame_markov_tracks(
    train: Sequence[tuple[np.ndarray, np.ndarray]],
    targets: Sequence[tuple[np.ndarray, np.ndarray]],
    orders: Sequence[int],
    alpha: float = 1.0,
) -> dict[int, list[np.ndarray]]:
    """``frame_markov_track`` of every ``(codes, phases)`` pair in ``targets`` under the 3-periodic chain of each
    order in ``orders`` fitted on the pairs ``train`` (``frame_markov_fit``): ``{order: [track (n_i,), ...]}``."""
    tr, tg = [(_Ids(c), p) for c, p in train], [(_Ids(c), p) for c, p in targets]
    out: dict[int, list[np.ndarray]] = {}
    for k in sorted(set(orders)):
        size = 4 ** (k + 1)
        counts = np.zeros(3 * size, dtype=np.float64)
        for t, ph in tr:
            ids, ok = t.to(k)
            sel = ok & (ph > 0)
            counts += np.bincount((ph[sel].astype(np.int64) - 1) * size + ids[sel], minlength=3 * size)
        counts = counts.reshape(3, 4**k, 4)
        totals = counts.sum(axis=2)
        out[k] = []
        for t, ph in tg:
            ids, ok = t.to(k)
            sel = ok & (ph > 0)
            v, p = ids[sel], ph[sel].astype(np.int64) - 1
            track = np.full(len(ids), np.nan)
            track[sel] = np.log((counts[p, v >> 2, v & 3] + alpha) / (totals[p, v >> 2] + 4 * alpha))
            out[k].append(track)
    return out
