"""Prepared token stores: FASTA/FASTQ files tokenized once into a memory-mapped file.

``prepare_tokens`` streams one or more sequence files (plain or gzip) through a tokenizer and appends the ids to
``tokens.bin``: FASTA is read a block at a time (``fasta.iter_sequence_chunks``) and each stretch of bases is
tokenized in pieces of ``CHUNK_BASES`` that end on a token boundary, so neither a multi-gigabase file nor a
250 Mbp chromosome ever sits in memory, and the ids are those of tokenizing each stretch whole. Training reads
random windows straight from the memory map. A store is a folder::

    tokens.bin       the ids of every segment, back to back (uint8 when the vocabulary fits, else uint16/int32)
    meta.json        format, dtype, policies, the records and the segments (see ``TokenStore``)
    tokenizer.json   the tokenizer that made the ids

Policies applied before tokenizing:

* ``case="upper"`` upper-cases soft-masked (lowercase) bases; ``"keep"`` keeps them (the tokenizer then gives
  them their own tokens, or byte fallback for k-mers).
* ``n_policy="split"`` cuts every run of N (and of other IUPAC codes) out of a record: the record becomes the
  segments of A/C/G/T between them, and no training window ever spans a gap. ``"keep"`` tokenizes the record
  whole (N and IUPAC codes get their own tokens).

A record holding a byte that is no DNA letter (outside A/C/G/T, N and the IUPAC codes, either case) raises
``SequenceFileError`` naming the file, the record and the position: a protein FASTA or a text file fails early.

Writing never loses a user's file: the store is written into a fresh temporary sibling of ``out_dir`` and renamed
into place. An existing ``out_dir`` is replaced only when it is a store this module wrote (its ``meta.json`` carries
the format tag and the folder holds nothing else); an empty folder is filled; anything else is refused with a
``FileExistsError`` naming what is in the way (the rule of ``enigma_fast.files.check_target``, which every writer of
the library follows).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from enigma_fast.data.fasta import SequenceFileError, iter_sequence_chunks
from enigma_fast.files import check_target, install_folder
from enigma_fast.tokenizers import FALLBACK_ALPHABET, DNATokenizer, from_file

__all__ = ["TokenStore", "check_target", "install_folder", "is_token_store", "prepare_tokens"]

logger = logging.getLogger(__name__)

FORMAT = "enigma_fast.tokens"
FORMAT_VERSION = 1
META_NAME = "meta.json"
TOKENS_NAME = "tokens.bin"
TOKENIZER_NAME = "tokenizer.json"
CASE_POLICIES = ("upper", "keep")
N_POLICIES = ("split", "keep")
CHUNK_BASES = 1 << 24  # bases tokenized at a time (16 Mbp): bounds the memory a long chromosome takes

_ALLOWED = np.zeros(256, dtype=bool)
_ALLOWED[np.frombuffer(FALLBACK_ALPHABET.encode(), dtype=np.uint8)] = True
_ALLOWED_BYTES = FALLBACK_ALPHABET.encode()
_GAP = np.ones(256, dtype=bool)  # bytes that end a stretch of A/C/G/T (either case)
_GAP[np.frombuffer(b"ACGTacgt", dtype=np.uint8)] = False
_UPPER = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def is_token_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder written by :func:`prepare_tokens`."""
    return (Path(path) / META_NAME).is_file() and (Path(path) / TOKENS_NAME).is_file()


