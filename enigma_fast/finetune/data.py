"""Labelled sequences for fine-tuning: reading the files, the label vocabulary, tokenizing and batching.

Files (``read_labelled``):

* **CSV/TSV**, the layout of the GUE and Nucleotide Transformer benchmark files: a header naming a ``sequence``
  and a ``label`` column (any order, other columns ignored; an ``id``/``name`` column names the records), one
  record a row. ``.tsv``/``.tab``/``.txt`` are tab-separated, ``.csv`` comma-separated, anything else by what the
  header holds; gzip (``.gz``) is read. A file without a header whose first row is ``DNA,label`` is read as
  ``sequence,label`` columns.
* **FASTA/FASTQ** (``.fa``, ``.fasta``, ``.fna``, ``.fq``, ``.fastq``, plain or gzip): the label is in the header,
  as ``label=VALUE`` anywhere in it, or else its last word (``>seq17 1``).

Labels by task: ``classification``, a class name per record (any string; classes are the distinct names of the
training file, sorted numerically when all are integers); ``regression``, a number; ``token-classification``, a
string of one class character per base (``0001110``), as long as the sequence. Every bad label is a one-line
ValueError naming the file, the line (or record) and what was expected.

Batches (``collate``) are **left-padded**: row b's tokens sit at the end of the row, ``key_start[b]`` is the first
real one. Both models read left-padded rows exactly as unpadded ones (relative attention is shift-invariant and
Enigma's positions are shifted with the padding), and the last real token of every row is at column ``T - 1``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from enigma_fast.data.fasta import iter_records
from enigma_fast.scoring import bases_per_token
from enigma_fast.tokenizers import DNATokenizer

__all__ = [
    "TASKS",
    "Batch",
    "Encoded",
    "LabelledData",
    "class_names",
    "collate",
    "encode",
    "label_indices",
    "read_labelled",
    "read_sequences_file",
]

TASKS = ("classification", "regression", "token-classification")
IGNORE = -100  # a padded base or token: no loss, no metric
_FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".ffn", ".fas", ".fq", ".fastq")
_TAB_SUFFIXES = (".tsv", ".tab", ".txt")
_DNA = frozenset("ACGTNacgtnRYSWKMBDHVryswkmbdhv")


@dataclass
class LabelledData:
    """Records of one file: ``names`` and ``seqs`` (N each) and ``labels`` (N raw label strings; empty strings when
    the file was read without labels). ``source`` names the file in messages; ``where[i]`` says where record i is
    (``line 17``, ``record 3``)."""

    names: list[str]
    seqs: list[str]
    labels: list[str]
    source: str
    where: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seqs)


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return task


def _is_fasta(path: str) -> bool:
    name = path.lower().removesuffix(".gz")
    return name.endswith(_FASTA_SUFFIXES)


def _open_text(path: str) -> io.TextIOBase:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _looks_dna(text: str) -> bool:
    return bool(text) and _DNA.issuperset(text)


def _read_table(path: str, with_labels: bool) -> LabelledData:
    name = path.lower().removesuffix(".gz")
    try:
        with _open_text(path) as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    delim = "\t" if name.endswith(_TAB_SUFFIXES) else "," if name.endswith(".csv") else ("\t" if "\t" in first else ",")
    rows = csv.reader(io.StringIO(text), delimiter=delim)
    header: list[str] | None = None
    out = LabelledData([], [], [], path)
    seq_col, label_col, id_col = 0, 1, None
    for lineno, row in enumerate(rows, start=1):
        if not row or all(not c.strip() for c in row):
            continue
        cells = [c.strip() for c in row]
        if header is None:
            header = [c.lower() for c in cells]
            if "sequence" in header:
                seq_col = header.index("sequence")
                label_col = header.index("label") if "label" in header else None
                id_col = next((header.index(k) for k in ("id", "name") if k in header), None)
                if with_labels and label_col is None:
                    raise ValueError(f"{path} line {lineno}: the header must name a 'label' column, got {cells}")
                continue
            if not _looks_dna(cells[0]):
                raise ValueError(
                    f"{path} line {lineno}: expected a header naming the columns 'sequence' and 'label' "
                    f"(or rows of DNA,label), got {delim.join(cells)[:80]!r}"
                )
            header = ["sequence", "label"]  # no header: the first row is data
            label_col = 1 if len(cells) > 1 else None
        want = max(seq_col, label_col if with_labels and label_col is not None else 0)
        if len(cells) <= want:
            raise ValueError(
                f"{path} line {lineno}: expected {want + 1} columns (sequence and label), got {len(cells)}: "
                f"a record without its label"
            )
        out.seqs.append(cells[seq_col])
        out.labels.append(cells[label_col] if label_col is not None and label_col < len(cells) else "")
        out.names.append(cells[id_col] if id_col is not None and id_col < len(cells) else f"seq{len(out.seqs)}")
        out.where.append(f"line {lineno}")
    return out


def _header_label(header: str) -> str:
    words = header.split()
    for w in words[1:]:
        if w.startswith("label="):
            return w[len("label=") :]
    return words[-1] if len(words) >= 2 else ""


def read_labelled(path: str | os.PathLike, with_labels: bool = True) -> LabelledData:
    """The records of a labelled CSV/TSV or FASTA/FASTQ file (see the module doc); ``with_labels=False`` reads the
    sequences only (labels then empty strings). Raises FileNotFoundError for a missing file and a one-line
    ValueError for an empty file, a missing column or label, or a sequence that is not DNA."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"file not found: {path}")
    if _is_fasta(path):
        out = LabelledData([], [], [], path)
        for i, rec in enumerate(iter_records(path), start=1):
            words = rec.name.split()
            label = _header_label(rec.name)
            if with_labels and not label:
                raise ValueError(
                    f"{path} record {i} ({words[0] if words else ''}): the header holds no label; expected "
                    "'label=VALUE' or the label as its last word"
                )
            out.names.append(words[0] if words else f"seq{i}")
            out.seqs.append(rec.sequence)
            out.labels.append(label)
            out.where.append(f"record {i}")
    else:
        out = _read_table(path, with_labels)
    if not len(out):
        raise ValueError(f"{path} holds no records")
    for i, s in enumerate(out.seqs):
        if not s:
            raise ValueError(f"{path} {out.where[i]}: empty sequence")
    return out


