"""Generation: KV-cached batched sampling (greedy, temperature, top-k, top-p) for EnBERT and Enigma, and infilling
of gaps with an Enigma trained by span corruption.

The generator drives any model through its decoding hooks (``allocate_cache``, ``cache_length``, ``prefill``,
``decode_step``, ``max_new_tokens_for``, ``config``) and imports no model: it sits below ``enigma_fast.models``,
whose ``generate`` and ``infill`` methods call it."""

from enigma_fast.generation.generator import generate, stream
from enigma_fast.generation.infill import MaskedSequence, fill_gaps, infill, parse_masked
from enigma_fast.generation.sampling import check_sampling_args, sample
from enigma_fast.generation.timing import GenerationTiming, timed_generate

__all__ = [
    "GenerationTiming",
    "MaskedSequence",
    "check_sampling_args",
    "fill_gaps",
    "generate",
    "infill",
    "parse_masked",
    "sample",
    "stream",
    "timed_generate",
]
