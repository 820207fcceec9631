"""Tokenizers: seed compatibility on the shipped genome, lossless round trips (hypothesis), policies, files,
batches, bad input, and FASTA/FASTQ reading."""

from __future__ import annotations

import gzip
import json
import random
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enigma_fast.data import SequenceFileError, read_sequences, shipped_genome, shipped_genome_path
from enigma_fast.tokenizers import (
    FALLBACK_ALPHABET,
    CharTokenizer,
    DNATokenizer,
    KMerTokenizer,
    from_file,
    reverse_complement,
)


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


@pytest.mark.parametrize("k,stride", [(13, 13), (16, 16), (20, 7)])
def test_long_kmers(genome: str, k: int, stride: int) -> None:
    """k > 12: sorted code table, tail pieces matched after the op; same ids as the dict path."""
    part = genome[:200_003]
    tok = KMerTokenizer(k, stride)
    tok.build_vocab([part])
    if stride == k:
        seed = SeedStyleTokenizer(k)
        seed.build_vocab([part])
        assert tok.vocab == seed.vocab and tok.encode(part) == seed.encode(part)
    ids = tok.encode(part[:50_001])
    assert ids == tok._encode_general(part[:50_001].encode())
    assert tok.decode(ids) == part[:50_001]
    batch, lengths = tok.encode_batch([part[:1001], part[7:99]])
    assert tok.decode_batch(batch, lengths) == [part[:1001], part[7:99]]


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
@given(
    seqs=st.lists(st.text(alphabet="ACGTNacgtn", max_size=300), max_size=6),
    k=st.integers(1, 8),
    left=st.booleans(),
    specials=st.booleans(),
)
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
    assert unk.encode("ACGNNNACGTT") == [0, unk.unk_id, 0, unk.fallback_ids["T"], unk.fallback_ids["T"]]
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
    assert c.encode("ACGTN") == [5, 6, 7, 8, 9] and c.vocab_size == 35 + 64  # 64 sentinels after the fallback
    assert c.encode("AC", add_special_tokens=True) == [2, 5, 6, 3]
    assert c.decode([2, 5, 6, 3]) == "AC"
    assert c.decode([2, 5, 3], skip_special_tokens=False) == "<bos>A<eos>"
    tok = KMerTokenizer(2)
    tok.build_vocab(["AAAC"])  # pieces AA 0, AC 1; specials 2..6; fallback from 7
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id) == (2, 3, 4, 5, 6)
    assert tok.fallback_ids["A"] == 7 and tok.vocab_size == 7 + 30 + 64


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
    for bad in (
        '{"AC": -1}',
        '{"AC": "x"}',
        "[1, 2]",
        '{"AC": 1, "GT": 1}',
        '{"AC": 4294967296}',
        '{"format": "other"}',
    ):
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


# =============================================================================================================
# issue 11: malformed tokenizer files, absurd ids and non-DNA training text give one-line ValueErrors
# =============================================================================================================
def _good_dict() -> dict:
    tok = KMerTokenizer(3)
    tok.build_vocab(["ACGTACGTAAGGTTCA"])
    return json.loads(json.dumps(tok.to_dict()))


def _without(key: str) -> dict:
    d = _good_dict()
    del d[key]
    return d


def _with(**kw) -> dict:
    return {**_good_dict(), **kw}


def _fallback_plus(extra: dict) -> dict:
    d = _good_dict()
    return _with(fallback={**d["fallback"], **extra})


