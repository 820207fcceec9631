"""FASTA/FASTQ reading (plain or gzip, format detected from the content) through dnaio, a streaming FASTA reader
for genome-scale files, and the shipped genome.

``iter_records`` gives whole records (a chromosome is one string); ``iter_sequence_chunks`` gives the sequence of
each FASTA record in pieces of at most ``READ_BYTES`` bytes read straight from the (decompressed) file, so memory
stays bounded whatever the record lengths. Every failure to read a file (malformed record, truncated gzip, bytes
that are not text) raises ``SequenceFileError`` naming the file and the record where it happened.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import zlib
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import BinaryIO, NamedTuple

__all__ = [
    "SHIPPED_GENOME",
    "Record",
    "SeqChunk",
    "SequenceFileError",
    "iter_records",
    "iter_sequence_chunks",
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

    @property
    def id(self) -> str:
        """The header's first word (the whole header when it has no word), as output files name the record."""
        words = self.name.split(maxsplit=1)
        return words[0] if words else self.name


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


class SeqChunk(NamedTuple):
    """A piece of one record's sequence: ``record`` is the record's index in its file (every record gives at
    least one piece, an empty record one empty piece; consecutive pieces of a record share the index), ``name``
    its header line, ``data`` the next bases (line breaks and other whitespace removed; a new object, never a
    view of the reader's buffer)."""

    record: int
    name: str
    data: bytes | bytearray


READ_BYTES = 1 << 24  # bytes read from a (decompressed) FASTA file at a time
_WHITESPACE = b" \t\r\n\v\f"


def _open_binary(path: str) -> tuple[BinaryIO, BinaryIO]:
    """``(raw, stream)``: the file as opened and its decompressed content (gzip, bz2, xz by their magic bytes);
    ``raw.tell()`` is how far into the file the stream has read."""
    raw = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    magic = raw.read(6)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        try:
            from isal import igzip

            return raw, igzip.IGzipFile(fileobj=raw)
        except ImportError:
            return raw, gzip.GzipFile(fileobj=raw)
    if magic[:3] == b"BZh":
        return raw, bz2.BZ2File(raw)
    if magic == b"\xfd7zXZ\x00":
        return raw, lzma.LZMAFile(raw)
    return raw, raw


def iter_sequence_chunks(path: str | os.PathLike, on_read: Callable[[int], None] | None = None) -> Iterator[SeqChunk]:
    """The records of a sequence file as :class:`SeqChunk` pieces of at most ``READ_BYTES`` bases, in file order.

    A FASTA file (plain, gzip, bz2 or xz) is parsed here, a block of ``READ_BYTES`` at a time: memory stays
    bounded however long a record is. A header is a line starting with ``>`` (its text, as dnaio gives it, is the
    name); every other line is sequence, whitespace removed. Anything else (FASTQ, a file not starting with ``>``)
    goes through :func:`iter_records`, one whole record a piece. ``on_read(n)`` is called with the bytes of the
    file read since the last call (for a progress bar). Raises SequenceFileError (file, record) on unreadable
    content, FileNotFoundError when the file is missing.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"sequence file not found: {path}")
    raw, stream = _open_binary(path)
    record, name = -1, ""
    try:
        with raw, stream:
            buf = stream.read(READ_BYTES).lstrip(_WHITESPACE)
            while not buf:  # blank lines before the first record (or an empty file)
                more = stream.read(READ_BYTES)
                if not more:
                    break
                buf = more.lstrip(_WHITESPACE)
            if not buf.startswith(b">"):
                stream.close()
                yield from _whole_records(path, on_read)
                return
            done = 0
            for chunk in _parse_fasta(stream, buf, path):
                record, name = chunk.record, chunk.name
                if on_read is not None:
                    pos = raw.tell()
                    on_read(pos - done)
                    done = pos
                yield chunk
            if on_read is not None:
                on_read(os.path.getsize(path) - done)
    except (EOFError, OSError, zlib.error, lzma.LZMAError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise SequenceFileError(f"{path}: cannot read record {record + 2}{_after(record, name)}: {err}") from err


def _after(record: int, name: str) -> str:
    return f" (after record {record + 1}, {name!r})" if record >= 0 else " (before the first record)"


def _whole_records(path: str, on_read: Callable[[int], None] | None) -> Iterator[SeqChunk]:
    for i, rec in enumerate(iter_records(path)):
        try:
            data = rec.sequence.encode("ascii")
        except UnicodeEncodeError:
            raise SequenceFileError(
                f"{path}: record {rec.name!r} holds non-ASCII characters; is this a DNA FASTA/FASTQ file?"
            ) from None
        yield SeqChunk(i, rec.name, data.translate(None, _WHITESPACE))
    if on_read is not None:
        on_read(os.path.getsize(path))


class _Blocks:
    """Reads a stream into one reused buffer (``readinto``: no fresh allocation per block)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.buf = bytearray(READ_BYTES)
        self.view = memoryview(self.buf)

    def next(self) -> bytearray:
        """The next block (empty at the end), valid until the next call."""
        n = self.stream.readinto(self.view)
        return self.buf if n == len(self.buf) else self.buf[:n]


def _parse_fasta(stream: BinaryIO, first: bytes, path: str) -> Iterator[SeqChunk]:
    """FASTA records of ``first`` (starting with ``>``) followed by the rest of ``stream``, in pieces."""
    blocks = _Blocks(stream)
    buf: bytes | bytearray = first
    record, name = -1, ""
    given = True  # whether the current record has given a piece yet (none before the first header)
    pos, line_start = 0, True
    while True:
        if line_start and buf.startswith(b">", pos):  # a header line
            nl = buf.find(b"\n", pos)
            while nl < 0:  # the header runs on into the next block
                carry = bytes(buf[pos:])  # (before the next read overwrites the block)
                more = blocks.next()
                buf, pos = carry + more, 0
                nl = buf.find(b"\n") if more else len(buf)
            header = bytes(buf[pos + 1 : nl]).rstrip(b"\r")
            if not given:
                yield SeqChunk(record, name, b"")
            record, given = record + 1, False
            try:
                name = header.decode("ascii")
            except UnicodeDecodeError:
                raise SequenceFileError(
                    f"{path}: the header of record {record + 1} holds non-ASCII characters; is this a DNA FASTA file?"
                ) from None
            pos = nl + 1
            continue
        j = buf.find(b">", pos)  # the next header: a '>' at the start of a line
        while j > pos and buf[j - 1] != 10:
            j = buf.find(b">", j + 1)
        if j > pos or (j == pos and line_start):  # sequence up to the next header
            data = buf[pos:j].translate(None, _WHITESPACE)
            pos, line_start = j, True
        else:  # the whole rest of the block is sequence
            data = (buf if pos == 0 else buf[pos:]).translate(None, _WHITESPACE)
            line_start = buf.endswith(b"\n") if len(buf) > pos else line_start
            buf, pos = blocks.next(), 0
        if data:
            yield SeqChunk(record, name, data)
            given = True
        if not buf:
            if not given:
                yield SeqChunk(record, name, b"")
            return


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
