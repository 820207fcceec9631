"""k-mer tokenization throughput on the shipped genome (C. diphtheriae NCTC11397, 2.46 Mbp), providers side by side.

Encode providers (all give identical ids, checked before timing):
  seed-style     pure Python as the seed wrote it: a loop over slices s[i:i+k] with dict lookups
  hf-tokenizers  HuggingFace `tokenizers`: WordLevel model, Split pre-tokenizer on ".{1,k}"
  numpy          vectorised codes: byte -> 2-bit table, (W, k) reshape, dot with powers of 4, id table
  enigma_fast-1t / enigma_fast-Nt   the compiled op on 1 thread / all threads
  enigma_fast-cuda                  the CUDA kernel (bases already on the GPU), when a GPU is present
Decode providers: seed-style (join of dict lookups), numpy (fancy indexing of fixed-width pieces),
enigma_fast (the decode op).

Threads (the "1 thread vs 2 threads" table): the compiled ops on 1 and on --threads threads, every (case, threads)
pair in interleaved rounds (the thread count is set outside the timed call), medians, GB/s of bases:
  encode                      kmer_encode of the genome
  encode_batch 150 b / 10 kb  kmer_encode_batch of the genome cut into 150-base reads / 10 kb chunks (the op on
                              bases + offsets), and the tokenizer's encode_batch of the reads as a list of str
  count / count 150 b         kmer_count (build_vocab's dense counting) of the genome, and of its 150-base reads
  decode                      kmer_decode of the genome's ids (the op), and the tokenizer's decode (ids -> str)
with the bars: encode on 1 thread >= 1 GB/s, and N threads not slower than 1 for every case.

pytest (CI smoke with --benchmark-disable):  pytest benchmarks/bench_kmer.py --benchmark-disable
table for docs/benchmarks.md:                python -m benchmarks.bench_kmer [--k 5] [--stride 5] [--cuda-gb 1]
at every CPU instruction-set level:          python -m benchmarks.bench_kmer --cpu-capability all
only the threads table:                      python -m benchmarks.bench_kmer --threads-only [--threads 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

from benchmarks.harness import (
    Case,
    add_cpu_capability_argument,
    bench,
    compare,
    device_name,
    run_at_cpu_levels,
    sync,
)
from enigma_fast.data import shipped_genome
from enigma_fast.ops import kmer as kops
from enigma_fast.tokenizers import KMerTokenizer

K = 5


@functools.cache
def genome() -> str:
    return shipped_genome()


class SeedStyle:
    """The seed's tokenizer loop (non-overlapping slices, dict lookups, stop at the first unknown k-mer)."""

    def __init__(self, vocab: dict[str, int], k: int) -> None:
        self.vocab, self.k = vocab, k
        self.id_to_token = {i: t for t, i in vocab.items()}

    def encode(self, sequence: str) -> list[int]:
        out = []
        for i in range(0, len(sequence), self.k):
            kmer = sequence[i : i + self.k]
            if kmer not in self.vocab:
                break
            out.append(self.vocab[kmer])
        return out

    def decode(self, ids: list[int]) -> str:
        return "".join(self.id_to_token[i] for i in ids)


