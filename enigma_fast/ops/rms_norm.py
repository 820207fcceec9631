"""Fused RMSNorm ops: public functions, fake (meta) implementations and autograd for the compiled kernels.

The kernels are ``torch.ops.enigma_fast.{rms_norm_fwd, add_rms_norm_fwd, rms_norm_bwd}`` (schemas in
csrc/rms_norm/rms_norm.cpp). Where no kernel serves a device/dtype, the functions run ``enigma_fast.reference``.
Both paths check their arguments with the same function (``enigma_fast.reference.checks``), first.
"""

from __future__ import annotations

import torch

from enigma_fast import _extension, reference
from enigma_fast.reference.checks import check_add_rms_norm, check_rms_norm

__all__ = ["add_rms_norm", "rms_norm"]

_FLOATS = frozenset({torch.float32, torch.bfloat16, torch.float64})
_extension.register_op(
    "rms_norm",
    ("rms_norm_fwd", "add_rms_norm_fwd", "rms_norm_bwd"),
    {"cpu": _FLOATS, "cuda": _FLOATS | {torch.float16}},
)


def _use_kernel(x: torch.Tensor) -> bool:
    return _extension.has_kernel("rms_norm", x.device.type, x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float = 1e-6) -> torch.Tensor:
    """Fused RMSNorm over the last dimension.

    ``y = x * rsqrt(mean(x**2, dim=-1) + eps) * weight``, statistics in float32 (float64 for float64 input),
    output in ``x.dtype``. Differentiable in x and weight.

    Args:
        x: ``(..., N)``, float32/bfloat16/float64 (float16 too on CUDA); its last dimension must be contiguous,
            leading dimensions may be strided (e.g. a slice of a wider projection).
        weight: ``(N,)`` with x's dtype and device, or None for no affine scale.
        eps: added to the mean square, >= 0.

    Returns:
        y: ``(..., N)``, contiguous, x's dtype.

    Raises:
        TypeError: x not float16/bfloat16/float32/float64, weight of another dtype, eps not a number.
        ValueError: a bad shape, device, layout or eps < 0 (the message names the argument).
    """
    check_rms_norm(x, weight, eps)
    if not _use_kernel(x):
        return reference.rms_norm(x, weight, eps)
    y, _ = torch.ops.enigma_fast.rms_norm_fwd(x, weight, eps)
    return y


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused residual add + RMSNorm, the pre-norm residual stream in one pass.

    ``h = x + residual`` (rounded to x's dtype), ``y = rms_norm(h, weight, eps)``; returns ``(y, h)``.
    Differentiable in x, residual and weight.

    Args:
        x, residual: ``(..., N)``, same shape, dtype and device; last dimension contiguous.
        weight: ``(N,)`` or None.
        eps: >= 0.

    Returns:
        ``(y, h)``, both ``(..., N)`` and contiguous.

    Raises:
        TypeError / ValueError as :func:`rms_norm`, and for a residual unlike x.
    """
    check_add_rms_norm(x, residual, weight, eps)
    if not _use_kernel(x):
        return reference.add_rms_norm(x, residual, weight, eps)
    y, h, _ = torch.ops.enigma_fast.add_rms_norm_fwd(x, residual, weight, eps)
    return y, h


def _register() -> None:
    lib = torch.ops.enigma_fast

    def stat_dtype(dtype: torch.dtype) -> torch.dtype:
        return torch.float64 if dtype == torch.float64 else torch.float32

    def check(x: torch.Tensor, weight: torch.Tensor | None) -> None:
        torch._check(x.dim() >= 1, lambda: "rms_norm: x must have at least 1 dimension")
        if weight is not None:
            torch._check(
                weight.dim() == 1 and weight.shape[0] == x.shape[-1],
                lambda: f"rms_norm: weight must be ({x.shape[-1]},), got {tuple(weight.shape)}",
            )
            torch._check(weight.dtype == x.dtype, lambda: f"rms_norm: weight must be {x.dtype}, got {weight.dtype}")

    @torch.library.register_fake("enigma_fast::rms_norm_fwd")
    def _(x, weight, eps):
        check(x, weight)
        return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(
            x.shape[:-1], dtype=stat_dtype(x.dtype)
        )

    @torch.library.register_fake("enigma_fast::add_rms_norm_fwd")
    def _(x, residual, weight, eps):
        check(x, weight)
        torch._check(residual.shape == x.shape, lambda: "add_rms_norm: residual must have the shape of x")
        y = torch.empty_like(x, memory_format=torch.contiguous_format)
        h = torch.empty_like(x, memory_format=torch.contiguous_format)
        return y, h, x.new_empty(x.shape[:-1], dtype=stat_dtype(x.dtype))

    @torch.library.register_fake("enigma_fast::rms_norm_bwd")
    def _(dy, h, weight, rstd, dh, compute_dweight):
        check(h, weight)
        n = h.shape[-1] if (compute_dweight and weight is not None) else 0
        return torch.empty_like(h, memory_format=torch.contiguous_format), h.new_empty((n,))

    def backward_core(ctx, dy, dh):
        h, weight, rstd = ctx.saved_tensors
        need_dw = weight is not None and ctx.needs_weight_grad
        if dy is None:
            dx = dh if dh is not None else None
            dw = torch.zeros_like(weight) if need_dw else None
            return dx, dw
        # Incoming gradients may be expanded (stride 0, e.g. from .sum()): give the kernel real rows.
        dy = dy.contiguous()
        dh = dh.contiguous() if dh is not None else None
        dx, dw = lib.rms_norm_bwd(dy, h, weight, rstd, dh, need_dw)
        return dx, (dw if need_dw else None)

    def setup_fwd(ctx, inputs, output):
        x, weight, _eps = inputs
        _y, rstd = output
        ctx.save_for_backward(x, weight, rstd)
        ctx.needs_weight_grad = weight is not None and ctx.needs_input_grad[1]

    def backward_fwd(ctx, dy, _drstd):
        dx, dw = backward_core(ctx, dy, None)
        return dx, dw, None

    torch.library.register_autograd("enigma_fast::rms_norm_fwd", backward_fwd, setup_context=setup_fwd)

    def setup_add(ctx, inputs, output):
        _x, _residual, weight, _eps = inputs
        _y, h, rstd = output
        ctx.save_for_backward(h, weight, rstd)
        ctx.needs_weight_grad = weight is not None and ctx.needs_input_grad[2]

    def backward_add(ctx, dy, dh, _drstd):
        dx, dw = backward_core(ctx, dy, dh)
        return dx, dx, dw, None

    torch.library.register_autograd("enigma_fast::add_rms_norm_fwd", backward_add, setup_context=setup_add)


if _extension.EXTENSION is not None:
    _register()
