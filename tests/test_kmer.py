"""k-mer tokenization ops: the compiled kernels against the pure-Python reference, policies, threads, bad input,
opcheck and torch.compile. CUDA cases skip without a GPU."""

from __future__ import annotations

import random

import pytest
import torch

from enigma_fast import _extension, reference
from enigma_fast.ops import kmer as kops

needs_ext = pytest.mark.skipif(_extension.EXTENSION is None, reason="compiled extension not built")

FALLBACK = "ACGTNacgtn"


def random_vocab(rng: random.Random, k: int, n_pieces: int, tails: bool = True) -> dict[str, int]:
    pieces: dict[str, int] = {}
    while len(pieces) < min(n_pieces, 4**k):
        pieces.setdefault("".join(rng.choice("ACGT") for _ in range(k)), len(pieces))
    if tails and k <= 12:
        for length in range(1, min(k, 4)):
            pieces.setdefault("".join(rng.choice("ACGT") for _ in range(length)), len(pieces))
    ids = list(range(len(pieces)))
    rng.shuffle(ids)  # ids need not follow insertion order
    return dict(zip(pieces, ids, strict=True))


def random_seq(rng: random.Random, n: int, alphabet: str, pieces: list[str], k: int) -> bytes:
    s = [rng.choice(alphabet) for _ in range(n)]
    full = [p for p in pieces if len(p) == k]
    for i in range(0, max(0, n - k), 2 * k + 1):  # plant vocabulary k-mers so lookups hit
        if full:
            s[i : i + k] = rng.choice(full)
    return "".join(s).encode()


def tensors(pieces: dict[str, int], k: int, base: int = 10_000):
    table, tail, _ = kops.build_tables(pieces, k)
    chars = kops.char_table({c: base + i for i, c in enumerate(FALLBACK)})
    return table, tail, chars


CASES = [(k, s) for k in (1, 2, 3, 5, 7, 12, 13, 20, 32) for s in sorted({1, 2, k, k + 3})]

# Reference ids by (k, stride, bytes, missing id, fold): the value tests run once per CPU level on the same
# inputs, and the pure-Python reference (slow for k = 12 tables) need not run again for each level.
_REFERENCE: dict[tuple, torch.Tensor] = {}


def reference_encode(bases, table, tail, chars, k, stride, missing, fold) -> torch.Tensor:
    key = (k, stride, bytes(bases.tolist()), missing, fold)
    if key not in _REFERENCE:
        _REFERENCE[key] = reference.kmer_encode(bases, table, tail, chars, k, stride, missing, fold)
    return _REFERENCE[key]


@needs_ext
@pytest.mark.parametrize("k,stride", CASES)
def test_encode_matches_reference(k: int, stride: int, cpu_level: str) -> None:
    """At every CPU level (the k-mer kernels are level-independent table lookups: the same code runs)."""
    rng = random.Random(k * 100 + stride)
    pieces = random_vocab(rng, k, 40 if k > 2 else 10)
    table, tail, chars = tensors(pieces, k)
    for n in (0, 1, k - 1, k, k + 1, 137, 600):
        for alphabet, fold in (("ACGT", False), ("ACGTNacgt", False), ("ACGTacgtN", True)):
            data = random_seq(rng, n, alphabet, list(pieces), k)
            bases = torch.frombuffer(bytearray(data), dtype=torch.uint8) if n else torch.empty(0, dtype=torch.uint8)
            for missing in (-1, 9999):
                want = reference_encode(bases, table, tail, chars, k, stride, missing, fold)
                got = kops.kmer_encode(
                    bases, table, k, stride, tail_table=tail, char_ids=chars, missing_id=missing, fold_case=fold
                )
                assert got.dtype == torch.int64
                assert torch.equal(got, want), (k, stride, n, alphabet, missing)
            got32 = kops.kmer_encode(
                bases, table, k, stride, tail_table=tail, char_ids=chars, fold_case=fold, dtype=torch.int32
            )
            assert got32.dtype == torch.int32
            assert torch.equal(got32.long(), reference_encode(bases, table, tail, chars, k, stride, -1, fold))


