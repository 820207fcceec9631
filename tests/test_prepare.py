"""Streaming ``prepare``: genome-scale FASTA read a block at a time and tokenized in pieces gives exactly the
tokens, segments and records of tokenizing every record whole in memory (dnaio records, the policies applied with
Python strings), for every tokenizer shape (stride = k, stride < k, stride > k), both case and N policies, plain
and gzip files, and blocks and pieces small enough that every boundary falls inside records, N runs and k-mers."""

from __future__ import annotations

import gzip
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from enigma_fast.data import fasta as fasta_mod
from enigma_fast.data import tokens as tokens_mod
from enigma_fast.data.fasta import SequenceFileError, iter_records, iter_sequence_chunks
from enigma_fast.data.tokens import prepare_tokens
from enigma_fast.tokenizers import CharTokenizer, KMerTokenizer


def _records(seed: int = 0) -> list[tuple[str, str]]:
    """Records with soft-masked (lower-case) stretches, N runs (at the ends too), IUPAC codes, an empty record,
    a record of N only, and stretches shorter than two bases."""
    rng = np.random.default_rng(seed)

    def dna(n: int) -> str:
        return "".join(rng.choice(list("ACGT"), n))

    def masked(n: int) -> str:
        s = list(dna(n))
        for start in rng.integers(0, max(1, n - 40), 4):
            s[start : start + 30] = [c.lower() for c in s[start : start + 30]]
        return "".join(s)

    return [
        ("chr1 soft-masked, N runs", masked(700) + "N" * 37 + masked(333) + "nnnn" + dna(5) + "N" * 90 + masked(251)),
        ("chr2", "NNNN" + masked(401) + "RYK" + dna(1) + "N" + dna(64) + "NN"),
        ("empty", ""),
        ("gap", "N" * 120),
        ("short", "A" + "N" + "C"),
        ("chrM", masked(1_003)),
    ]


def _write(records: list[tuple[str, str]], path: Path, width: int = 61) -> None:
    text = "".join(
        f">{name}\n" + "".join(seq[i : i + width] + "\n" for i in range(0, len(seq), width)) for name, seq in records
    )
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


def _in_memory(path: Path, tok, case: str, n_policy: str, min_segment: int = 2):
    """Expected tokens, segments and records: every whole record from dnaio, policies on strings, one encode per
    stretch."""
    ids, segments, records = [], [], []
    offset = bases = 0
    for rid, rec in enumerate(iter_records(path)):
        seq = rec.sequence.upper() if case == "upper" else rec.sequence
        records.append({"name": rec.name, "file": str(path), "bases": len(seq)})
        spans = (
            [m.span() for m in re.finditer("[ACGTacgt]+", seq)]
            if n_policy == "split"
            else ([(0, len(seq))] if seq else [])
        )
        for start, stop in spans:
            if stop - start < min_segment:
                continue
            got = tok.encode_tensor(seq[start:stop]).tolist()
            ids += got
            segments.append([rid, offset, len(got)])
            offset += len(got)
            bases += stop - start
    return np.array(ids), segments, records, bases


def _kmer(k: int, stride: int, case: str = "keep") -> KMerTokenizer:
    tok = KMerTokenizer(k_mers=k, stride=stride, case=case)
    tok.build_vocab(["".join(p) for p in itertools.product("ACGT", repeat=k)])
    return tok


# "-fold": the tokenizer folds case itself (as the trainer's do), so prepare need not upper-case for it
TOKENIZERS = {
    "char": CharTokenizer,
    "char-fold": lambda: CharTokenizer(case="upper"),
    "kmer3": lambda: _kmer(3, 3),
    "kmer3-fold": lambda: _kmer(3, 3, "upper"),
    "kmer4-stride1": lambda: _kmer(4, 1),
    "kmer2-stride3": lambda: _kmer(2, 3),
}