def read_sequences_file(path: str | os.PathLike) -> LabelledData:
    """Records to predict: a FASTA/FASTQ file (its labels, if any, ignored) or a CSV/TSV with a ``sequence``
    column."""
    return read_labelled(path, with_labels=False)


# ----------------------------------------------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------------------------------------------
def _sorted_classes(names: set[str]) -> list[str]:
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


def class_names(task: str, train: LabelledData) -> list[str]:
    """The classes of ``task`` as the training file has them: distinct labels (classification) or distinct label
    characters (token-classification), sorted numerically when all are integers, else as strings; ``[]`` for
    regression. ValueError when there are fewer than two."""
    _check_task(task)
    if task == "regression":
        return []
    seen: set[str] = set()
    for lab, where in zip(train.labels, train.where, strict=True):
        if not lab:
            raise ValueError(f"{train.source} {where}: empty label")
        seen.update(lab if task == "token-classification" else [lab])
    classes = _sorted_classes(seen)
    if len(classes) < 2:
        raise ValueError(f"{train.source}: {task} needs at least 2 classes in the training file, got {classes}")
    return classes


def label_indices(task: str, data: LabelledData, classes: Sequence[str]) -> list[Any]:
    """Labels of ``data`` as model targets: class indices ``int`` (classification), ``float`` (regression) or
    ``(L,)`` int64 arrays of per-base class indices (token-classification). A label outside ``classes`` (a class
    missing from the training file), a non-number, or a per-base string not as long as its sequence raises a
    one-line ValueError naming the file and line."""
    _check_task(task)
    index = {c: i for i, c in enumerate(classes)}
    out: list[Any] = []
    for lab, seq, where in zip(data.labels, data.seqs, data.where, strict=True):
        if not lab:
            raise ValueError(f"{data.source} {where}: empty label")
        if task == "regression":
            try:
                v = float(lab)
            except ValueError:
                raise ValueError(f"{data.source} {where}: regression label must be a number, got {lab!r}") from None
            if not math.isfinite(v):
                raise ValueError(f"{data.source} {where}: regression label must be finite, got {lab!r}")
            out.append(v)
        elif task == "classification":
            if lab not in index:
                raise ValueError(
                    f"{data.source} {where}: label {lab!r} is not a class of the training file ({', '.join(classes)})"
                )
            out.append(index[lab])
        else:
            if len(lab) != len(seq):
                raise ValueError(
                    f"{data.source} {where}: per-base labels must be one class character per base: "
                    f"{len(seq)} bases, got {len(lab)} labels"
                )
            bad = set(lab) - set(index)
            if bad:
                raise ValueError(
                    f"{data.source} {where}: per-base class {sorted(bad)[0]!r} is not a class of the training "
                    f"file ({', '.join(classes)})"
                )
            table = np.full(256, -1, dtype=np.int64)
            for c, i in index.items():
                table[ord(c)] = i
            out.append(table[np.frombuffer(lab.encode("latin-1"), dtype=np.uint8)])
    return out


