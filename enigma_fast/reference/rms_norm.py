"""Reference RMSNorm: y = x * rsqrt(mean(x^2, -1) + eps) * weight, statistics in float32 (float64 for float64)."""

from __future__ import annotations

import torch

from enigma_fast.reference.checks import check_add_rms_norm, check_rms_norm


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float = 1e-6) -> torch.Tensor:
    """Root-mean-square normalisation over the last dimension.

    ``y = x * rsqrt(mean(x**2, dim=-1) + eps) * weight`` computed in float32 (float64 for float64 input) and
    returned in ``x.dtype``. Shapes: x ``(..., N)``, weight ``(N,)`` or None, y ``(..., N)``. Arguments are checked
    as the kernels check them (``checks.check_rms_norm``).
    """
    check_rms_norm(x, weight, eps)
    return _rms_norm(x, weight, eps)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    xf = x.to(_stat_dtype(x.dtype))
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(y.dtype)
    return y.to(x.dtype)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add then RMSNorm: ``h = x + residual`` (in x's dtype); returns ``(rms_norm(h), h)``.

    Shapes: x, residual ``(..., N)``; weight ``(N,)`` or None; both outputs ``(..., N)``.
    """
    check_add_rms_norm(x, residual, weight, eps)
    h = x + residual
    return _rms_norm(h, weight, eps), h