@pytest.mark.parametrize("tok_name", list(TOKENIZERS))
@pytest.mark.parametrize("case, n_policy", [("upper", "split"), ("keep", "split"), ("keep", "keep")])
@pytest.mark.parametrize("suffix", [".fa", ".fa.gz"])
def test_streaming_equals_in_memory(tok_name, case, n_policy, suffix, tmp_path, monkeypatch):
    f = tmp_path / f"g{suffix}"
    _write(_records(), f)
    tok = TOKENIZERS[tok_name]()
    want_ids, want_segments, want_records, want_bases = _in_memory(f, tok, case, n_policy)
    monkeypatch.setattr(fasta_mod, "READ_BYTES", 97)  # blocks end inside headers, lines, N runs
    monkeypatch.setattr(tokens_mod, "CHUNK_BASES", 50)  # pieces end inside segments and k-mers
    store = prepare_tokens([f], tmp_path / "store", tok, case=case, n_policy=n_policy)
    np.testing.assert_array_equal(np.asarray(store.tokens, dtype=np.int64), want_ids)
    assert store.segments.tolist() == want_segments
    assert store.records == want_records
    assert store.num_bases == want_bases


def test_chunks_bound_the_pieces_and_keep_every_base(tmp_path, monkeypatch):
    records = _records(1)
    f = tmp_path / "g.fa"
    _write(records, f, width=80)
    monkeypatch.setattr(fasta_mod, "READ_BYTES", 64)
    got: dict[int, list] = {}
    read = []
    for rec, name, data in iter_sequence_chunks(f, on_read=read.append):
        assert len(data) <= 64
        got.setdefault(rec, [name, b""])[1] += data
    assert [(n, d.decode()) for n, d in got.values()] == records  # empty records included, in order
    assert sum(read) == f.stat().st_size


def test_crlf_blank_lines_and_a_header_at_the_end(tmp_path, monkeypatch):
    f = tmp_path / "w.fa"
    f.write_bytes(b"\r\n\r\n>r1 x y\r\nACGT\r\n\r\nac\r\n>r2\r\n>r3 last")
    monkeypatch.setattr(fasta_mod, "READ_BYTES", 5)
    pieces: dict[int, list] = {}
    for rec, name, data in iter_sequence_chunks(f):
        pieces.setdefault(rec, [name, b""])[1] += data
    assert list(pieces.values()) == [["r1 x y", b"ACGTac"], ["r2", b""], ["r3 last", b""]]
    assert [(r.name, r.sequence) for r in iter_records(f)] == [("r1 x y", "ACGTac"), ("r2", ""), ("r3 last", "")]


def test_streaming_errors_name_file_record_and_position(tmp_path, monkeypatch):
    monkeypatch.setattr(fasta_mod, "READ_BYTES", 16)
    bad = tmp_path / "bad.fa"
    bad.write_text(">r1\n" + "ACGT" * 10 + "\n>r2\n" + "ACGTAC" * 5 + "J\n")
    with pytest.raises(SequenceFileError, match=r"bad.fa: record 'r2' holds 'J' at position 30, which is not a DNA"):
        prepare_tokens([bad], tmp_path / "s", CharTokenizer())
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(gzip.compress((">r1\n" + "ACGT" * 5000 + "\n").encode())[:-30])  # a truncated download
    with pytest.raises(SequenceFileError, match=r"cut.fa.gz: cannot read record"):
        prepare_tokens([cut], tmp_path / "s", CharTokenizer())
    assert not (tmp_path / "s").exists()


def test_fastq_still_reads(tmp_path):
    fq = tmp_path / "r.fq"
    fq.write_text("@read1\nACGTNAC\n+\nIIIIIII\n@read2\nGG\n+\nII\n")
    store = prepare_tokens([fq], tmp_path / "s", CharTokenizer())
    tok = store.tokenizer
    assert [tok.decode(torch.from_numpy(store.segment_tokens(i).astype(np.int64))) for i in range(3)] == [
        "ACGT",
        "AC",
        "GG",
    ]
    assert [r["name"] for r in store.records] == ["read1", "read2"]