_MALFORMED = [
    ([1, 2], r"must hold a JSON object, got list"),
    (_without("k"), r"missing key 'k'"),
    (_without("pieces"), r"missing key 'pieces'"),
    (_without("special_tokens"), r"missing key 'special_tokens'"),
    (_without("fallback"), r"missing key 'fallback'"),
    (_without("invalid"), r"missing key 'invalid'"),
    (_with(extra=1), r"unknown key 'extra'"),
    (_with(version=True), r"not an enigma_fast.tokenizer v1 file"),
    (_with(type="bpe"), r"'type' must be one of \['char', 'kmer'\], got str 'bpe'"),
    (_with(k="3"), r"'k' must be an int in 1..32, got str '3'"),
    (_with(k=3.5), r"'k' must be an int in 1..32, got float 3.5"),
    (_with(k=3.0), r"'k' must be an int in 1..32, got float 3.0"),
    (_with(k=True), r"'k' must be an int in 1..32, got bool True"),
    (_with(k=40), r"'k' must be an int in 1..32, got int 40"),
    (_with(stride=0), r"'stride' must be an int in 1..2\^30, got int 0"),
    (_with(stride=2**31), r"'stride' must be an int in 1..2\^30, got int 2147483648"),
    (_with(case=None), r"'case' must be a string, got NoneType None"),
    (_with(unknown="drop"), r"unknown must be one of \('fallback', 'unk'\), got 'drop'"),
    (_with(pieces=["ACG"]), r"'pieces' must be an object of token -> id, got list"),
    (_with(pieces={"ACG": "0"}), r"'pieces' ids must be ints in \[0, 2\^31 - 1\), got 'ACG': str '0'"),
    (_with(pieces={"ACG": 1.0}), r"'pieces' ids must be ints .* got 'ACG': float 1.0"),
    (_with(pieces={"ACG": -1}), r"'pieces' ids must be ints .* got 'ACG': int -1"),
    (_with(pieces={"ACG": 0, "GTA": 0}), r"id 0 is given to both 'ACG' and 'GTA'"),
    (_with(pieces={"ACGT": 0}), r"'pieces' must be 1..k=3 letters of FALLBACK_ALPHABET, got str 'ACGT'; a 4-mer"),
    (_with(pieces={"": 0}), r"'pieces' must be 1..k=3 letters"),
    (_with(pieces={"AÃ": 0}), r"'pieces' must be 1..k=3 letters of FALLBACK_ALPHABET, got str 'AÃ'"),
    (_with(special_tokens={"<pad>": 50}), r"'special_tokens' must have exactly the keys \['<pad>', '<unk>'"),
    (_fallback_plus({"AC": 99}), r"'fallback' keys must be single letters of FALLBACK_ALPHABET, got str 'AC'"),
    (_fallback_plus({"é": 99}), r"'fallback' keys must be single letters .* got str 'é'"),
    (_fallback_plus({"一": 99}), r"'fallback' keys must be single letters .* got str '一'"),
    (_fallback_plus({"X": 0}), r"'fallback' keys must be single letters"),
    (_fallback_plus({"A": 0}), r"id 0 is given to both '\w+' and 'A'"),
    (_with(pieces={"ACG": 10_000_000}), r"ids must be dense: the largest id is 10000000 for \d+ distinct ids"),
    ({**CharTokenizer().to_dict(), "k": 2, "stride": 2}, r"a 'char' tokenizer needs k = stride = 1, got k=2"),
]


@pytest.mark.parametrize("d, match", _MALFORMED, ids=range(len(_MALFORMED)))
def test_malformed_tokenizer_files_name_the_key(tmp_path, d, match) -> None:
    with pytest.raises(ValueError, match=match):
        DNATokenizer.from_dict(d)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(d))
    for load in (from_file, DNATokenizer.from_file, lambda p: KMerTokenizer(3).load_model(p)):
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: .*{match}") as err:
            load(path)
        assert "\n" not in str(err.value)


