"""k-mer tokenization throughput on the shipped genome (C. diphtheriae NCTC11397, 2.46 Mbp), providers side by side.

Encode providers (all give identical ids, checked before timing):
  seed-style     pure Python as the seed wrote it: a loop over slices s[i:i+k] with dict lookups
  hf-tokenizers  HuggingFace `tokenizers`: WordLevel model, Split pre-tokenizer on ".{1,k}"
  numpy          vectorised codes: byte -> 2-bit table, (W, k) reshape, dot with powers of 4, id table
  enigma_fast-1t / enigma_fast-Nt   the compiled op on 1 thread / all threads
  enigma_fast-cuda                  the CUDA kernel (bases already on the GPU), when a GPU is present
Decode providers: seed-style (join of dict lookups), numpy (fancy indexing of fixed-width pieces),
enigma_fast (the decode op).

pytest (CI smoke with --benchmark-disable):  pytest benchmarks/bench_kmer.py --benchmark-disable
table for docs/benchmarks.md:                python -m benchmarks.bench_kmer [--k 5] [--stride 5] [--cuda-gb 1]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

from benchmarks.harness import Case, bench, compare, device_name, sync
from enigma_fast.data import shipped_genome
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


def test_encode_cuda(benchmark) -> None:
    if not torch.cuda.is_available():  # checked at run time, never at collection
        pytest.skip("needs a CUDA device")
    cuda_device = torch.device("cuda", torch.cuda.current_device())
    tok, bases, _, _ = setup()
    on_gpu = bases.to(cuda_device)
    assert torch.equal(tok.encode_tensor(on_gpu).cpu(), tok.encode_tensor(bases))
    bench(benchmark, lambda: tok.encode_tensor(on_gpu), device=str(cuda_device), bytes_moved=bases.numel())


# ---- command line: markdown table ----
def table(title: str, case: Case, n_bases: int, peers: list[str]) -> str:
    lines = [f"### {title}", "", "| provider | median ms | MB/s of bases | " + " | ".join(f"x {p}" for p in peers) + " |",
             "|---|---:|---:|" + "---:|" * len(peers)]
    for name, t in case.medians_s.items():
        ratios = " | ".join(f"{case.medians_s[p] / t:.1f}x" if p in case.medians_s else "-" for p in peers)
        lines.append(f"| {name} | {t * 1e3:.3f} | {n_bases / t / 1e6:,.0f} | {ratios} |")
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
    return (f"CUDA encode, {bases.numel() / 1e9:.2f} GB of bases on {device_name(dev)}: median {t * 1e3:.2f} ms, "
            f"{bases.numel() / t / 1e9:.1f} GB/s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=K)
    ap.add_argument("--stride", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cuda-gb", type=float, default=1.0, help="size of the CUDA case (when a GPU is present)")
    args = ap.parse_args(argv)
    tok, bases, enc, dec = setup(args.k, args.stride)
    n = bases.numel()
    cuda = torch.cuda.is_available()
    if cuda:
        on_gpu = bases.cuda()
        enc["enigma_fast-cuda"] = lambda: tok.encode_tensor(on_gpu)
    peers = ["seed-style", "numpy"]
    print(f"k = {args.k}, stride = {tok.stride}, {n:,} bases, vocabulary {len(tok.vocab)} pieces; "
          f"CPU: {device_name('cpu')}")
    print(f"command: python -m benchmarks.bench_kmer {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print()
    ec = compare(Case("encode", enc, n, "cpu"), rounds=args.rounds)
    if cuda:  # the CUDA provider needs its own synchronisation
        ec.medians_s["enigma_fast-cuda"] = compare(Case("cuda", {"c": enc["enigma_fast-cuda"]}, n, "cuda"),
                                                   rounds=args.rounds).medians_s["c"]
    print(table("encode", ec, n, peers))
    print()
    print(table("decode", compare(Case("decode", dec, n, "cpu"), rounds=args.rounds), n, peers))
    t1 = ec.medians_s["enigma_fast-1t"]
    print()
    print(f"single thread: {n / t1 / 1e9:.2f} GB/s of bases; {ec.medians_s['seed-style'] / t1:.0f}x seed-style; "
          f"{ec.medians_s['numpy'] / t1:.1f}x numpy (bar: >= 1 GB/s, >= 50x, >= 5x)")
    if cuda:
        print(cuda_throughput(tok, args.cuda_gb))


if __name__ == "__main__":
    main()
