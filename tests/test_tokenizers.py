"""Tokenizers: seed compatibility on the shipped genome, lossless round trips (hypothesis), policies, files,
batches, bad input, and FASTA/FASTQ reading."""

from __future__ import annotations

import gzip
import json
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enigma_fast.data import SequenceFileError, read_sequences, shipped_genome, shipped_genome_path
from enigma_fast.tokenizers import CharTokenizer, DNATokenizer, KMerTokenizer, from_file, reverse_complement


class SeedStyleTokenizer:
    """The seed's k-mer tokenizer as its behaviour is documented: non-overlapping slices, dict lookups."""

    def __init__(self, k_mers: int) -> None:
        self.k_mers = k_mers
        self.vocab: dict[str, int] = {}

    def build_vocab(self, sequences: list[str]) -> None:
        counts: dict[str, int] = {}
        for s in sequences:
            for i in range(0, len(s), self.k_mers):
                kmer = s[i : i + self.k_mers]
                counts[kmer] = counts.get(kmer, 0) + 1
        self.vocab = {kmer: i for i, kmer in enumerate(sorted(counts, key=lambda x: -counts[x]))}

    def encode(self, sequence: str) -> list[int]:
        out = []
        for i in range(0, len(sequence), self.k_mers):
            kmer = sequence[i : i + self.k_mers]
            if kmer not in self.vocab:
                break
            out.append(self.vocab[kmer])
        return out


@pytest.fixture(scope="module")
def genome() -> str:
    return shipped_genome()


def test_shipped_genome(genome: str) -> None:
    assert len(genome) == 2_463_666
    assert set(genome) == set("ACGT")


@pytest.mark.parametrize("k", [4, 5, 6])
def test_seed_compatible_on_genome(genome: str, k: int) -> None:
    seed = SeedStyleTokenizer(k)
    seed.build_vocab([genome])
    tok = KMerTokenizer(k_mers=k)
    tok.build_vocab([genome])
    assert tok.vocab == seed.vocab
    ids = tok.encode(genome)
    assert ids == seed.encode(genome)
    assert tok.decode(ids) == genome
    # Several sequences: ids of counts and ties across sequences, and the general (dict) counting path.
    parts = [genome[:1001], genome[5000:7003], genome[:999]]
    seed.build_vocab(parts)
    assert tok.build_vocab(parts) == seed.vocab
    assert KMerTokenizer(k)._count_python([p.encode() for p in parts]) == list(seed.vocab)


def test_seed_stops_but_we_fall_back() -> None:
    seed = SeedStyleTokenizer(3)
    seed.build_vocab(["ACGTTT"])
    tok = KMerTokenizer(3)
    tok.build_vocab(["ACGTTT"])
    s = "ACGGGGTTT"  # GGG is not in the vocabulary: the seed drops it and all that follows
    assert seed.encode(s) == [tok.vocab["ACG"]]
    ids = tok.encode(s)
    assert ids[0] == tok.vocab["ACG"] and ids[-1] == tok.vocab["TTT"]
    assert tok.decode(ids) == s
    assert tok.id_to_token[ids[1]] == "G" and len(ids) == 5


BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def dna(draw: st.DrawFn, max_len: int = 10_000) -> str:
    """A DNA string of any length up to max_len over A/C/G/T/N in either case, mostly bases, in runs."""
    n = draw(st.integers(0, max_len))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    alphabet = draw(st.sampled_from(["ACGT", "ACGTN", "ACGTNacgtn", "acgt", "N"]))
    out = []
    while len(out) < n:
        run = rng.choice(alphabet) if rng.random() < 0.05 else None
        chunk = [run] * rng.randint(1, 20) if run else [rng.choice("ACGT") for _ in range(rng.randint(1, 200))]
        out += chunk
    return "".join(out[:n])


