"""Per-base tracks written to files: bedGraph lines (runs of equal values) written as records finish, or one npz
holding every record's values, written at the end. Both files are written atomically (``enigma_fast.files``).

npz arrays: ``values`` (every record's values back to back, float64), ``offsets`` ``(N+1,)`` int64 (record i is
``values[offsets[i]:offsets[i+1]]``), ``ids`` (record names) and ``starts`` (each record's first base, 0-based).
"""

from __future__ import annotations

import contextlib
from typing import IO

import numpy as np

from enigma_fast.files import atomic_open

__all__ = ["TrackWriter", "bedgraph_lines"]

BEDGRAPH_HEADER = 'track type=bedGraph name="enigma_fast" description="per-base natural-log probability"\n'


def bedgraph_lines(chrom: str, start: int, track: np.ndarray) -> str:
    """Runs of equal values of ``track`` ``(L,)`` as bedGraph lines ``chrom  start+a  start+b  value`` (half-open,
    0-based; values ``%.6g``); NaN runs are left out."""
    if not len(track):
        return ""
    change = np.flatnonzero(np.r_[True, (track[1:] != track[:-1]) & ~(np.isnan(track[1:]) & np.isnan(track[:-1]))])
    ends = np.r_[change[1:], len(track)]
    lines = [
        f"{chrom}\t{start + a}\t{start + b}\t{track[a]:.6g}\n"
        for a, b in zip(change.tolist(), ends.tolist(), strict=True)
        if not np.isnan(track[a])
    ]
    return "".join(lines)


class TrackWriter:
    """The per-base output ``path``: ``.npz`` gathers the tracks and writes them at :meth:`close`; any other name
    is a bedGraph file opened now (its writing closed with ``stack``) and written as tracks are added. A None
    ``path`` takes tracks and writes nothing."""

    def __init__(self, path: str | None, stack: contextlib.ExitStack) -> None:
        self.path, self.npz = path, path is not None and path.endswith(".npz")
        self.sink: IO[str] | None = None
        self.rows: list[tuple[str, int, np.ndarray]] = []
        if path is not None and not self.npz:
            self.sink = stack.enter_context(atomic_open(path))
            self.sink.write(BEDGRAPH_HEADER)

    def add(self, name: str, start: int, track: np.ndarray | None) -> None:
        """The track ``(L,)`` of record ``name`` whose first base is ``start`` (None: nothing to add)."""
        if track is None:
            return
        if self.sink is not None:
            self.sink.write(bedgraph_lines(name, start, track))
        elif self.npz:
            self.rows.append((name, start, track))

    def close(self) -> None:
        """Write the npz file (bedGraph: nothing left to do here)."""
        if not self.npz:
            return
        lengths = [len(t) for _, _, t in self.rows]
        with atomic_open(self.path, "wb") as f:
            np.savez(
                f,
                values=np.concatenate([t for _, _, t in self.rows]) if self.rows else np.zeros(0),
                offsets=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]),
                ids=np.array([n for n, _, _ in self.rows], dtype=str),
                starts=np.array([s for _, s, _ in self.rows], dtype=np.int64),
            )
