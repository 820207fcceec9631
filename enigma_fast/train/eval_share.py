"""Held-out evaluation split across ranks (FSDP2): every rank scores its share of the batches, and the per-batch
sums are gathered so that every rank adds them up in batch order, exactly as one process does.

Under FSDP2 a forward pass is a collective (each unit all-gathers its parameters), so every rank must run the same
number of them: rank r takes batches r, r + W, r + 2W, ... of the evaluation's fixed batch list, and a rank left
with one batch fewer runs one more forward pass on a batch it already has, whose result it drops. Each rank writes
the sums of its batches into its rows of a ``(batches, k)`` float64 table (zeros elsewhere); one ``all_reduce``
(sum) then gives every rank the whole table (adding zeros is exact), and the totals are summed row by row in batch
order: the figures are bit for bit those of one process scoring every batch, for any number of ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["ONE_PROCESS", "EvalShare"]


@dataclass(frozen=True)
class EvalShare:
    """Rank ``rank`` of ``world`` scores its share of an evaluation's batches (``world`` 1: all of them)."""

    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if not (self.world >= 1 and 0 <= self.rank < self.world):
            raise ValueError(f"EvalShare needs 0 <= rank < world, got rank {self.rank}, world {self.world}")

    def batches(self, n: int) -> list[tuple[int, bool]]:
        """``(batch index, counted)`` pairs of this rank over ``n`` batches: batches ``rank, rank + world, ...``
        counted, padded to ``ceil(n / world)`` passes with uncounted repeats of a batch (every rank the same number
        of forward passes). Empty when ``n`` is 0."""
        if n <= 0:
            return []
        mine = [(b, True) for b in range(self.rank, n, self.world)]
        fill = mine[0][0] if mine else 0
        return mine + [(fill, False)] * (math.ceil(n / self.world) - len(mine))

    def totals(self, rows: torch.Tensor) -> list[float]:
        """Column totals of the per-batch sums ``rows`` ``(n, k)`` float64, this rank's rows filled and the others
        zero: all-reduced over the ranks (when ``world > 1``), then summed in batch order on the host."""
        if self.world > 1:
            dist.all_reduce(rows)
        out = [0.0] * rows.shape[1]
        for row in rows.tolist():
            for j, v in enumerate(row):
                out[j] += v
        return out


ONE_PROCESS = EvalShare()  # every batch, no collective
