"""Throughput and peak memory of ``prepare`` on a generated genome-scale FASTA: many records, soft-masked
(lower-case) stretches, N runs, 60-base lines; the bases and the file are generated here and deleted afterwards.

    pytest benchmarks/bench_prepare.py --benchmark-disable        # smoke: a 2 Mbp file, prepare_tokens in-process
    python -m benchmarks.bench_prepare --gbp 1                     # 1 Gbp through `python -m enigma_fast.train prepare`

The command-line run times the CLI as a child process (interpreter and torch start-up included) and reads the
child's peak resident memory from ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``; bases/s counts every base of
the file (N included) over the whole command's wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.harness import bench, cpu_model

LINE = 60
_LOWER = np.frombuffer(b"acgt", dtype=np.uint8)
_UPPER = np.frombuffer(b"ACGT", dtype=np.uint8)


def _record(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` bases as uint8: random A/C/G/T, a third to a half of them in soft-masked stretches of 50..5,000 bases,
    an N run of 100..50,000 bases (at most 2% of ``n``) per 2 Mbp, and N runs of 1..20 bases every ~100 kbp."""
    codes = rng.integers(0, 4, n, dtype=np.uint8)
    out = _UPPER[codes]
    pos = 0
    while pos < n:  # alternate unmasked and soft-masked stretches
        pos += int(rng.integers(50, 5_000))
        run = int(rng.integers(50, 5_000))
        out[pos : pos + run] = _LOWER[codes[pos : pos + run]]
        pos += run
    for _ in range(max(1, n // 2_000_000)):
        start = int(rng.integers(0, n))
        out[start : start + int(rng.integers(100, max(101, min(50_000, n // 50))))] = ord("N")
    for start in rng.integers(0, n, max(1, n // 100_000)):
        out[start : start + int(rng.integers(1, 20))] = ord("N")
    return out


def write_genome(path: Path, bases: int, seed: int = 0) -> tuple[int, int]:
    """Write a FASTA of about ``bases`` bases to ``path``: a tenth of them in contigs of 20-200 kbp, the rest in
    chromosome-sized records of ~1/20 of the total, 60 bases a line. Returns (bases, records) written."""
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    small = bases // 10
    while sum(sizes) < small:
        sizes.append(int(rng.integers(20_000, 200_000)))
    big = bases - sum(sizes)
    n_big = max(1, min(20, big // 1_000_000))
    sizes = [big // n_big] * (n_big - 1) + [big - (big // n_big) * (n_big - 1)] + sizes
    block = 1 << 22  # bases generated at a time
    with open(path, "wb") as f:
        for i, size in enumerate(sizes):
            f.write(f">seq{i} generated {size} bp\n".encode())
            done = 0
            while done < size:
                n = min(block, size - done)
                n -= n % LINE if n > LINE and done + n < size else 0
                seq = _record(rng, n)
                rows = -(-n // LINE)
                lines = np.empty((rows, LINE + 1), dtype=np.uint8)
                lines[:, LINE] = ord("\n")
                body = np.full(rows * LINE, ord("N"), dtype=np.uint8)
                body[:n] = seq
                lines[:, :LINE] = body.reshape(rows, LINE)
                data = lines.tobytes()
                if n % LINE:  # a short last line: drop the rest of the last row
                    data = data[: (rows - 1) * (LINE + 1)] + seq[(rows - 1) * LINE :].tobytes() + b"\n"
                f.write(data)
                done += n
    return sum(sizes), len(sizes)


# ---- pytest-benchmark (a small file: a smoke test under --benchmark-disable) -----------------------------------
@pytest.fixture(scope="module")
def small_genome(tmp_path_factory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("prepare") / "genome.fa"
    bases, _ = write_genome(path, 2_000_000)
    return path, bases


@pytest.mark.parametrize("tokenizer", ["char", "kmer6"])
def test_prepare(benchmark, small_genome, tokenizer, tmp_path):
    from enigma_fast.data.tokens import prepare_tokens
    from enigma_fast.train.config import TrainConfig
    from enigma_fast.train.data import make_tokenizer

    path, bases = small_genome
    tok = make_tokenizer(TrainConfig(tokenizer="char" if tokenizer == "char" else "kmer", k=6))
    out = tmp_path / "store"
    benchmark.group = "prepare 2 Mbp"
    benchmark.extra_info["bases"] = bases
    store = bench(benchmark, lambda: prepare_tokens([path], out, tok, progress=False), bytes_moved=bases, rounds=3)
    assert store.num_bases > 0.9 * bases


# ---- command line ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gbp", type=float, default=1.0, help="gigabases of the generated FASTA")
    p.add_argument("--tokenizer", default="kmer")
    p.add_argument("--k", type=int, default=6)
    p.add_argument("--dir", default=None, help="folder for the temporary files (default: the system's temp)")
    p.add_argument("--min-mbps", type=float, default=None, help="exit 1 below this many MB/s of bases")
    p.add_argument("--max-rss-gb", type=float, default=None, help="exit 1 above this peak RSS (GB)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_prepare.", dir=args.dir))
    try:
        fasta = work / "genome.fa"
        t0 = time.perf_counter()
        bases, records = write_genome(fasta, int(args.gbp * 1e9))
        print(
            f"generated {fasta.stat().st_size / 1e9:.2f} GB FASTA ({bases:,} bases, {records} records) in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        cmd = [
            sys.executable,
            "-m",
            "enigma_fast.train",
            "prepare",
            str(fasta),
            "--out",
            str(work / "store"),
            "--tokenizer",
            args.tokenizer,
            "--k",
            str(args.k),
        ]
        load = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            print(proc.stderr[-2000:])
            return proc.returncode
        inner = re.search(r"in \S+: ([\d.]+) s, ([\d.]+) Mbases/s", proc.stderr)
        store_mb = sum(f.stat().st_size for f in (work / "store").iterdir()) / 1e6
        mbps = bases / wall / 1e6
        rss_gb = rss_kb * 1024 / 1e9
        print(
            f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average {load[0]:.2f} / {load[1]:.2f} / "
            f"{load[2]:.2f} before, {os.getloadavg()[0]:.2f} after"
        )
        print(
            f"Command: `python -m enigma_fast.train prepare genome.fa --out store --tokenizer {args.tokenizer} "
            f"--k {args.k}` (store: {store_mb:,.0f} MB)\n"
        )
        print("| bases | records | wall s (whole command) | MB/s of bases | prepare_tokens s | its MB/s | peak RSS |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {bases:,} | {records:,} | {wall:.1f} | {mbps:.0f} | {inner.group(1) if inner else '-'} | "
            f"{inner.group(2) if inner else '-'} | {rss_gb:.2f} GB |"
        )
        ok = (args.min_mbps is None or mbps >= args.min_mbps) and (args.max_rss_gb is None or rss_gb <= args.max_rss_gb)
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
