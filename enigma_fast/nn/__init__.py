"""Modules built on the fused ops."""

from enigma_fast.nn.rms_norm import RMSNorm, replace_rms_norm

__all__ = ["RMSNorm", "replace_rms_norm"]
