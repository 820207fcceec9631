"""Threads that never hurt: every CPU kernel on 2 threads against 1 thread, small and large problems.

Each case times the registered op itself (no autograd bookkeeping) on 1 and on N threads in interleaved rounds
(torch.set_num_threads switches between them; enigma_fast's pool follows it) and reports medians and the ratio
N-thread time / 1-thread time. Bar: no case above 1.0 (+ a 5% noise margin, printed). The k-mer kernels have the
same table in ``benchmarks/bench_kmer.py --threads-only``.

    pytest benchmarks/bench_threads.py --benchmark-disable     # smoke: every case once
    python -m benchmarks.bench_threads [--threads 2] [--cpu-capability all]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import pytest
import torch

import enigma_fast  # noqa: F401  (loads the ops)
from benchmarks.harness import add_cpu_capability_argument, device_name, run_at_cpu_levels

MARGIN = 1.05


def _attention(B: int, H: int, T: int, D: int, P: int) -> dict[str, Callable[[], object]]:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    rel = torch.randn(H, 2 * P - 1, D, generator=g) * 0.1
    scale = D**-0.5
    lib = torch.ops.enigma_fast
    out, lse = lib.rel_attention_fwd(q, k, v, rel, None, True, scale)
    dout = torch.randn_like(out)
    return {
        f"attention fwd B{B} H{H} T{T}": lambda: lib.rel_attention_fwd(q, k, v, rel, None, True, scale),
        f"attention bwd B{B} H{H} T{T}": lambda: lib.rel_attention_bwd(dout, q, k, v, rel, None, out, lse, True, scale),
    }


def _decode(B: int, H: int, Tk: int, D: int) -> dict[str, Callable[[], object]]:
    g = torch.Generator().manual_seed(0)
    kc, vc = (torch.randn(B, H, Tk, D, generator=g) for _ in range(2))
    q, kn, vn = (torch.randn(B, H, 1, D, generator=g) for _ in range(3))
    rel = torch.randn(H, 2 * 1024 - 1, D, generator=g) * 0.1
    lens = torch.full((B,), Tk - 1, dtype=torch.int32)
    lib = torch.ops.enigma_fast
    return {f"decode B{B} H{H} Tk{Tk}": lambda: lib.rel_attention_kvcache(q, kc, vc, rel, lens, kn, vn, None, D**-0.5)}


def _rms(rows: int, n: int) -> dict[str, Callable[[], object]]:
    g = torch.Generator().manual_seed(0)
    x, dy = (torch.randn(rows, n, generator=g) for _ in range(2))
    w = torch.randn(n, generator=g)
    lib = torch.ops.enigma_fast
    _, rstd = lib.rms_norm_fwd(x, w, 1e-6)
    return {
        f"rms_norm fwd {rows}x{n}": lambda: lib.rms_norm_fwd(x, w, 1e-6),
        f"rms_norm bwd {rows}x{n}": lambda: lib.rms_norm_bwd(dy, x, w, rstd, None, True),
    }


def cases(small_only: bool = False) -> dict[str, Callable[[], object]]:
    """name -> op call: problems from a single tiny head to the bar shapes."""
    out: dict[str, Callable[[], object]] = {}
    for shape in [(1, 1, 16, 32), (1, 4, 128, 32), (16, 4, 128, 32)] + ([] if small_only else [(4, 12, 1024, 32)]):
        out.update(_attention(*shape, P=64))
    for shape in [(1, 4, 128, 32), (1, 4, 1024, 32)] + ([] if small_only else [(8, 4, 1024, 32), (1, 12, 4096, 32)]):
        out.update(_decode(*shape))
    for shape in [(16, 64), (128, 128), (2048, 128)] + ([] if small_only else [(2048, 384), (4096, 1024)]):
        out.update(_rms(*shape))
    return out


def _median_time(fn: Callable[[], object], reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def compare_threads(fn: Callable[[], object], threads: int, rounds: int, budget_s: float = 0.2) -> tuple[float, float]:
    """Median time on 1 thread and on `threads`, interleaved: each round times a few calls at each count."""
    torch.set_num_threads(1)
    fn()
    t = _median_time(fn, 3)
    reps = max(1, min(50, int(budget_s / max(t, 1e-6) / rounds)))
    samples: dict[int, list[float]] = {1: [], threads: []}
    for r in range(rounds):
        for n in (1, threads) if r % 2 == 0 else (threads, 1):
            torch.set_num_threads(n)
            fn()
            samples[n].append(_median_time(fn, reps))
    torch.set_num_threads(threads)
    return statistics.median(samples[1]), statistics.median(samples[threads])


@pytest.mark.parametrize("name", list(cases(small_only=True)))
def test_threads_smoke(name):
    fn = cases(small_only=True)[name]
    one, many = compare_threads(fn, 2, rounds=1, budget_s=0.0)
    assert one > 0 and many > 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    add_cpu_capability_argument(ap)
    args = ap.parse_args(argv)
    status = run_at_cpu_levels(args, "benchmarks.bench_threads", argv)
    if status is not None:
        return status
    torch.set_num_threads(args.threads)
    print(f"device: {device_name('cpu')}; torch {torch.__version__}")
    print(f"command: python -m benchmarks.bench_threads {' '.join(argv)}".rstrip())
    print()
    n = args.threads
    print(f"| case | 1 thread (us) | {n} threads (us) | {n}t / 1t time | not slower (<= {MARGIN}) |")
    print("|---|---:|---:|---:|---|")
    ok_all = True
    for name, fn in cases().items():
        one, many = compare_threads(fn, n, args.rounds)
        ratio = many / one
        ok = ratio <= MARGIN
        ok_all &= ok
        print(f"| {name} | {one * 1e6:.1f} | {many * 1e6:.1f} | {ratio:.2f} | {'PASS' if ok else 'FAIL'} |", flush=True)
    return 0 if ok_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
