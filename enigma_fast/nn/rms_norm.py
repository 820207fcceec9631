"""``RMSNorm`` module on the fused op: a drop-in for ``torch.nn.RMSNorm``, and a helper that swaps it in."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from enigma_fast import ops

__all__ = ["RMSNorm", "replace_rms_norm"]


class RMSNorm(torch.nn.Module):
    """Root-mean-square layer norm over the trailing ``normalized_shape`` dimensions, on the fused kernel.

    ``y = x * rsqrt(mean(x**2 over normalized_shape) + eps) * weight``. Same constructor, attributes and
    ``state_dict`` as ``torch.nn.RMSNorm``: the two load each other's checkpoints. ``eps=None`` means
    ``torch.finfo(x.dtype).eps`` as in torch. A weight of another dtype than x (float32 master weights with
    bfloat16 activations) is cast to x's dtype. An input whose last dimension is not contiguous is copied first.

    ``forward(x, residual)`` additionally fuses the pre-norm residual add: it returns ``(rms_norm(x + residual),
    x + residual)``.
    """

    __constants__ = ["normalized_shape", "eps", "elementwise_affine"]
    normalized_shape: tuple[int, ...]
    eps: float | None
    elementwise_affine: bool

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (int(normalized_shape),)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = torch.nn.Parameter(torch.empty(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set the weight to ones (as torch.nn.RMSNorm)."""
        if self.weight is not None:
            torch.nn.init.ones_(self.weight)

    def _flat(self, x: torch.Tensor, name: str) -> torch.Tensor:
        k = len(self.normalized_shape)
        if tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(
                f"RMSNorm: {name} must end in normalized_shape {self.normalized_shape}, got shape {tuple(x.shape)}"
            )
        if k > 1:
            x = x.reshape(*x.shape[:-k], math.prod(self.normalized_shape))
        if x.shape[-1] > 1 and x.stride(-1) != 1:
            x = x.contiguous()
        return x

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Normalise x ``(..., *normalized_shape)``; with ``residual`` of the same shape return
        ``(y, x + residual)``."""
        eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
        w = self.weight
        if w is not None:
            w = w.reshape(-1)
            if w.dtype != x.dtype:
                w = w.to(x.dtype)
        xf = self._flat(x, "x")
        if residual is None:
            return ops.rms_norm(xf, w, eps).view(x.shape)
        if residual.dtype != x.dtype:
            # Mixed precision: a branch output in the autocast dtype joins a float32 residual stream, which stays
            # in its own dtype.
            xf = xf.to(residual.dtype)
            w = w.to(residual.dtype) if w is not None else None
            eps = self.eps if self.eps is not None else torch.finfo(residual.dtype).eps
        y, h = ops.add_rms_norm(xf, self._flat(residual, "residual"), w, eps)
        return y.view(x.shape), h.view(x.shape)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


def replace_rms_norm(model: torch.nn.Module) -> int:
    """Replace, in place, every ``torch.nn.RMSNorm`` inside ``model`` by an ``enigma_fast.nn.RMSNorm``.

    The new modules take over the old ones' parameters (same tensors, device and dtype), so optimizers and
    state_dict keys are unaffected. Returns the number of modules replaced.
    """
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.RMSNorm) and not isinstance(child, RMSNorm):
                new = RMSNorm.__new__(RMSNorm)
                torch.nn.Module.__init__(new)
                new.normalized_shape = tuple(child.normalized_shape)
                new.eps = child.eps
                new.elementwise_affine = child.elementwise_affine
                if child.weight is not None:
                    new.weight = child.weight
                else:
                    new.register_parameter("weight", None)
                new.train(child.training)
                setattr(parent, name, new)
                count += 1
    if isinstance(model, torch.nn.RMSNorm) and not isinstance(model, RMSNorm):
        raise TypeError("replace_rms_norm: pass the model that contains the RMSNorm, not the RMSNorm itself")
    return count