def _is_own_store(path: Path) -> bool:
    try:
        meta = json.loads((path / META_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


_STORE_NAMES = {META_NAME, TOKENS_NAME, TOKENIZER_NAME}


def _token_dtype(vocab_size: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.int32):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    raise ValueError(f"vocabulary of {vocab_size} ids is too large")


@dataclass
class TokenStore:
    """An opened token store.

    Attributes:
        path: the folder.
        tokens: ``(N,)`` memory-mapped ids of all segments back to back.
        segments: ``(S, 3)`` int64 rows ``(record, token_offset, num_tokens)``: a run of ids that is one
            contiguous stretch of one record (a whole record, or a piece between N runs).
        records: one dict per record: ``name``, ``file``, ``bases`` (its length before any policy).
        tokenizer: the tokenizer that made the ids.
        meta: the parsed meta.json.
    """

    path: Path
    tokens: np.ndarray
    segments: np.ndarray
    records: list[dict[str, Any]]
    tokenizer: DNATokenizer
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: str | os.PathLike) -> TokenStore:
        """Open a store folder read-only (the ids are memory-mapped, not read)."""
        path = Path(path)
        if not is_token_store(path):
            raise FileNotFoundError(f"{path} is not a prepared token folder ({META_NAME} and {TOKENS_NAME} expected)")
        meta = json.loads((path / META_NAME).read_text())
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path / META_NAME}: not an {FORMAT} v{FORMAT_VERSION} file")
        dtype = np.dtype(meta["dtype"])
        n = int(meta["num_tokens"])
        size = (path / TOKENS_NAME).stat().st_size
        if size != n * dtype.itemsize:
            raise ValueError(
                f"{path / TOKENS_NAME}: {size} bytes, expected {n} {dtype} ids ({n * dtype.itemsize} bytes)"
            )
        tokens = np.memmap(path / TOKENS_NAME, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
        segments = np.asarray(meta["segments"], dtype=np.int64).reshape(-1, 3)
        return cls(path, tokens, segments, meta["records"], from_file(str(path / TOKENIZER_NAME)), meta)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_bases(self) -> int:
        """Bases covered by the ids (after the N policy)."""
        return int(self.meta["num_bases"])

    def bases_per_token(self) -> np.ndarray:
        """``(vocab,)`` float64: how many bases each id stands for (``DNATokenizer.bases_per_token``: a k-mer
        ``min(k, stride)``, a fallback byte 1, a special 0)."""
        return self.tokenizer.bases_per_token().astype(np.float64)

    def segment_tokens(self, i: int) -> np.ndarray:
        """The ids of segment ``i`` (a view of the memory map)."""
        _, off, n = self.segments[i]
        return self.tokens[off : off + n]


def _check_bytes(data: bytes, rest: bytes, path: str, name: str, offset: int) -> None:
    """SequenceFileError naming the first byte of ``data`` (at ``offset`` in its record) that is no DNA letter;
    ``rest`` is ``data`` without its A/C/G/T bytes (usually empty: only it is scanned until a bad byte is found)."""
    if not rest.translate(None, _ALLOWED_BYTES):
        return
    pos = int(np.argmax(~_ALLOWED[np.frombuffer(data, dtype=np.uint8)]))
    raise SequenceFileError(
        f"{path}: record {name!r} holds {chr(data[pos])!r} at position {offset + pos}, which is not a DNA letter "
        f"(A/C/G/T, N or an IUPAC code); is this a DNA FASTA/FASTQ file?"
    )


_GAP_LETTERS = [c for c in _ALLOWED_BYTES if c not in b"ACGTacgt"]


def _acgt_runs(data: bytes, rest: bytes) -> tuple[list[int], list[int]]:
    """Starts and stops of the maximal runs of A/C/G/T (either case) in ``data``, found from the positions of the
    other bytes (few: N runs and IUPAC codes; ``rest`` holds them all), so the work beyond one pass over the bytes
    is per gap: a comparison with each gap letter present (one or two, usually N) or a table lookup."""
    arr = np.frombuffer(data, dtype=np.uint8)
    present = [c for c in _GAP_LETTERS if c in rest]
    if len(present) <= 2:
        mask = arr == present[0]
        for c in present[1:]:
            mask |= arr == c
    else:
        mask = _GAP[arr]
    gaps = np.flatnonzero(mask)
    cut = np.flatnonzero(np.diff(gaps) != 1)
    gap_start = gaps[np.concatenate(([0], cut + 1))]
    gap_stop = gaps[np.concatenate((cut, [len(gaps) - 1]))] + 1
    starts = np.concatenate(([0], gap_stop))
    stops = np.concatenate((gap_start, [len(data)]))
    keep = stops > starts
    return starts[keep].tolist(), stops[keep].tolist()


def _encode(tok: DNATokenizer, data: bytearray, dtype: np.dtype) -> np.ndarray:
    """Ids of the bases ``data`` as ``dtype``, exactly as the tokenizer gives them for this piece alone (read in
    place through a uint8 tensor over the buffer)."""
    if not data:
        return np.zeros(0, dtype=dtype)
    ids = tok.encode_tensor(torch.frombuffer(data, dtype=torch.uint8), dtype=torch.int32)
    return ids.numpy().astype(dtype, copy=False)


class _SegmentWriter:
    """Tokenizes the stretches (segments) of bases fed to it and appends their ids to ``f``.

    The pieces of the open segment collect until they hold ``CHUNK_BASES`` bases; they are then joined and
    tokenized up to the last token boundary: with k-mer length k and stride t, the first ``W = n // t`` windows
    when t >= k, else the ``W = (n - k) // t + 1`` complete windows (the ids of ``buf[:(W - 1) t + k]`` less
    those of its tail ``buf[W t : W t + k - t]``, which the next piece covers again); ``buf[W t:]`` stays for the
    next piece. A window's ids depend only on its own bases, so the result equals tokenizing the whole segment at
    once.
    """

    def __init__(self, f: Any, tok: DNATokenizer, dtype: np.dtype, min_segment: int) -> None:
        self.f, self.tok, self.dtype, self.min_segment = f, tok, dtype, min_segment
        self.pending: list[bytes | memoryview] = []
        self.pending_len = 0
        self.record = -1
        self.bases = 0  # of the open segment
        self.tokens = 0  # of the open segment, written
        self.offset = 0  # tokens written in all
        self.total_bases = 0
        self.segments: list[list[int]] = []

    def add(self, record: int, data: bytes | memoryview) -> None:
        """Append bases to the open segment of ``record`` (opening one when none is)."""
        if not len(data):
            return
        self.record = record
        self.pending.append(data)
        self.pending_len += len(data)
        self.bases += len(data)
        if self.pending_len >= CHUNK_BASES and self.bases >= self.min_segment:
            self._flush_aligned()

    def _write(self, ids: np.ndarray) -> None:
        self.f.write(ids.tobytes())
        self.tokens += len(ids)

    def _joined(self) -> bytearray:
        buf = bytearray().join(self.pending)
        self.pending, self.pending_len = [], 0
        return buf

    def _flush_aligned(self) -> None:
        k, t = self.tok.k, self.tok.stride
        if self.pending_len < k:
            return
        buf = self._joined()
        n = len(buf)
        windows = n // t if t >= k else (n - k) // t + 1
        used = windows * t
        if t >= k:
            ids = _encode(self.tok, buf[:used], self.dtype)
        else:
            ids = _encode(self.tok, buf[: used + k - t], self.dtype)
            ids = ids[: len(ids) - len(_encode(self.tok, buf[used : used + k - t], self.dtype))]
        self._write(ids)
        rest = bytes(buf[used:])
        if rest:
            self.pending, self.pending_len = [rest], len(rest)

    def close(self) -> None:
        """End the open segment: tokenize what is left and record it, or drop it when it holds fewer than
        ``min_segment`` bases (nothing of it has been written then)."""
        if not self.bases:
            return
        if self.bases < self.min_segment:
            self.pending, self.pending_len, self.bases = [], 0, 0
            return
        if self.pending:
            self._write(_encode(self.tok, self._joined(), self.dtype))
        self.segments.append([self.record, self.offset, self.tokens])
        self.offset += self.tokens
        self.total_bases += self.bases
        self.bases = self.tokens = 0


class _Progress:
    """Bytes of the input files read: a tqdm bar on a terminal, else a log line every 30 seconds."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()
        self.last = self.t0
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc="prepare", unit="B", unit_scale=True, mininterval=1.0)
            except ImportError:
                pass
        self.enabled = enabled

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if self.enabled and now - self.last >= 30.0:
            self.last = now
            logger.info(
                "prepare: %.1f of %.1f MB read (%.0f%%), %.1f MB/s",
                self.done / 1e6,
                self.total / 1e6,
                100.0 * self.done / max(self.total, 1),
                self.done / 1e6 / (now - self.t0),
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def prepare_tokens(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    tokenizer: DNATokenizer,
    case: str = "upper",
    n_policy: str = "split",
    min_segment: int = 2,
    progress: bool = True,
) -> TokenStore:
    """Tokenize the records of ``inputs`` (FASTA/FASTQ, plain or gzip) into the store folder ``out_dir``.

    Files are read a block at a time and tokenized as they are read (memory stays bounded; see the module doc);
    each record becomes one or more segments (``n_policy``), each at least ``min_segment`` bases long (shorter
    ones are dropped). ``progress`` shows a bar of the bytes read (on a terminal; a log line every 30 s
    otherwise). The folder is written beside its final place and renamed into it, so a crash never leaves a
    half-written store. An existing ``out_dir`` must be empty or a store written here before (see the module
    doc). Raises FileNotFoundError for a missing file, FileExistsError when ``out_dir`` holds anything else,
    SequenceFileError for unreadable or non-DNA content and ValueError when no bases remain.
    """
    if case not in CASE_POLICIES:
        raise ValueError(f"case must be one of {CASE_POLICIES}, got {case!r}")
    if n_policy not in N_POLICIES:
        raise ValueError(f"n_policy must be one of {N_POLICIES}, got {n_policy!r}")
    if not inputs:
        raise ValueError("no sequence files given")
    for p in inputs:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"sequence file not found: {p}")
    out_dir = Path(os.path.realpath(out_dir))  # "." gets a name and a parent; a symlink, its folder
    what = "prepare_tokens"
    check_target(out_dir, _STORE_NAMES, _is_own_store, what)  # before any work: fail early
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    dtype = _token_dtype(tokenizer.vocab_size)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp.", dir=out_dir.parent))
    # upper-case soft-masked bases here unless the tokenizer folds case itself (same ids, no copy)
    fold = case == "upper" and getattr(tokenizer, "case", None) != "upper"
    t0 = time.perf_counter()
    bar = _Progress(sum(os.path.getsize(p) for p in inputs), progress)
    try:
        records: list[dict[str, Any]] = []
        with open(tmp / TOKENS_NAME, "wb") as f:
            out = _SegmentWriter(f, tokenizer, dtype, min_segment)
            for path in inputs:
                current = -1  # index of the record being read in this file
                for rec, name, data in iter_sequence_chunks(path, on_read=bar.update):
                    if rec != current:  # a new record: the previous one's last segment ends
                        out.close()
                        current = rec
                        records.append({"name": name, "file": os.fspath(path), "bases": 0})
                    rid, done = len(records) - 1, records[-1]["bases"]
                    rest = data.translate(None, b"ACGTacgt")  # what is not A/C/G/T (mostly nothing)
                    _check_bytes(data, rest, os.fspath(path), name, done)
                    records[-1]["bases"] = done + len(data)
                    if fold:
                        data = data.translate(_UPPER)
                    if n_policy == "keep" or not rest:
                        out.add(rid, data)  # all A/C/G/T (or kept whole): the open segment runs on
                        continue
                    view = memoryview(data)
                    starts, stops = _acgt_runs(data, rest)
                    for start, stop in zip(starts, stops, strict=True):
                        if start > 0:  # a gap (N, IUPAC) before this run ends the open segment
                            out.close()
                        out.add(rid, view[start:stop])
                    if not stops or stops[-1] < len(data):
                        out.close()
                out.close()
            f.flush()
            os.fsync(f.fileno())
        segments, offset, bases = out.segments, out.offset, out.total_bases
        if not records:
            raise SequenceFileError(f"no sequences found in {', '.join(map(os.fspath, inputs))}")
        if not segments:
            raise SequenceFileError(
                f"no usable bases in {', '.join(map(os.fspath, inputs))} ({len(records)} records; every stretch of "
                f"A/C/G/T is shorter than {min_segment} bases or the records are empty)"
            )
        tokenizer.save(tmp / TOKENIZER_NAME)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dtype": dtype.name,
            "num_tokens": offset,
            "num_bases": bases,
            "case": case,
            "n_policy": n_policy,
            "inputs": [os.fspath(p) for p in inputs],
            "records": records,
            "segments": segments,
        }
        (tmp / META_NAME).write_text(json.dumps(meta) + "\n")
        check_target(out_dir, _STORE_NAMES, _is_own_store, what)  # again: it may have changed meanwhile
        install_folder(tmp, out_dir, last=META_NAME)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    secs = time.perf_counter() - t0
    logger.info(
        "prepared %d tokens (%d bases, %d records, %d segments) in %s: %.1f s, %.1f Mbases/s",
        offset,
        bases,
        len(records),
        len(segments),
        out_dir,
        secs,
        sum(r["bases"] for r in records) / 1e6 / secs,
    )
    return TokenStore.open(out_dir)
