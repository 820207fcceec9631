"""Checks of token-id inputs shared by the models and the generator.

Token id tensors must be ``(B, T)`` int32/int64 (``check_id_tensor``: dtype, rank, sizes and device, no value read,
no host sync) with values in a range (``check_id_ranges``: one min/max reduction per tensor and a single host read
for all of them per call, skipped while ``torch.compile`` traces -- compiled code keeps inductor's own index
asserts). A bad id raises a one-line ValueError naming the tensor, the range, the value and its position, instead
of ``IndexError: index out of range in self`` (or a device-side assert on CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

__all__ = ["IdRange", "check_id_ranges", "check_id_tensor"]


def check_id_tensor(
    name: str, t: Any, device: torch.device | None = None, *, dims: int = 2, shape: Sequence[int | None] | None = None
) -> None:
    """Check (without reading values) that ``t`` is an int32/int64 tensor of ``dims`` dimensions on ``device``
    whose sizes match ``shape`` (None = any size there). TypeError for a non-tensor, ValueError otherwise."""
    want = "(B, T)" if dims == 2 else "(B,)"
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a {want} int32/int64 tensor, got {type(t).__name__}")
    if t.dim() != dims or t.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be a {want} int32/int64 tensor, got {t.dtype} {tuple(t.shape)}")
    if shape is not None and any(w is not None and w != g for w, g in zip(shape, t.shape, strict=True)):
        expect = "(" + ", ".join("*" if w is None else str(w) for w in shape) + (",)" if dims == 1 else ")")
        raise ValueError(f"{name} must be {want} = {expect}, got {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the model is on {device}")


class IdRange(NamedTuple):
    """One check for ``check_id_ranges``: every element of ``t`` in ``[lo, hi)`` or equal to ``ignore``;
    ``what`` describes the range in the error message. ``t`` None or empty: nothing to check."""

    name: str
    t: torch.Tensor | None
    lo: int
    hi: int
    what: str
    ignore: int | None = None


def check_id_ranges(checks: Sequence[IdRange]) -> None:
    """Check the value ranges of several tensors with one ``aminmax`` each and one host read for all; nothing
    while ``torch.compile`` traces. Raises a one-line ValueError naming the first bad value and its position."""
    if torch.compiler.is_compiling():
        return
    todo = []
    for c in checks:
        if c.t is None or not c.t.numel():
            continue
        t = c.t if c.ignore is None else c.t.masked_fill(c.t == c.ignore, c.lo)
        todo.append((c, t))
    if not todo:
        return
    stats = torch.stack([m.long() for _, t in todo for m in torch.aminmax(t)]).tolist()
    for j, (c, t) in enumerate(todo):
        if stats[2 * j] < c.lo or stats[2 * j + 1] >= c.hi:
            pos = tuple(((t < c.lo) | (t >= c.hi)).nonzero()[0].tolist())
            where = ", ".join(map(str, pos))
            raise ValueError(f"{c.name} must hold {c.what}, got {int(t[pos])} at {c.name}[{where}]")