def test_tokenizer_files_that_are_not_json(tmp_path) -> None:
    for name, raw in (
        ("empty", b""),
        ("binary", bytes(range(256))),
        ("cut", b'{"format": "enigma_fast.tok'),
        ("deep", b"[" * 100_000),
    ):
        (tmp_path / name).write_bytes(raw)
        for load in (from_file, lambda p: KMerTokenizer(3).load_model(p)):
            with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / name))}: not a JSON file \(") as err:
                load(tmp_path / name)
            assert "\n" not in str(err.value)


def test_seed_vocabulary_with_absurd_ids_is_refused_before_allocating(tmp_path) -> None:
    import time

    tok = KMerTokenizer(5, num_sentinels=0)
    tok.build_vocab(["ACGTAGGTCA"])
    before = tok.to_dict()
    (tmp_path / "seed.json").write_text(json.dumps({"ACGTA": 0, "TTTTT": 10_000_000}))
    t0 = time.perf_counter()
    with pytest.raises(
        ValueError,
        match=r"seed\.json: tokenizer ids must be dense: the largest id is 10000035 for 37 "
        r"distinct ids \(at most 2 \* 37 \+ 1024 - 1 = 1097 allowed\); renumber",
    ):
        tok.load_model(tmp_path / "seed.json")
    assert time.perf_counter() - t0 < 0.5  # it used to build tables of 10 million entries (1.35 GB)
    assert tok.to_dict() == before  # a failed load changes nothing
    # gaps are fine while the ids stay dense enough (the seed's vocabularies are 0..n-1)
    (tmp_path / "gap.json").write_text(json.dumps({"ACGTA": 0, "TTTTT": 700}))
    tok.load_model(tmp_path / "gap.json")
    assert tok.pad_id == 701
    (tmp_path / "long.json").write_text(json.dumps({"ACGTAC": 0}))
    with pytest.raises(ValueError, match=r"long\.json: .*got str 'ACGTAC'; a 6-mer vocabulary needs k=6$"):
        tok.load_model(tmp_path / "long.json")


def test_build_vocab_follows_the_invalid_policy() -> None:
    # default invalid="error": text that is not DNA is refused (it used to become pieces like 'GÃ' and '©')
    for bad, text, pos in (("ACGé", "é", 3), ("ACGTTT\nAC", "\n", 6), ("AC GT", " ", 2), (b"AC\xffGT", "0xff", 2)):
        tok = KMerTokenizer(2)
        with pytest.raises(
            ValueError,
            match=rf"^sequences\[1\] holds {re.escape(repr(text))} at position {pos}, not a "
            r"letter of FALLBACK_ALPHABET \(DNA/IUPAC\); use invalid='unk'",
        ):
            tok.build_vocab(["ACGT", bad])
        assert tok.vocab == {}  # nothing was built
    # invalid="unk": windows holding such bytes stay out of the vocabulary, encode maps the bytes to <unk>
    tok = KMerTokenizer(2, invalid="unk")
    tok.build_vocab(["ACGé", "GGTA"])
    assert set(tok.vocab) == {"AC", "GG", "TA"}
    assert all(p.isascii() for p in tok.vocab)
    assert tok.decode(tok.encode("ACGTA")) == "ACGTA"
    assert tok.encode("ACé")[1:] == [tok.unk_id, tok.unk_id]
    assert tok.decode(tok.encode("ACGé")) == "ACG"  # lossy by request, and never 'ACGÃ©'
    # lowercase, N and IUPAC letters are DNA text: still counted as pieces
    tok = KMerTokenizer(2)
    tok.build_vocab(["acNNRY"])
    assert set(tok.vocab) == {"ac", "NN", "RY"}
    with pytest.raises(TypeError, match="^sequences must be an iterable of DNA strings, got a single str; wrap it"):
        KMerTokenizer(2).build_vocab("ACGT")


_JSON_VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-5, 2**33), st.floats(), st.text(alphabet="ACGTNé<> x", max_size=5)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text("ACGTNx", max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(["k", "stride", "case", "pieces", "special_tokens", "fallback", "type", "version"]),
    inner=st.booleans(),
    value=_JSON_VALUES,
)
def test_fuzz_tokenizer_dicts_load_or_raise_one_line_value_error(key, inner, value) -> None:
    """A valid tokenizer.json with one value (or one entry of a table) replaced by random JSON: it loads and
    round-trips, or raises a one-line ValueError; never a KeyError/TypeError/IndexError from deep inside."""
    d = _good_dict()
    if inner and isinstance(d[key], dict):
        d[key] = {**d[key], ("ACG" if key == "pieces" else next(iter(d[key]))): value}
    else:
        d[key] = value
    try:
        tok = DNATokenizer.from_dict(d)
    except ValueError as err:
        assert "\n" not in str(err)
        return
    assert DNATokenizer.from_dict(json.loads(json.dumps(tok.to_dict()))) == tok
    s = "ACGTACGTTAGCAN"
    try:
        ids = tok.encode(s)
    except ValueError as err:  # a file may leave out fallback letters: encode names the byte it cannot map
        assert "has no token" in str(err) and set(tok.fallback_ids) != set(FALLBACK_ALPHABET)
        return
    assert all(0 <= i < tok.vocab_size for i in ids)
    if tok.stride <= tok.k and tok.unknown == "fallback" and tok.case == "keep":
        assert tok.decode(ids) == s


def test_constructor_rejects_bool_k_and_strides_the_ops_cannot_run() -> None:
    too_big = r"^stride must be an int in 1..2\^30 \(the k-mer ops' limit\), got 1073741825$"
    with pytest.raises(ValueError, match=r"^k and stride must be ints, got k=True, stride=True$"):
        KMerTokenizer(True)
    with pytest.raises(ValueError, match=too_big):
        KMerTokenizer(3, stride=2**30 + 1)  # used to construct, then fail on every encode


