"""Prepared token stores: FASTA/FASTQ files tokenized once into a memory-mapped file.

``prepare_tokens`` streams the records of one or more sequence files (plain or gzip) through a tokenizer and
appends the ids to ``tokens.bin``, so a 3 Gbp genome never has to sit in memory as tokens: training reads random
windows straight from the memory map. A store is a folder::

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
``FileExistsError`` naming what is in the way. :func:`check_target` and :func:`install_folder` implement that rule
for every writer of the library (checkpoint folders use them too).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from enigma_fast.data.fasta import SequenceFileError, iter_records
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
_ACGT = np.zeros(256, dtype=bool)
_ACGT[np.frombuffer(b"ACGTacgt", dtype=np.uint8)] = True
_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a") : ord("z") + 1] -= 32


def is_token_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder written by :func:`prepare_tokens`."""
    return (Path(path) / META_NAME).is_file() and (Path(path) / TOKENS_NAME).is_file()


def check_target(path: str | os.PathLike, own_names: set[str], is_own: Callable[[Path], bool], what: str) -> None:
    """Refuse (``FileExistsError``) to write the folder ``path`` unless it is absent, an empty folder, or a folder
    ``is_own`` recognises as written by the library that holds no name outside ``own_names``. ``what`` names the
    writer in the message. Nothing is touched."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder; {what} writes its folder only where nothing "
                              "is, into an empty folder or over its own earlier output")
    names = sorted(os.listdir(path))
    if not names:
        return
    foreign = [n for n in names if n not in own_names]
    if foreign or not is_own(path):
        shown = foreign or names
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        raise FileExistsError(f"{path} holds files that {what} did not write ({', '.join(shown[:5])}{more}) and "
                              "it never removes or replaces those: choose a new or empty folder")


def install_folder(tmp: str | os.PathLike, target: str | os.PathLike, last: str | None = None) -> None:
    """Move the complete folder ``tmp`` (a sibling of ``target``) to ``target``, which the caller has checked with
    :func:`check_target`: absent (one rename), an empty folder (its files are moved in, ``last`` after the others,
    so the folder itself -- a mount point, a working directory -- stays), or the library's earlier output (renamed
    aside, ``tmp`` renamed in, the old one removed: a crash between the two renames leaves it whole under the
    hidden name ``.<name>.old.*``)."""
    tmp, target = Path(tmp), Path(target)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; the result gets the usual permissions
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    if target.is_dir() and not os.listdir(target):
        for name in sorted(os.listdir(tmp), key=lambda n: (n == last, n)):
            shutil.move(tmp / name, target / name)
        tmp.rmdir()
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.rename(target, aside)  # onto the empty folder just made
    os.rename(tmp, target)
    shutil.rmtree(aside)


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
            raise ValueError(f"{path / TOKENS_NAME}: {size} bytes, expected {n} {dtype} ids "
                             f"({n * dtype.itemsize} bytes)")
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
        """``(vocab,)`` float64: how many bases each id stands for (a k-mer k, a fallback byte 1, a special 0)."""
        tok = self.tokenizer
        cover = min(tok.k, tok.stride)
        out = np.zeros(tok.vocab_size, dtype=np.float64)
        for piece, i in tok.pieces.items():
            out[i] = cover if len(piece) == tok.k else len(piece)
        for ch, i in tok.fallback_ids.items():
            out[i] = len(ch)
        return out

    def segment_tokens(self, i: int) -> np.ndarray:
        """The ids of segment ``i`` (a view of the memory map)."""
        _, off, n = self.segments[i]
        return self.tokens[off : off + n]


def _check_bytes(arr: np.ndarray, path: str, name: str) -> None:
    bad = ~_ALLOWED[arr]
    if bad.any():
        pos = int(np.argmax(bad))
        raise SequenceFileError(
            f"{path}: record {name!r} holds {chr(arr[pos])!r} at position {pos}, which is not a DNA letter "
            f"(A/C/G/T, N or an IUPAC code); is this a DNA FASTA/FASTQ file?"
        )


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of the maximal runs of True in a boolean array."""
    if not mask.size:
        return []
    d = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    starts, stops = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _encode(tok: DNATokenizer, data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Ids of one stretch of bases, tokenized in chunks that end on a window boundary (stride = k)."""
    if tok.stride != tok.k or len(data) <= CHUNK_BASES:
        return tok.encode_tensor(data.tobytes()).numpy().astype(dtype)
    step = CHUNK_BASES - CHUNK_BASES % tok.k
    return np.concatenate([tok.encode_tensor(data[i : i + step].tobytes()).numpy().astype(dtype)
                           for i in range(0, len(data), step)])


def prepare_tokens(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    tokenizer: DNATokenizer,
    case: str = "upper",
    n_policy: str = "split",
    min_segment: int = 2,
) -> TokenStore:
    """Tokenize the records of ``inputs`` (FASTA/FASTQ, plain or gzip) into the store folder ``out_dir``.

    Records are read one at a time; each becomes one or more segments (``n_policy``), each at least
    ``min_segment`` bases long (shorter ones are dropped). The folder is written beside its final place and
    renamed into it, so a crash never leaves a half-written store. An existing ``out_dir`` must be empty or a store
    written here before (see the module doc). Raises FileNotFoundError for a missing file, FileExistsError when
    ``out_dir`` holds anything else, SequenceFileError for unreadable or non-DNA content and ValueError when no
    bases remain.
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
    try:
        records: list[dict[str, Any]] = []
        segments: list[list[int]] = []
        offset = bases = 0
        with open(tmp / TOKENS_NAME, "wb") as f:
            for path in inputs:
                for rec in iter_records(path):
                    try:
                        raw = rec.sequence.encode("ascii")
                    except UnicodeEncodeError:
                        raise SequenceFileError(f"{path}: record {rec.name!r} holds non-ASCII characters; "
                                                "is this a DNA FASTA/FASTQ file?") from None
                    arr = np.frombuffer(raw, dtype=np.uint8)
                    _check_bytes(arr, os.fspath(path), rec.name)
                    if case == "upper":
                        arr = _UPPER[arr]
                    rid = len(records)
                    records.append({"name": rec.name, "file": os.fspath(path), "bases": len(arr)})
                    spans = _runs(_ACGT[arr]) if n_policy == "split" else ([(0, len(arr))] if len(arr) else [])
                    for start, stop in spans:
                        if stop - start < min_segment:
                            continue
                        ids = _encode(tokenizer, arr[start:stop], dtype)
                        f.write(ids.tobytes())
                        segments.append([rid, offset, len(ids)])
                        offset += len(ids)
                        bases += stop - start
            f.flush()
            os.fsync(f.fileno())
        if not records:
            raise SequenceFileError(f"no sequences found in {', '.join(map(os.fspath, inputs))}")
        if not segments:
            raise SequenceFileError(
                f"no usable bases in {', '.join(map(os.fspath, inputs))} ({len(records)} records; every stretch of "
                f"A/C/G/T is shorter than {min_segment} bases or the records are empty)"
            )
        tokenizer.save(tmp / TOKENIZER_NAME)
        meta = {
            "format": FORMAT, "version": FORMAT_VERSION, "dtype": dtype.name, "num_tokens": offset,
            "num_bases": bases, "case": case, "n_policy": n_policy, "inputs": [os.fspath(p) for p in inputs],
            "records": records, "segments": segments,
        }
        (tmp / META_NAME).write_text(json.dumps(meta) + "\n")
        check_target(out_dir, _STORE_NAMES, _is_own_store, what)  # again: it may have changed meanwhile
        install_folder(tmp, out_dir, last=META_NAME)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("prepared %d tokens (%d bases, %d records, %d segments) in %s", offset, bases, len(records),
                len(segments), out_dir)
    return TokenStore.open(out_dir)
