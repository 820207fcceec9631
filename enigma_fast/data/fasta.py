"""FASTA/FASTQ reading (plain or gzip, format detected from the content) through dnaio, and the shipped genome.

Every failure to read a file (malformed record, truncated gzip, bytes that are not text) raises
``SequenceFileError`` naming the file and the record where it happened.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "SHIPPED_GENOME",
    "Record",
    "SequenceFileError",
    "iter_records",
    "read_sequences",
    "shipped_genome",
    "shipped_genome_path",
]

logger = logging.getLogger(__name__)

# Corynebacterium diphtheriae NCTC11397 chromosome, RefSeq GCF_001457455.1 (see PROVENANCE.md).
SHIPPED_GENOME = "GCF_001457455.1_NCTC11397_genomic.fna.gz"


class SequenceFileError(ValueError):
    """A sequence file could not be read; the message names the file and the record."""


class Record(NamedTuple):
    """One FASTA/FASTQ record: the header line (without '>'/'@') and the sequence."""

    name: str
    sequence: str


def iter_records(path: str | os.PathLike) -> Iterator[Record]:
    """Records of a FASTA or FASTQ file (plain or gzip/bz2/xz), in file order.

    Raises SequenceFileError (file and record number, and the last good record's name) on malformed input,
    FileNotFoundError when the file is missing.
    """
    import dnaio

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"sequence file not found: {path}")
    count = 0
    last = None
    try:
        with dnaio.open(path) as reader:
            for rec in reader:
                count += 1
                last = rec.name
                yield Record(rec.name, rec.sequence)
    except (dnaio.exceptions.FileFormatError, EOFError, OSError, UnicodeDecodeError, ValueError) as err:
        after = f" (after record {count}, {last!r})" if last is not None else " (before the first record)"
        raise SequenceFileError(f"{path}: cannot read record {count + 1}{after}: {err}") from err


def read_sequences(path: str | os.PathLike, min_length: int = 0) -> list[str]:
    """The sequences of a FASTA/FASTQ file, those shorter than ``min_length`` dropped."""
    seqs = [r.sequence for r in iter_records(path) if len(r.sequence) >= min_length]
    logger.info("read %d sequences (%d bases) from %s", len(seqs), sum(map(len, seqs)), path)
    return seqs


def shipped_genome_path() -> Path:
    """Path of the genome shipped as package data (gzip FASTA, one 2,463,666-base chromosome)."""
    return Path(str(resources.files("enigma_fast.data").joinpath(SHIPPED_GENOME)))


def shipped_genome() -> str:
    """The shipped chromosome as one upper-case A/C/G/T string."""
    return "".join(read_sequences(shipped_genome_path()))
