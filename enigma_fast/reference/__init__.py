"""Pure-PyTorch reference implementations of every op: the test oracle and the fallback without the extension.

Written for clarity, not speed. Each function has the same signature and semantics as its ``enigma_fast.ops``
counterpart.
"""

from enigma_fast.reference.attention import rel_attention, rel_attention_with_kvcache
from enigma_fast.reference.decode import decode_step
from enigma_fast.reference.kmer import kmer_count, kmer_decode, kmer_encode, kmer_encode_batch
from enigma_fast.reference.rms_norm import add_rms_norm, rms_norm

__all__ = [
    "add_rms_norm",
    "decode_step",
    "kmer_count",
    "kmer_decode",
    "kmer_encode",
    "kmer_encode_batch",
    "rel_attention",
    "rel_attention_with_kvcache",
    "rms_norm",
]
