"""Public functional API: the fused ops, each falling back to ``enigma_fast.reference`` where no kernel serves."""

from enigma_fast.ops.attention import rel_attention, rel_attention_with_kvcache
from enigma_fast.ops.decode import DecodeGeometry, DecodePack, decode_pack, decode_step, decode_workspace
from enigma_fast.ops.kmer import kmer_count, kmer_decode, kmer_encode, kmer_encode_batch
from enigma_fast.ops.rms_norm import add_rms_norm, rms_norm

__all__ = [
    "DecodeGeometry",
    "DecodePack",
    "add_rms_norm",
    "decode_pack",
    "decode_step",
    "decode_workspace",
    "kmer_count",
    "kmer_decode",
    "kmer_encode",
    "kmer_encode_batch",
    "rel_attention",
    "rel_attention_with_kvcache",
    "rms_norm",
]
