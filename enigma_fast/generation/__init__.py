"""Generation: KV-cached batched sampling (greedy, temperature, top-k, top-p) for EnBERT and Enigma."""

from enigma_fast.generation.generator import generate, stream
from enigma_fast.generation.sampling import check_sampling_args, sample

__all__ = ["check_sampling_args", "generate", "sample", "stream"]