# ----------------------------------------------------------------------------------------------------------------
# tokens and batches
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Encoded:
    """A tokenized dataset: ``ids`` N arrays ``(T_i,)`` int64; ``targets`` (class indices, values or per-base
    arrays, None without labels); ``base_token`` N arrays ``(L_i,)``: the token each base belongs to (token tasks,
    else None); ``names``; ``fingerprint``: a hash of the sequences and labels (resume checks it)."""

    ids: list[np.ndarray]
    targets: list[Any] | None
    base_token: list[np.ndarray] | None
    names: list[str]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.ids)


def encode(
    tok: DNATokenizer,
    data: LabelledData,
    *,
    task: str,
    classes: Sequence[str] = (),
    max_tokens: int | None = None,
    with_targets: bool = True,
) -> Encoded:
    """Tokenize ``data`` with ``tok``; targets from ``label_indices``. Token tasks also map every base to its token
    (a k-mer's k bases, a fallback letter's one: ``scoring.bases_per_token``, the rule of the per-base scoring
    tracks). ``max_tokens``: a record with more tokens raises ValueError naming it (the model's block_size)."""
    _check_task(task)
    bpt = bases_per_token(tok)
    ids, base_tok = [], []
    h = hashlib.sha256(task.encode())
    for i, (s, where) in enumerate(zip(data.seqs, data.where, strict=True)):
        try:
            x = tok.encode_tensor(s).numpy().astype(np.int64, copy=False)
        except ValueError as err:
            raise ValueError(f"{data.source} {where}: {err}") from None
        if max_tokens is not None and len(x) > max_tokens:
            raise ValueError(
                f"{data.source} {where}: {len(s)} bases make {len(x)} tokens, more than the model's "
                f"block_size of {max_tokens}"
            )
        ids.append(x)
        if task == "token-classification":
            counts = bpt[x]
            if int(counts.sum()) != len(s):
                raise ValueError(
                    f"{data.source} {where}: the tokenizer must stand for every base: {len(s)} bases, its tokens "
                    f"stand for {int(counts.sum())}"
                )
            base_tok.append(np.repeat(np.arange(len(x), dtype=np.int64), counts))
        h.update(s.encode("latin-1", "replace") + b"\0" + data.labels[i].encode() + b"\n")
    targets = label_indices(task, data, classes) if with_targets else None
    return Encoded(ids, targets, base_tok if task == "token-classification" else None, list(data.names), h.hexdigest())


@dataclass
class Batch:
    """One left-padded batch: ``input_ids`` ``(B, T)`` int64, ``attention_mask`` ``(B, T)`` int64 (1 = token),
    ``labels`` (``(B,)`` int64 classes, ``(B,)`` float32 values, or ``(B, L)`` int64 per-base classes with
    ``-100`` on padding; None without targets) and, for token tasks, ``base_token_index`` ``(B, L)`` int64: the
    column of each base's token in ``input_ids`` (0 on padding)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    base_token_index: torch.Tensor | None

    def to(self, device: torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.input_ids), move(self.attention_mask), move(self.labels), move(self.base_token_index))


def collate(enc: Encoded, rows: Sequence[int], pad_id: int, task: str) -> Batch:
    """The batch of records ``rows`` of ``enc``, left-padded with ``pad_id`` (see the module doc)."""
    rows = list(rows)
    lens = np.array([len(enc.ids[r]) for r in rows], dtype=np.int64)
    T = int(lens.max())
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=np.int64)
    for j, r in enumerate(rows):
        ids[j, T - lens[j] :] = enc.ids[r]
        mask[j, T - lens[j] :] = 1
    labels = base_index = None
    if task == "token-classification":
        L = max(len(enc.base_token[r]) for r in rows)
        base_index = np.zeros((len(rows), L), dtype=np.int64)
        lab = np.full((len(rows), L), IGNORE, dtype=np.int64)
        for j, r in enumerate(rows):
            n = len(enc.base_token[r])
            base_index[j, :n] = enc.base_token[r] + (T - lens[j])
            if enc.targets is not None:
                lab[j, :n] = enc.targets[r]
        labels = torch.from_numpy(lab) if enc.targets is not None else None
        base_index = torch.from_numpy(base_index)
    elif enc.targets is not None:
        vals = [enc.targets[r] for r in rows]
        labels = torch.tensor(vals, dtype=torch.float32 if task == "regression" else torch.int64)
    return Batch(torch.from_numpy(ids), torch.from_numpy(mask), labels, base_index)


def describe(path: str | os.PathLike) -> str:
    """``name (N bytes)`` of a file, for logs."""
    return f"{Path(path).name} ({os.path.getsize(path)} bytes)"
