"""Tolerances by dtype, in one table: (atol, rtol) for comparing a kernel against the float64 reference."""

from __future__ import annotations

import torch

TOL: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None, scale: float = 1.0):
    """``torch.testing.assert_close`` with the table's tolerance for ``dtype`` (default: actual's), times ``scale``."""
    atol, rtol = TOL[dtype or actual.dtype]
    torch.testing.assert_close(actual.to(expected.dtype), expected, atol=atol * scale, rtol=rtol * scale)
