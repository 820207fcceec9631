"""Modules built on the fused ops."""

from enigma_fast.nn.attention import KVCache, RelativeMultiHeadAttention
from enigma_fast.nn.rms_norm import RMSNorm, replace_rms_norm

__all__ = ["KVCache", "RMSNorm", "RelativeMultiHeadAttention", "replace_rms_norm"]
