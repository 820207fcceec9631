"""Data: FASTA/FASTQ reading and the genome shipped with the package."""

from enigma_fast.data.fasta import (
    SHIPPED_GENOME,
    SequenceFileError,
    iter_records,
    read_sequences,
    shipped_genome,
    shipped_genome_path,
)

__all__ = [
    "SHIPPED_GENOME",
    "SequenceFileError",
    "iter_records",
    "read_sequences",
    "shipped_genome",
    "shipped_genome_path",
]
from enigma_fast.data.tokens import TokenStore, prepare_tokens  # noqa: E402,F401  (memory-mapped token stores)