@needs_ext
@pytest.mark.parametrize("k,stride", [(5, 5), (6, 1), (4, 2), (16, 16)])
def test_threads_agree(k: int, stride: int, cpu_level: str) -> None:
    """A long sequence (many parallel chunks) with scattered missing windows gives the same ids on 1 or all threads."""
    rng = random.Random(5)
    pieces = random_vocab(rng, k, 4**k // 2 if k <= 6 else 200)
    table, tail, chars = tensors(pieces, k)
    g = torch.Generator().manual_seed(1)
    bases = torch.tensor(list(b"ACGT"), dtype=torch.uint8)[torch.randint(0, 4, (600_003,), generator=g)]
    bases[torch.randint(0, bases.numel(), (50,), generator=g)] = ord("N")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kops.kmer_encode(bases, table, k, stride, tail_table=tail, char_ids=chars)
        torch.set_num_threads(max(2, threads))
        many = kops.kmer_encode(bases, table, k, stride, tail_table=tail, char_ids=chars)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
    # Decoding with the pieces table gives the sequence back (stride <= k).
    vocab = max(max(pieces.values()), 10_000 + len(FALLBACK)) + 1
    by_id = [b""] * vocab
    for p, i in pieces.items():
        by_id[i] = p.encode()[: min(k, stride)] if len(p) == k else p.encode()
    for j, c in enumerate(FALLBACK):
        by_id[10_000 + j] = c.encode()
    flat = torch.frombuffer(bytearray(b"".join(by_id)), dtype=torch.uint8)
    offsets = torch.tensor([0] + [len(b) for b in by_id]).cumsum(0)
    assert torch.equal(kops.kmer_decode(one, flat, offsets), bases)


@needs_ext
@pytest.mark.parametrize("left_pad", [False, True])
def test_batch_matches_single(left_pad: bool) -> None:
    rng = random.Random(3)
    k = 4
    pieces = random_vocab(rng, k, 100)
    table, tail, chars = tensors(pieces, k)
    seqs = [random_seq(rng, n, "ACGTN", list(pieces), k) for n in (0, 3, 17, 64, 1, 200)]
    offsets = torch.tensor([0] + [len(s) for s in seqs]).cumsum(0)
    flat = torch.frombuffer(bytearray(b"".join(seqs)), dtype=torch.uint8)
    ids, lengths = kops.kmer_encode_batch(
        flat, offsets, table, k, tail_table=tail, char_ids=chars, pad_id=-7, left_pad=left_pad
    )
    want_ids, want_len = reference.kmer_encode_batch(
        flat, offsets, table, tail, chars, k, k, -1, False, torch.int64, -7, left_pad
    )
    assert torch.equal(ids, want_ids) and torch.equal(lengths, want_len)
    for b, s in enumerate(seqs):
        single = kops.kmer_encode(torch.tensor(list(s), dtype=torch.uint8), table, k, tail_table=tail, char_ids=chars)
        row = ids[b, ids.shape[1] - lengths[b] :] if left_pad else ids[b, : lengths[b]]
        assert torch.equal(row, single)
        pad = ids[b, : ids.shape[1] - lengths[b]] if left_pad else ids[b, lengths[b] :]
        assert bool((pad == -7).all())


def _on_threads(n: int, fn, *args, **kwargs):
    """fn(*args, **kwargs) with torch set to n threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(old)


@needs_ext
@pytest.mark.parametrize("k,stride", [(5, 5), (4, 1), (7, 7), (16, 16)])
@pytest.mark.parametrize("left_pad", [False, True])
def test_batch_threads_agree(k: int, stride: int, left_pad: bool, cpu_level: str) -> None:
    """Batches whose work is split by bases, not rows: many short reads (shared by the threads), a few reads with
    one long sequence (cut across threads), and reads with a fallback-heavy widest row (every row moves to a wider
    output after the in-place pass). The same ids on 1 and 2 threads, each row the single-sequence encode. Some
    reads hold N (rows with fallback tokens, re-encoded after the in-place pass). Padded outputs stay small."""
    rng = random.Random(k * 10 + stride)
    pieces = random_vocab(rng, k, 4**k // 2 if k <= 6 else 300)
    table, tail, chars = tensors(pieces, k)
    g = torch.Generator().manual_seed(k)
    acgt = torch.tensor(list(b"ACGT"), dtype=torch.uint8)
    long_seq = acgt[torch.randint(0, 4, (400_003,), generator=g)]
    long_seq[torch.randint(0, long_seq.numel(), (20,), generator=g)] = ord("N")
    reads = [
        random_seq(rng, rng.choice([0, 1, k, 150, 151, rng.randint(0, 300)]), "ACGT", list(pieces), k)
        for _ in range(3000)
    ]
    for i in rng.sample(range(3000), 30):  # a few reads with an unknown base
        if reads[i]:
            j = rng.randrange(len(reads[i]))
            reads[i] = reads[i][:j] + b"N" + reads[i][j + 1 :]
    widest = 3 * max(len(r) for r in reads)
    for batch in (
        reads,
        reads[:20] + [bytes(long_seq.tolist())] + reads[20:40],
        reads + [b"N" * widest, b"ACGT" * (widest // 4)],
    ):
        lens = [len(r) for r in batch]
        offsets = torch.tensor([0, *lens]).cumsum(0)
        flat = torch.frombuffer(bytearray(b"".join(batch)), dtype=torch.uint8)
        for missing in (-1, 9999):
            kw = dict(tail_table=tail, char_ids=chars, missing_id=missing, pad_id=-7, left_pad=left_pad)
            args = (kops.kmer_encode_batch, flat, offsets, table, k, stride)
            ids1, len1 = _on_threads(1, *args, **kw)
            ids2, len2 = _on_threads(2, *args, **kw)
            assert torch.equal(ids1, ids2) and torch.equal(len1, len2)
            t = ids1.shape[1]
            assert t == int(len1.max())
            for b in sorted({*range(0, len(batch), 97), 20, len(batch) - 2, len(batch) - 1}):
                seq = flat[offsets[b] : offsets[b + 1]]
                want = kops.kmer_encode(seq, table, k, stride, tail_table=tail, char_ids=chars, missing_id=missing)
                n = int(len1[b])
                assert n == want.numel()
                row = ids1[b, t - n :] if left_pad else ids1[b, :n]
                assert torch.equal(row, want), b
                assert bool((ids1[b, : t - n] if left_pad else ids1[b, n:]).eq(-7).all())


@needs_ext
def test_batch_small_stays_exact(cpu_level: str) -> None:
    """Tiny batches (below every grain: one thread whatever the count) against the reference, both pads."""
    rng = random.Random(8)
    pieces = random_vocab(rng, 3, 30)
    table, tail, chars = tensors(pieces, 3)
    for seqs in ([b""], [b"ACG", b"AC"], [b"ACGTNAC", b"", b"NNNNNNN", b"ACGTACGTAC"]):
        offsets = torch.tensor([0] + [len(x) for x in seqs]).cumsum(0)
        flat = torch.frombuffer(bytearray(b"".join(seqs) or b"A"), dtype=torch.uint8)[: int(offsets[-1])]
        for left_pad in (False, True):
            kw = dict(tail_table=tail, char_ids=chars, pad_id=-1, left_pad=left_pad)
            got = _on_threads(2, kops.kmer_encode_batch, flat, offsets, table, 3, **kw)
            want = reference.kmer_encode_batch(
                flat, offsets, table, tail, chars, 3, 3, -1, False, torch.int64, -1, left_pad
            )
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@needs_ext
def test_decode_threads_agree(cpu_level: str) -> None:
    """A long decode (many blocks, split across threads) with pieces of 0 to 9 bytes: the same bytes on 1 and 2
    threads, equal to the pieces concatenated; and the same first out-of-range id reported on both."""
    g = torch.Generator().manual_seed(3)
    lens = torch.randint(0, 10, (300,), generator=g)
    lens[:4] = torch.tensor([5, 5, 1, 0])
    piece_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)])
    pieces = torch.randint(65, 91, (int(piece_offsets[-1]),), dtype=torch.uint8, generator=g)
    ids = torch.randint(0, 300, (700_001,), generator=g)
    one = _on_threads(1, kops.kmer_decode, ids, pieces, piece_offsets)
    two = _on_threads(2, kops.kmer_decode, ids, pieces, piece_offsets)
    assert torch.equal(one, two)
    by_id = [bytes(pieces[piece_offsets[i] : piece_offsets[i + 1]].tolist()) for i in range(300)]
    assert bytes(one.tolist()) == b"".join(by_id[i] for i in ids.tolist())
    bad = ids.clone()
    bad[[650_000, 400_123]] = torch.tensor([300, -2])
    for n in (1, 2):
        with pytest.raises(RuntimeError, match=r"ids\[400123\] = -2 is out of range for a vocabulary of 300"):
            _on_threads(n, kops.kmer_decode, bad, pieces, piece_offsets)


@needs_ext
def test_count_matches_reference(cpu_level: str) -> None:
    rng = random.Random(11)
    seqs = [random_seq(rng, n, "ACGTN", [], 3) for n in (10, 0, 2, 333)]
    offsets = torch.tensor([0] + [len(s) for s in seqs]).cumsum(0)
    flat = torch.frombuffer(bytearray(b"".join(seqs)), dtype=torch.uint8)
    for stride in (1, 3, 4):
        got = kops.kmer_count(flat, offsets, 3, stride)
        want = reference.kmer_count(flat, offsets, 3, stride)
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g, w)
        assert int(got[2]) > 0  # N windows were seen and not counted


@needs_ext
@pytest.mark.parametrize("k", [3, 5, 8])
def test_count_threads_agree_exactly(k: int) -> None:
    """kmer_count on 1 and on several threads (private tables merged) gives identical counts, first ordinals and
    other-window counts, on one long sequence and on many short ones with N runs and empty rows; and the reference
    agrees."""
    g = torch.Generator().manual_seed(k)
    n = 400_003
    bases = torch.tensor(list(b"ACGT"), dtype=torch.uint8)[torch.randint(0, 4, (n,), generator=g)]
    bases[torch.randint(0, n, (300,), generator=g)] = ord("N")
    cuts = torch.randint(0, n, (2000,), generator=g).sort().values
    for offsets in (
        torch.tensor([0, n]),
        torch.cat([torch.tensor([0]), cuts, cuts[:5], torch.tensor([n])]).sort().values,
    ):
        for stride in sorted({1, k, k + 2}):
            got = [_on_threads(t, kops.kmer_count, bases, offsets, k, stride) for t in (1, 2, 4)]
            for other in got[1:]:
                for a, b in zip(got[0], other, strict=True):
                    assert torch.equal(a, b), (k, stride)
            assert int(got[0][2]) > 0 and int(got[0][0].sum()) > 0
    small = bases[:3000]
    offsets = torch.tensor([0, 1000, 1000, 1999, 3000])
    want = reference.kmer_count(small, offsets, k, 1)
    for a, b in zip(_on_threads(2, kops.kmer_count, small, offsets, k, 1), want, strict=True):
        assert torch.equal(a, b)


def _bases(s: bytes) -> torch.Tensor:
    return torch.tensor(list(s), dtype=torch.uint8)


@pytest.mark.parametrize("impl", ["ops", "reference"])
def test_bad_input(impl: str) -> None:
    table, tail, chars = tensors({"ACG": 0}, 3)
    enc = (
        kops.kmer_encode
        if impl == "ops"
        else (
            lambda b, t, k, s=None, **kw: reference.kmer_encode(
                b, t, kw.get("tail_table", tail), kw.get("char_ids", chars), k, k if s is None else s
            )
        )
    )
    for k in (0, 33, -1):
        with pytest.raises((ValueError, RuntimeError), match="k must be"):
            enc(_bases(b"ACGT"), table, k, tail_table=tail, char_ids=chars)
    with pytest.raises((ValueError, RuntimeError), match="stride must be"):
        enc(_bases(b"ACGT"), table, 3, 0, tail_table=tail, char_ids=chars)
    # A byte with no token: the message names it and its position.
    with pytest.raises((ValueError, RuntimeError), match=r"'#' at position 4"):
        enc(_bases(b"ACGA#CGG"), table, 3, tail_table=tail, char_ids=chars)
    with pytest.raises((ValueError, RuntimeError), match=r"0x00 at position 1|'\\x00' at position 1"):
        enc(_bases(b"A\x00"), table, 3, tail_table=tail, char_ids=chars)
    # A byte without a token in a window and another in the tail: the first in sequence order is named (the
    # single-sequence kernel encodes its tail first, to size its output).
    for stride in (3, 2, 1):
        with pytest.raises((ValueError, RuntimeError), match=r"'!' at position 5"):
            enc(_bases(b"ACGTA!GTACGTA#"), table, 3, stride, tail_table=tail, char_ids=chars)
        with pytest.raises((ValueError, RuntimeError), match=r"'#' at position 13"):
            enc(_bases(b"ACGTAAGTACGTA#"), table, 3, stride, tail_table=tail, char_ids=chars)


@needs_ext
def test_bad_arguments_of_the_op() -> None:
    table, tail, chars = tensors({"ACG": 0}, 3)
    op = torch.ops.enigma_fast.kmer_encode
    with pytest.raises(RuntimeError, match=r"bases must be uint8, got Long"):
        op(torch.zeros(4, dtype=torch.int64), table, tail, chars, 3, 3, -1, False, torch.int64)
    with pytest.raises(RuntimeError, match=r"table must be int32 \(4\^k,\) = \(64,\)"):
        op(_bases(b"ACGT"), table[:10], tail, chars, 3, 3, -1, False, torch.int64)
    with pytest.raises(RuntimeError, match=r"char_ids must be contiguous int32 \(256,\)"):
        op(_bases(b"ACGT"), table, tail, chars[:10], 3, 3, -1, False, torch.int64)
    with pytest.raises(RuntimeError, match=r"dtype must be int64 or int32"):
        op(_bases(b"ACGT"), table, tail, chars, 3, 3, -1, False, torch.float32)
    with pytest.raises(RuntimeError, match=r"table must be an int64 \(C, 2\) hash table"):
        op(_bases(b"ACGT"), table, tail, chars, 13, 13, -1, False, torch.int64)
    with pytest.raises(RuntimeError, match=r"power of two"):
        op(
            _bases(b"ACGT"),
            torch.zeros(3, 2, dtype=torch.int64),
            torch.empty(0, dtype=torch.int32),
            chars,
            13,
            13,
            -1,
            False,
            torch.int64,
        )
    with pytest.raises(TypeError, match="1-D uint8"):
        kops.kmer_encode(torch.zeros(2, 2, dtype=torch.uint8), table, 3)
    offsets = torch.tensor([0, 3, 2])
    with pytest.raises(RuntimeError, match="non-decreasing"):
        kops.kmer_encode_batch(_bases(b"ACGT"), offsets, table, 3, tail_table=tail, char_ids=chars)
    with pytest.raises(RuntimeError, match=r"offsets must lie in \[0, 4\]"):
        kops.kmer_encode_batch(_bases(b"ACGT"), torch.tensor([0, 9]), table, 3, tail_table=tail, char_ids=chars)


@pytest.mark.parametrize("impl", ["ops", "reference"])
def test_decode_out_of_range(impl: str) -> None:
    pieces = torch.frombuffer(bytearray(b"ACGT"), dtype=torch.uint8)
    offsets = torch.tensor([0, 1, 2, 3, 4])
    dec = kops.kmer_decode if impl == "ops" else reference.kmer_decode
    assert bytes(dec(torch.tensor([3, 0, 2]), pieces, offsets).tolist()) == b"TAG"
    assert dec(torch.tensor([], dtype=torch.int64), pieces, offsets).numel() == 0
    for bad in (4, -1):
        with pytest.raises(
            (RuntimeError, ValueError), match=rf"ids\[1\] = {bad} is out of range for a vocabulary of 4"
        ):
            dec(torch.tensor([0, bad]), pieces, offsets)


@needs_ext
def test_opcheck() -> None:
    table, tail, chars = tensors(random_vocab(random.Random(0), 3, 30), 3)
    bases = _bases(b"ACGTTGCANNACGTAGGCTAc")
    torch.library.opcheck(torch.ops.enigma_fast.kmer_encode, (bases, table, tail, chars, 3, 2, -1, False, torch.int64))
    offsets = torch.tensor([0, 5, 5, 21])
    torch.library.opcheck(
        torch.ops.enigma_fast.kmer_encode_batch,
        (bases, offsets, table, tail, chars, 3, 3, -1, False, torch.int32, 0, True),
    )
    pieces = torch.frombuffer(bytearray(b"ACGTAC"), dtype=torch.uint8)
    torch.library.opcheck(
        torch.ops.enigma_fast.kmer_decode, (torch.tensor([0, 2, 1]), pieces, torch.tensor([0, 1, 2, 4, 6]))
    )
    torch.library.opcheck(torch.ops.enigma_fast.kmer_count, (bases, offsets, 3, 1, False))


@needs_ext
def test_torch_compile_fullgraph() -> None:
    table, tail, chars = tensors(random_vocab(random.Random(0), 4, 100), 4)
    bases = _bases(b"ACGTTGCANNACGTAGGCTACCGTA")

    def f(b: torch.Tensor) -> torch.Tensor:
        return torch.ops.enigma_fast.kmer_encode(b, table, tail, chars, 4, 4, -1, False, torch.int64) + 1

    def g(b: torch.Tensor) -> torch.Tensor:  # the public function, routing included
        return kops.kmer_encode(b, table, 4, tail_table=tail, char_ids=chars) * 2

    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(f, fullgraph=True, backend="eager")
        assert torch.equal(compiled(bases), f(bases))
        compiled_g = torch.compile(g, fullgraph=True, backend="eager")
        assert torch.equal(compiled_g(bases), g(bases))


@pytest.mark.cuda
@pytest.mark.parametrize("k,stride", [(5, 5), (3, 1), (6, 4), (1, 1), (12, 12), (16, 16), (31, 7), (5, 9)])
def test_cuda_matches_cpu(k: int, stride: int, cuda_device: torch.device) -> None:
    if not _extension.has_kernel("kmer_encode", "cuda", torch.uint8):
        pytest.skip("CUDA kernels not compiled")
    rng = random.Random(k + stride)
    pieces = random_vocab(rng, k, 4**k // 2 if k <= 6 else 300)
    table, tail, chars = tensors(pieces, k)
    for n in (0, 1, k - 1, k, 1000, 1_000_003):
        data = random_seq(rng, min(n, 5000), "ACGTNacgt", list(pieces), k) * (n // 5000 + 1)
        bases = torch.frombuffer(bytearray(data[:n]), dtype=torch.uint8) if n else torch.empty(0, dtype=torch.uint8)
        for missing, fold, dtype in ((-1, False, torch.int64), (77, True, torch.int32), (-1, True, torch.int32)):
            want = kops.kmer_encode(
                bases,
                table,
                k,
                stride,
                tail_table=tail,
                char_ids=chars,
                missing_id=missing,
                fold_case=fold,
                dtype=dtype,
            )
            dev = [t.to(cuda_device) for t in (bases, table, tail, chars)]
            got = kops.kmer_encode(
                dev[0],
                dev[1],
                k,
                stride,
                tail_table=dev[2],
                char_ids=dev[3],
                missing_id=missing,
                fold_case=fold,
                dtype=dtype,
            )
            assert got.device.type == "cuda" and got.dtype == dtype
            assert torch.equal(got.cpu(), want), (k, stride, n, missing, fold)
    bad = torch.tensor(list(b"ACGTA#CGG"), dtype=torch.uint8, device=cuda_device)
    table4, tail4, chars4 = (t.to(cuda_device) for t in tensors({"ACGT": 0}, 4))
    with pytest.raises(RuntimeError, match=r"'#' at position 5"):
        torch.ops.enigma_fast.kmer_encode(bad, table4, tail4, chars4, 4, 4, -1, False, torch.int64)


# ---- one contract for both paths (issue 11): kernel and reference accept and reject the same inputs ----


@pytest.mark.parametrize("impl", ["ops", "reference"])
def test_errors_found_while_working_are_value_errors(impl: str) -> None:
    """A byte with no token, an id outside the vocabulary, bad offsets: ValueError on every path (the kernels
    raised a bare RuntimeError), with the kernels' wording; still a RuntimeError for callers catching that."""
    table, tail, chars = tensors({"ACG": 0}, 3)
    if impl == "ops":
        enc = lambda b: kops.kmer_encode(b, table, 3, tail_table=tail, char_ids=chars)  # noqa: E731
        batch = lambda b, o: kops.kmer_encode_batch(b, o, table, 3, tail_table=tail, char_ids=chars)  # noqa: E731
        dec = kops.kmer_decode
    else:
        enc = lambda b: reference.kmer_encode(b, table, tail, chars, 3, 3)  # noqa: E731
        batch = lambda b, o: reference.kmer_encode_batch(b, o, table, tail, chars, 3, 3)  # noqa: E731
        dec = reference.kmer_decode
    for err in (ValueError, RuntimeError):
        with pytest.raises(err, match=r"^kmer_encode: byte 0x00 at position 1 has no token"):
            enc(_bases(b"A\x00"))
    with pytest.raises(ValueError, match=r"^kmer_encode_batch: sequence 1 has byte '#' at position 0 that has no"):
        batch(_bases(b"ACG#"), torch.tensor([0, 3, 4]))
    with pytest.raises(ValueError, match=r"^kmer_encode_batch: offsets must be non-decreasing, got offsets\[0\] = 3"):
        batch(_bases(b"ACGT"), torch.tensor([3, 2]))
    with pytest.raises(ValueError, match=r"^kmer_encode_batch: offsets must lie in \[0, 4\], got first 0 and last 9"):
        batch(_bases(b"ACGT"), torch.tensor([0, 9]))
    pieces, offsets = _bases(b"ACGT"), torch.tensor([0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"^kmer_decode: ids\[1\] = 4 is out of range for a vocabulary of 4 ids$"):
        dec(torch.tensor([0, 4]), pieces, offsets)
    with pytest.raises(ValueError, match=r"^kmer_decode: piece_offsets must be non-decreasing"):
        dec(torch.tensor([0]), pieces, torch.tensor([0, 3, 2, 4]))
    with pytest.raises(ValueError, match=r"^kmer_decode: piece_offsets must run from 0 to at most len\(pieces\) = 4"):
        dec(torch.tensor([0]), pieces, torch.tensor([0, 1, 9]))


@needs_ext
def test_reference_hash_lookup_probes_like_the_kernel() -> None:
    """k > 12: the reference found a code anywhere in the hash table; the kernel probes from the code's home slot
    to the first empty one. A table whose entry sits past an empty slot now misses on both paths."""
    k = 13
    piece = "ACGTACGTACGTA"
    table, tail, _ = kops.build_tables({piece: 5}, k)
    chars = kops.char_table({c: 100 + i for i, c in enumerate("ACGT")})
    home = kops.hash_slot(kops.kmer_code(piece), 4)
    moved = table.clone()
    moved[(home + 2) % 16] = moved[home]
    moved[home] = torch.tensor([0, -1])  # the home slot is empty: a lookup stops there
    bases = _bases(piece.encode())
    for t, want in ((table, [5]), (moved, [100, 101, 102, 103] * 3 + [100])):
        got = kops.kmer_encode(bases, t, k, tail_table=tail, char_ids=chars)
        assert got.tolist() == want
        assert reference.kmer_encode(bases, t, tail, chars, k, k).tolist() == want


@pytest.mark.parametrize("impl", ["ops", "reference"])
def test_int32_output_ids_must_fit(impl: str) -> None:
    """dtype=int32 with a missing_id or pad_id beyond int32: the kernel truncated it silently, the reference raised
    a torch overflow RuntimeError; both now raise the same ValueError."""
    table, tail, chars = tensors({"ACG": 0}, 3)
    bases = _bases(b"ACGTTT")
    with pytest.raises(
        ValueError, match=r"kmer_encode: missing_id must be in -2147483648\.\.2147483647, got 2147483653"
    ):
        if impl == "ops":
            kops.kmer_encode(bases, table, 3, tail_table=tail, char_ids=chars, missing_id=2**31 + 5, dtype=torch.int32)
        else:
            reference.kmer_encode(bases, table, tail, chars, 3, 3, 2**31 + 5, False, torch.int32)
    with pytest.raises(ValueError, match=r"kmer_encode_batch: pad_id must be in -2147483648\.\.2147483647"):
        if impl == "ops":
            kops.kmer_encode_batch(
                bases,
                torch.tensor([0, 6]),
                table,
                3,
                tail_table=tail,
                char_ids=chars,
                dtype=torch.int32,
                pad_id=-(2**40),
            )
        else:
            reference.kmer_encode_batch(
                bases, torch.tensor([0, 6]), table, tail, chars, 3, 3, -1, False, torch.int32, -(2**40), False
            )


def test_vocabulary_tables_reject_bad_keys_and_ids() -> None:
    with pytest.raises(ValueError, match=r"char_ids: keys must be single characters U\+0000\.\.U\+00FF"):
        kops.char_table({"\u20ac": 3})  # was an IndexError
    with pytest.raises(ValueError, match=r"char_ids\['A'\] must be an id in \[0, 2\^31 - 1\), got 4294967296"):
        kops.char_table({"A": 2**32})
    with pytest.raises(ValueError, match=r"pieces\['ACG'\] must be an id in \[0, 2\^31 - 1\), got 1099511627776"):
        kops.build_tables({"ACG": 2**40}, 3)  # was a torch overflow RuntimeError
    with pytest.raises(TypeError, match=r"pieces\['ACG'\] must be an int id, got float 2\.5"):
        kops.build_tables({"ACG": 2.5}, 3)
    with pytest.raises(TypeError, match="pieces: keys must be str"):
        kops.build_tables({7: 1}, 3)


def test_public_functions_reject_non_integer_ids_and_wide_strings() -> None:
    pieces, offsets = _bases(b"ACGT"), torch.tensor([0, 1, 2, 3, 4])
    with pytest.raises(TypeError, match="kmer_decode: ids must have an integer dtype, got float32"):
        kops.kmer_decode(torch.tensor([1.7]), pieces, offsets)  # was truncated to id 1
    assert bytes(kops.kmer_decode(torch.tensor([[3, 1]], dtype=torch.int32), pieces, offsets).tolist()) == b"TC"
    table, tail, chars = tensors({"ACG": 0}, 3)
    with pytest.raises(ValueError, match=r"bases: a str must hold only characters U\+0000\.\.U\+00FF"):
        kops.kmer_encode("ACG\u20ac", table, 3, tail_table=tail, char_ids=chars)