# =============================================================================================================
# issue 14: sentinel tokens <mask_0> .. <mask_{n-1}> (span corruption, infilling)
# =============================================================================================================
@pytest.mark.parametrize("make", [lambda n: CharTokenizer(num_sentinels=n), lambda n: _kmer3(n)], ids=["char", "kmer"])
def test_sentinels_encode_decode_save_load(make, tmp_path) -> None:
    tok, old = make(64), make(0)
    assert tok.num_sentinels == 64 and old.num_sentinels == 0 and old.sentinel_ids == []
    top = max([*old.pieces.values(), *old.special_ids.values(), *old.fallback_ids.values()])
    assert tok.sentinel_ids == list(range(top + 1, top + 65))  # after every other id
    assert tok.vocab_size == old.vocab_size + 64
    assert [tok.sentinel_id(j) for j in (0, 63)] == [top + 1, top + 64]
    assert tok.is_sentinel(tok.sentinel_id(5)) and not tok.is_sentinel(tok.mask_id) and not tok.is_sentinel(0)
    # every other id is unchanged, so DNA encodes to the same ids with and without sentinels
    for name in ("pieces", "fallback_ids"):
        assert getattr(tok, name) == getattr(old, name)
    assert {s: i for s, i in tok.special_ids.items() if not tok.is_sentinel(i)} == old.special_ids
    seq = "ACGTTGCANNacgtGATTACA"
    assert tok.encode(seq) == old.encode(seq)
    ids = [*tok.encode("ACG"), tok.sentinel_id(0), *tok.encode("TT"), tok.sentinel_id(12)]
    assert tok.decode(ids) == "ACGTT"  # specials dropped
    assert tok.decode(ids, skip_special_tokens=False) == "ACG<mask_0>TT<mask_12>"
    assert tok.decode_batch(torch.tensor([ids])) == ["ACGTT"]
    # save / load keep the sentinels; a file without them (written before they existed) still loads
    tok.save(tmp_path / "t.json")
    again = from_file(tmp_path / "t.json")
    assert again == tok and again.sentinel_ids == tok.sentinel_ids
    d = json.loads((tmp_path / "t.json").read_text())
    assert d["special_tokens"]["<mask_63>"] == top + 64
    d["special_tokens"] = {s: i for s, i in d["special_tokens"].items() if not s.startswith("<mask_")}
    (tmp_path / "old.json").write_text(json.dumps(d))
    back = from_file(tmp_path / "old.json")
    assert back.num_sentinels == 0 and back.vocab_size == old.vocab_size and back.encode(seq) == old.encode(seq)
    with pytest.raises(ValueError, match=r"sentinel index must be an int in \[0, 0\) \(this tokenizer has 0 sentinels"):
        back.sentinel_id(0)
    with pytest.raises(ValueError, match=r"sentinel index must be an int in \[0, 64\).*got int 64"):
        tok.sentinel_id(64)


def _kmer3(n: int) -> KMerTokenizer:
    tok = KMerTokenizer(3, num_sentinels=n)
    tok.build_vocab(["ACGTACGTTTGACCAGT"])
    return tok


def test_sentinel_counts_follow_the_file_and_the_constructor(tmp_path) -> None:
    tok = KMerTokenizer(3, num_sentinels=8)
    tok.build_vocab(["ACGTACGT"])
    assert tok.num_sentinels == 8  # build_vocab keeps the count
    (tmp_path / "seed.json").write_text(json.dumps({"ACG": 0, "TTT": 1}))
    tok.load_model(tmp_path / "seed.json")  # a seed vocabulary: the tokenizer's own count, after its ids
    assert tok.num_sentinels == 8 and tok.sentinel_id(0) == 2 + 5 + 30
    other = CharTokenizer(num_sentinels=3)
    other.save(tmp_path / "c.json")
    tok.load_model(tmp_path / "c.json")  # a tokenizer.json: the file's count
    assert tok.num_sentinels == 3
    for bad in (-1, 1025, True, 2.0):
        with pytest.raises(ValueError, match=r"num_sentinels must be an int in \[0, 1024\]"):
            CharTokenizer(num_sentinels=bad)


@pytest.mark.parametrize("keys", [["<mask_1>"], ["<mask_0>", "<mask_2>"], ["<mask_00>"], ["<mask_x>"], ["<sep>"]])
def test_malformed_sentinels_in_a_file_name_the_key(keys) -> None:
    d = CharTokenizer(num_sentinels=0).to_dict()
    d["special_tokens"] = {**d["special_tokens"], **{k: 40 + j for j, k in enumerate(keys)}}
    with pytest.raises(ValueError, match=r"'special_tokens' must have exactly the keys .* plus the sentinels"):
        DNATokenizer.from_dict(d)