def hf_tokenizer(vocab: dict[str, int], k: int):
    """HuggingFace tokenizers WordLevel over the same vocabulary, pre-split into k-byte pieces (None if absent)."""
    try:
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    except ImportError:
        return None
    full = dict(vocab)
    full.setdefault("[UNK]", len(full))
    tok = Tokenizer(models.WordLevel(vocab=full, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(f".{{1,{k}}}"), behavior="isolated")
    return tok


class NumpyCodes:
    """Vectorised numpy encode/decode for stride == k over an all-A/C/G/T sequence (no fallback handling)."""

    def __init__(self, tok: KMerTokenizer) -> None:
        self.k = tok.k
        self.lut = np.zeros(256, dtype=np.int64)
        for c, v in zip(b"ACGT", range(4), strict=True):
            self.lut[c] = v
        self.table = tok.table.numpy().astype(np.int64)
        self.tail = {p: i for p, i in tok.pieces.items() if len(p) < tok.k}
        self.powers = 4 ** np.arange(tok.k - 1, -1, -1, dtype=np.int64)
        width = max(len(p) for p in tok.pieces)
        by_id = [b""] * tok.vocab_size
        for p, i in tok.pieces.items():
            by_id[i] = p.encode()
        self.pieces = np.array(by_id, dtype=f"S{width}")

    def encode(self, data: bytes) -> np.ndarray:
        a = np.frombuffer(data, dtype=np.uint8)
        w = len(a) // self.k
        codes = self.lut[a[: w * self.k]].reshape(w, self.k) @ self.powers
        ids = self.table[codes]
        tail = data[w * self.k :].decode()
        return np.append(ids, self.tail[tail]) if tail else ids

    def decode(self, ids: np.ndarray) -> bytes:
        # Fixed-width pieces: every id but the last is a full k-mer; the last may be a shorter tail piece.
        if len(ids) == 0:
            return b""
        return self.pieces[ids[:-1]].tobytes() + bytes(self.pieces[ids[-1]])


def with_threads(n: int, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        old = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(old)

    return run


@functools.cache
def setup(k: int = K, stride: int | None = None):
    """Tokenizer with the seed's vocabulary of the genome, the genome as bytes/tensor, and encode/decode providers."""
    s = genome()
    tok = KMerTokenizer(k, stride)
    tok.build_vocab([s])
    data = s.encode()
    bases = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    seed, hf, npc = SeedStyle(tok.vocab, k), hf_tokenizer(tok.vocab, k), NumpyCodes(tok)
    all_threads = torch.get_num_threads()

    def op() -> torch.Tensor:
        return tok.encode_tensor(bases)

    enc: dict[str, Callable[[], object]] = {"seed-style": lambda: seed.encode(s)}
    if hf is not None:
        enc["hf-tokenizers"] = lambda: hf.encode(s).ids
    enc["numpy"] = lambda: npc.encode(data)
    enc["enigma_fast-1t"] = with_threads(1, op)
    enc[f"enigma_fast-{all_threads}t"] = with_threads(all_threads, op)
    ids = op()
    want = ids.tolist()
    assert seed.encode(s) == want and npc.encode(data).tolist() == want, "providers disagree"
    if hf is not None:
        assert hf.encode(s).ids == want, "hf-tokenizers disagrees"
    ids_np = ids.numpy()
    dec: dict[str, Callable[[], object]] = {
        "seed-style": lambda: seed.decode(want),
        "numpy": lambda: npc.decode(ids_np),
        "enigma_fast-1t": with_threads(1, lambda: tok.decode(ids)),
        f"enigma_fast-{all_threads}t": with_threads(all_threads, lambda: tok.decode(ids)),
    }
    assert tok.decode(ids) == s == seed.decode(want) and npc.decode(ids_np) == data
    return tok, bases, enc, dec


# ---- pytest-benchmark (CI runs each once with --benchmark-disable) ----
ENCODE = ["seed-style", "hf-tokenizers", "numpy", "enigma_fast-1t", "enigma_fast-all"]


def _provider(table: dict[str, Callable[[], object]], name: str) -> Callable[[], object]:
    if name == "enigma_fast-all":
        name = f"enigma_fast-{torch.get_num_threads()}t"
    if name not in table:
        pytest.skip(f"{name} unavailable")
    return table[name]


@pytest.mark.parametrize("provider", ENCODE)
def test_encode(benchmark, provider: str) -> None:
    _, bases, enc, _ = setup()
    bench(benchmark, _provider(enc, provider), bytes_moved=bases.numel(), rounds=5)


@pytest.mark.parametrize("provider", ["seed-style", "numpy", "enigma_fast-1t", "enigma_fast-all"])
def test_decode(benchmark, provider: str) -> None:
    _, bases, _, dec = setup()
    bench(benchmark, _provider(dec, provider), bytes_moved=bases.numel(), rounds=5)


READ, CHUNK = 150, 10_000  # encode_batch cases: the genome as 150-base reads and as 10 kb chunks
NOT_SLOWER_TOLERANCE = 0.03  # a ratio of medians within 3% of 1.0 is run-to-run noise here, not "slower"


def _cut(n: int, piece: int) -> torch.Tensor:
    """Offsets (B+1,) cutting n bases into pieces of ``piece`` (the last one shorter)."""
    return torch.tensor([*range(0, n, piece), n], dtype=torch.int64)


@functools.cache
def thread_cases(k: int = K, stride: int | None = None) -> dict[str, tuple[str, int, Callable[[], object]]]:
    """Case id -> (label, bases it covers, zero-argument call) for the threads table; the batches are checked
    against the single-sequence encode and the decode against the genome first."""
    tok, bases, _, _ = setup(k, stride)
    n = bases.numel()
    s = genome()
    table, tail, chars = tok.table, tok.tail_table, tok.char_ids
    stride = tok.stride

    def encode() -> torch.Tensor:
        return torch.ops.enigma_fast.kmer_encode(bases, table, tail, chars, k, stride, -1, False, torch.int64)

    def batch(offsets: torch.Tensor) -> Callable[[], object]:
        def run() -> object:
            return torch.ops.enigma_fast.kmer_encode_batch(
                bases, offsets, table, tail, chars, k, stride, -1, False, torch.int64, tok.pad_id, False
            )

        return run

    ids = encode()
    reads = [s[i : i + READ] for i in range(0, n, READ)]
    cases: dict[str, tuple[str, int, Callable[[], object]]] = {"encode": ("encode", n, encode)}
    for case, piece, name in (
        ("batch-reads", READ, f"encode_batch, {READ}-base reads"),
        ("batch-chunks", CHUNK, "encode_batch, 10 kb chunks"),
    ):
        offsets = _cut(n, piece)
        got, lengths = batch(offsets)()
        for b in (0, offsets.numel() - 2):
            row = got[b, : lengths[b]]
            assert torch.equal(row, tok.encode_tensor(bases[offsets[b] : offsets[b + 1]])), f"{name}: row {b}"
        cases[case] = (f"{name} ({offsets.numel() - 1:,} rows)", n, batch(offsets))
    want, _ = batch(_cut(n, READ))()
    assert torch.equal(tok.encode_batch(reads)[0], want), "tokenizer encode_batch disagrees with the op"
    cases["tok-batch-reads"] = (
        f"tokenizer encode_batch, {READ}-base reads (list of str)",
        n,
        lambda: tok.encode_batch(reads),
    )
    for case, offsets, name in (
        ("count", torch.tensor([0, n]), "count (vocabulary building)"),
        ("count-reads", _cut(n, READ), f"count, {READ}-base reads"),
    ):
        cases[case] = (name, n, functools.partial(torch.ops.enigma_fast.kmer_count, bases, offsets, k, stride, False))
    pieces, piece_offsets = tok._pieces_flat, tok._piece_offsets
    assert bytes(kops.kmer_decode(ids, pieces, piece_offsets).numpy()) == s.encode(), "decode is not the genome"
    cases["decode"] = ("decode", n, lambda: kops.kmer_decode(ids, pieces, piece_offsets))
    cases["tok-decode"] = ("tokenizer decode (ids -> str)", n, lambda: tok.decode(ids))
    return cases


THREAD_CASES = [
    "encode",
    "batch-reads",
    "batch-chunks",
    "tok-batch-reads",
    "count",
    "count-reads",
    "decode",
    "tok-decode",
]


@pytest.mark.parametrize("case", THREAD_CASES)
def test_threads_case(benchmark, case: str) -> None:
    _, n, fn = thread_cases()[case]
    bench(benchmark, fn, bytes_moved=n, rounds=5)


def test_encode_cuda(benchmark) -> None:
    if not torch.cuda.is_available():  # checked at run time, never at collection
        pytest.skip("needs a CUDA device")
    cuda_device = torch.device("cuda", torch.cuda.current_device())
    tok, bases, _, _ = setup()
    on_gpu = bases.to(cuda_device)
    assert torch.equal(tok.encode_tensor(on_gpu).cpu(), tok.encode_tensor(bases))
    bench(benchmark, lambda: tok.encode_tensor(on_gpu), device=str(cuda_device), bytes_moved=bases.numel())


# ---- command line: markdown table ----
def recorded(providers: dict[str, Callable[[], object]]) -> tuple[dict[str, Callable[[], object]], dict[str, list]]:
    """The providers wrapped to record each call's duration (for the best-of column)."""
    times: dict[str, list[float]] = {n: [] for n in providers}

    def wrap(name: str, fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            return out

        return run

    return {n: wrap(n, f) for n, f in providers.items()}, times


def table(title: str, case: Case, best: dict[str, float], n_bases: int, peers: list[str]) -> str:
    """Medians (and their ratios) of interleaved rounds, plus best-of-rounds ratios, which a loaded machine's
    preemption distorts less."""
    cols = [f"x {p}" for p in peers] + [f"x {p} (best)" for p in peers]
    lines = [
        f"### {title}",
        "",
        "| provider | median ms | best ms | MB/s of bases | " + " | ".join(cols) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(cols),
    ]
    for name, t in case.medians_s.items():
        ratios = [f"{case.medians_s[p] / t:.1f}x" if p in case.medians_s else "-" for p in peers]
        ratios += [f"{best[p] / best[name]:.1f}x" if p in best and name in best else "-" for p in peers]
        b = f"{best[name] * 1e3:.3f}" if name in best else "-"
        lines.append(f"| {name} | {t * 1e3:.3f} | {b} | {n_bases / t / 1e6:,.0f} | {' | '.join(ratios)} |")
    return "\n".join(lines)


def cuda_throughput(tok: KMerTokenizer, gb: float, rounds: int = 10) -> str:
    """CUDA encode of about ``gb`` GB of bases (the genome tiled) already on the GPU: median ms and GB/s."""
    dev = torch.device("cuda")
    reps = max(1, int(gb * 1e9) // len(genome()))
    bases = torch.frombuffer(bytearray(genome().encode()), dtype=torch.uint8).to(dev).repeat(reps)
    for _ in range(2):
        tok.encode_tensor(bases)
    times = []
    for _ in range(rounds):
        sync(dev)
        t0 = time.perf_counter()
        tok.encode_tensor(bases)
        sync(dev)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return (
        f"CUDA encode, {bases.numel() / 1e9:.2f} GB of bases on {device_name(dev)}: median {t * 1e3:.2f} ms, "
        f"{bases.numel() / t / 1e9:.1f} GB/s"
    )


def threads_table(k: int, stride: int | None, threads: int, rounds: int) -> tuple[str, list[str]]:
    """Every thread case on 1 and on ``threads`` threads, all (case, threads) pairs in interleaved rounds with the
    thread count set outside the timed call; a markdown table and the bar verdicts."""
    cases = thread_cases(k, stride)
    pairs = [(name, t) for name in cases for t in (1, threads)]
    old = torch.get_num_threads()
    samples: dict[tuple[str, int], list[float]] = {p: [] for p in pairs}
    try:
        for r in range(rounds + 2):  # two warm-up rounds
            order = pairs[r % len(pairs) :] + pairs[: r % len(pairs)]
            for name, t in order:
                torch.set_num_threads(t)
                t0 = time.perf_counter()
                cases[name][2]()
                dt = time.perf_counter() - t0
                if r >= 2:
                    samples[(name, t)].append(dt)
    finally:
        torch.set_num_threads(old)
    med = {p: statistics.median(v) for p, v in samples.items()}
    lines = [
        f"| case | 1 thread ms | 1 thread GB/s | {threads} threads ms | {threads} threads GB/s | "
        f"{threads} threads / 1 thread | not slower |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    verdicts = []
    for case, (name, n, _) in cases.items():
        t1, tn = med[(case, 1)], med[(case, threads)]
        ok = t1 / tn >= 1 - NOT_SLOWER_TOLERANCE
        lines.append(
            f"| {name} | {t1 * 1e3:.3f} | {n / t1 / 1e9:.2f} | {tn * 1e3:.3f} | {n / tn / 1e9:.2f} | "
            f"{t1 / tn:.2f}x | {'pass' if ok else 'FAIL'} |"
        )
        verdicts.append(
            f"{name}: {threads} threads / 1 thread {t1 / tn:.2f}x (bar: not slower) {'pass' if ok else 'FAIL'}"
        )
    e1 = cases["encode"][1] / med[("encode", 1)] / 1e9
    verdicts.insert(0, f"encode on 1 thread: {e1:.2f} GB/s of bases (bar: >= 1 GB/s) {'pass' if e1 >= 1 else 'FAIL'}")
    return "\n".join(lines), verdicts


def load_average() -> str:
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=K)
    ap.add_argument("--stride", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2, help="the thread count compared with 1 in the threads table")
    ap.add_argument("--threads-only", action="store_true", help="only the 1 thread vs N threads table")
    ap.add_argument("--cuda-gb", type=float, default=1.0, help="size of the CUDA case (when a GPU is present)")
    add_cpu_capability_argument(ap)
    args = ap.parse_args(argv)
    status = run_at_cpu_levels(args, "benchmarks.bench_kmer", argv)
    if status is not None:
        return status
    tok, bases, enc, dec = setup(args.k, args.stride)
    n = bases.numel()
    print(
        f"k = {args.k}, stride = {tok.stride}, {n:,} bases, vocabulary {len(tok.vocab)} pieces; "
        f"CPU: {device_name('cpu')}; {load_average()}"
    )
    print(f"command: python -m benchmarks.bench_kmer {' '.join(argv)}".rstrip())
    print()
    verdicts: list[str] = []
    if not args.threads_only:
        verdicts = encode_decode_tables(tok, bases, enc, dec, args)
        print()
    table_md, thread_verdicts = threads_table(args.k, args.stride, args.threads, args.rounds)
    print(f"### threads: 1 vs {args.threads} (medians of {args.rounds} interleaved rounds)")
    print()
    print(table_md)
    print()
    for v in verdicts + thread_verdicts:
        print(v)
    print(f"({load_average()} at the end)")
    return 0


def encode_decode_tables(tok, bases, enc, dec, args) -> list[str]:
    """The providers' encode and decode tables (seed-style, hf-tokenizers, numpy, enigma_fast); their lines."""
    n = bases.numel()
    cuda = torch.cuda.is_available()
    peers = ["seed-style", "numpy"]
    enc_timed, enc_times = recorded(enc)
    ec = compare(Case("encode", enc_timed, n, "cpu"), rounds=args.rounds)
    best = {name: min(t) for name, t in enc_times.items()}
    if cuda:  # timed on its own, with device synchronisation
        on_gpu = bases.cuda()
        gpu = compare(Case("cuda", {"c": lambda: tok.encode_tensor(on_gpu)}, n, "cuda"), rounds=args.rounds)
        ec.medians_s["enigma_fast-cuda"] = gpu.medians_s["c"]
    print(table("encode", ec, best, n, peers))
    print()
    dec_timed, dec_times = recorded(dec)
    dc = compare(Case("decode", dec_timed, n, "cpu"), rounds=args.rounds)
    print(table("decode", dc, {name: min(t) for name, t in dec_times.items()}, n, peers))
    t1 = ec.medians_s["enigma_fast-1t"]
    b1 = best["enigma_fast-1t"]
    lines = [
        f"single thread (medians): {n / t1 / 1e9:.2f} GB/s of bases; {ec.medians_s['seed-style'] / t1:.0f}x "
        f"seed-style; {ec.medians_s['numpy'] / t1:.1f}x numpy (bar: >= 1 GB/s, >= 50x, >= 5x)",
        f"single thread (best of rounds): {n / b1 / 1e9:.2f} GB/s; {best['seed-style'] / b1:.0f}x seed-style; "
        f"{best['numpy'] / b1:.1f}x numpy",
    ]
    if cuda:
        lines.append(cuda_throughput(tok, args.cuda_gb))
    return lines


if __name__ == "__main__":
    sys.exit(main())