@BOUNDED
@given(seq=dna(), k=st.integers(1, 12), data=st.data())
def test_round_trip_kmer(seq: str, k: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, k), label="stride")
    train = data.draw(dna(3_000), label="train")
    tok = KMerTokenizer(k_mers=k, stride=stride)
    tok.build_vocab([train, seq[: len(seq) // 2]])
    ids = tok.encode(seq)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == seq
    # The compiled path and the general dict path agree.
    assert ids == tok._encode_general(seq.encode())


@BOUNDED
@given(seq=dna())
def test_round_trip_char(seq: str) -> None:
    tok = CharTokenizer()
    ids = tok.encode(seq)
    assert len(ids) == len(seq)
    assert tok.decode(ids) == seq


@BOUNDED
@given(seqs=st.lists(st.text(alphabet="ACGTNacgtn", max_size=300), max_size=6), k=st.integers(1, 8),
       left=st.booleans(), specials=st.booleans())
def test_batch_round_trip(seqs: list[str], k: int, left: bool, specials: bool) -> None:
    tok = KMerTokenizer(k)
    tok.build_vocab(seqs)
    ids, lengths = tok.encode_batch(seqs, left_pad=left, add_special_tokens=specials)
    assert ids.shape[0] == len(seqs) and lengths.tolist() == [len(tok.encode(s, specials)) for s in seqs]
    assert tok.decode_batch(ids, lengths, left_pad=left) == seqs


def test_policies() -> None:
    tok = KMerTokenizer(3)
    tok.build_vocab(["ACGACG"])
    # Default: lowercase is not upper case (soft-masking kept), N falls back, both lossless.
    assert tok.decode(tok.encode("acgNCG")) == "acgNCG"
    assert tok.encode("acg") != tok.encode("ACG")
    up = KMerTokenizer(3, case="upper")
    up.build_vocab(["ACGACG"])
    assert up.encode("acgacg") == up.encode("ACGACG") == [0, 0]
    assert up.decode(up.encode("acgnc")) == "ACGNC"
    assert up.encode_tensor(torch.tensor(list(b"acgnc"), dtype=torch.uint8)).tolist() == up.encode("acgnc")
    unk = KMerTokenizer(3, unknown="unk")
    unk.build_vocab(["ACGACG"])
    assert unk.encode("ACGNNNACGTT") == [0, unk.unk_id, 0, unk.vocab_size - 30 + 3, unk.vocab_size - 30 + 3]
    # Bytes outside the alphabet: an error naming byte and position, or <unk> on request.
    with pytest.raises(ValueError, match=r"'#' at position 4"):
        tok.encode("ACGA#")
    with pytest.raises(ValueError, match=r"position 3"):
        CharTokenizer().encode("ACGé")
    assert KMerTokenizer(3, invalid="unk").encode("A#")[1] == KMerTokenizer(3).unk_id
    for bad in ({"case": "lower"}, {"unknown": "drop"}, {"invalid": "skip"}):
        with pytest.raises(ValueError, match="must be one of"):
            KMerTokenizer(3, **bad)


@pytest.mark.parametrize("k", [0, 33, -2])
def test_bad_k(k: int) -> None:
    with pytest.raises(ValueError, match="k must be"):
        KMerTokenizer(k)
    with pytest.raises(ValueError, match="stride must be"):
        KMerTokenizer(3, stride=0)


def test_empty_and_out_of_range() -> None:
    tok = KMerTokenizer(4)
    assert tok.build_vocab([]) == {}
    assert tok.encode("") == [] and tok.decode([]) == ""
    assert tok.decode(tok.encode("ACGTN")) == "ACGTN"  # an empty vocabulary is all fallback, still lossless
    tok.build_vocab(["ACGTACGT"])
    with pytest.raises(ValueError, match=rf"ids\[1\] = {tok.vocab_size} is out of range"):
        tok.decode([0, tok.vocab_size])
    with pytest.raises(ValueError, match=r"ids\[0\] = -1 is out of range"):
        tok.decode([-1])
    ids, lengths = tok.encode_batch(["", ""])
    assert ids.shape == (2, 0) and lengths.tolist() == [0, 0]


def test_special_tokens_and_char_ids() -> None:
    c = CharTokenizer()
    assert (c.pad_id, c.unk_id, c.bos_id, c.eos_id, c.mask_id) == (0, 1, 2, 3, 4)
    assert c.encode("ACGTN") == [5, 6, 7, 8, 9] and c.vocab_size == 35
    assert c.encode("AC", add_special_tokens=True) == [2, 5, 6, 3]
    assert c.decode([2, 5, 6, 3]) == "AC"
    assert c.decode([2, 5, 3], skip_special_tokens=False) == "<bos>A<eos>"
    tok = KMerTokenizer(2)
    tok.build_vocab(["AAAC"])  # pieces AA 0, AC 1; specials 2..6; fallback from 7
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id) == (2, 3, 4, 5, 6)
    assert tok.fallback_ids["A"] == 7 and tok.vocab_size == 7 + 30


def test_files_round_trip(tmp_path) -> None:
    tok = KMerTokenizer(5, stride=3, case="upper", unknown="unk")
    tok.build_vocab(["ACGTACGTTTGACCA" * 5])
    path = tok.save_model(tmp_path / "tok")
    again = from_file(path)
    assert isinstance(again, KMerTokenizer) and again == tok
    assert again.encode("ACGTTTGANNACG") == tok.encode("ACGTTTGANNACG")
    assert DNATokenizer.from_file(tmp_path / "tok") == tok
    c = CharTokenizer(case="upper")
    c.save(tmp_path / "c.json")
    assert from_file(tmp_path / "c.json") == c and isinstance(from_file(tmp_path / "c.json"), CharTokenizer)
    # The seed's vocabulary JSON keeps its ids; specials and fallback go after the largest.
    seed_vocab = {"TTTTT": 0, "ACGTA": 1, "GGGCC": 5}
    (tmp_path / "seed.json").write_text(json.dumps(seed_vocab))
    s = KMerTokenizer(5)
    s.load_model(tmp_path / "seed.json")
    assert s.vocab == seed_vocab and s.pad_id == 6
    assert s.encode("TTTTTGGGCCACGTA") == [0, 5, 1]
    assert s.encode("TTTTTGGGCCACGTAC") == [0, 5, 1, s.fallback_ids["C"]]
    assert json.loads((tmp_path / "tok" / "vocab.json").read_text()) == tok.vocab
    for bad in ('{"AC": -1}', '{"AC": "x"}', "[1, 2]", '{"AC": 1, "GT": 1}', '{"format": "other"}'):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(ValueError):
            KMerTokenizer(2).load_model(tmp_path / "bad.json")


def test_seed_vocab_with_other_letters() -> None:
    """Pieces the tables cannot hold (N, lowercase) go through the general path, with the same semantics."""
    tok = KMerTokenizer(3)
    tok._layout({"ACG": 0, "NNN": 1, "acg": 2, "TT": 3})
    assert tok.encode("ACGNNNacgTT") == [0, 1, 2, 3]
    assert tok.decode(tok.encode("ACGNNNacgTTA")) == "ACGNNNacgTTA"
    ids, lengths = tok.encode_batch(["NNN", "ACGA"])
    assert ids[0, :1].tolist() == [1] and lengths.tolist() == [1, 2]


def test_reverse_complement() -> None:
    assert reverse_complement("ACGTNacgtnRY") == "RYnacgtNACGT"
    assert reverse_complement("AACGTT") == "AACGTT"
    assert reverse_complement("AAcG") == "CgTT"
    assert reverse_complement("NRY") == "RYN"
    assert KMerTokenizer.reverse_complement("ACG") == "CGT"
    s = "".join(random.Random(0).choice("ACGTNacgtn") for _ in range(500))
    assert reverse_complement(reverse_complement(s)) == s


def test_fasta_reading(tmp_path) -> None:
    (tmp_path / "a.fa").write_text(">r1 desc\nACGT\nAC\n>r2\nGG\n")
    assert read_sequences(tmp_path / "a.fa") == ["ACGTAC", "GG"]
    with gzip.open(tmp_path / "a.fq.gz", "wt") as f:
        f.write("@q1\nACGT\n+\nIIII\n@q2\nAA\n+\nII\n")
    assert read_sequences(tmp_path / "a.fq.gz", min_length=3) == ["ACGT"]
    (tmp_path / "bad.fq").write_text("@q1\nACGT\n+\nIIII\n@q2\nACGT\n+\nII\n")
    with pytest.raises(SequenceFileError, match=r"bad\.fq: cannot read record 2 \(after record 1, 'q1'\)"):
        read_sequences(tmp_path / "bad.fq")
    (tmp_path / "bad.fa").write_text("ACGT\n>x\nAC\n")
    with pytest.raises(SequenceFileError, match=r"bad\.fa: cannot read record 1"):
        read_sequences(tmp_path / "bad.fa")
    raw = shipped_genome_path().read_bytes()
    (tmp_path / "cut.fa.gz").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(SequenceFileError, match=r"cut\.fa\.gz"):
        read_sequences(tmp_path / "cut.fa.gz")
    (tmp_path / "bin.fa").write_bytes(bytes(range(256)))
    with pytest.raises(SequenceFileError, match=r"bin\.fa"):
        read_sequences(tmp_path / "bin.fa")
    with pytest.raises(FileNotFoundError, match="missing.fa"):
        read_sequences(tmp_path / "missing.fa")
    (tmp_path / "empty.fa").write_text("")
    assert read_sequences(tmp_path / "empty.fa") == []
