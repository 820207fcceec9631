"""Scoring throughput (bases/s): ``enigma_fast.scoring.score`` over a stretch of the shipped genome, eager
(float32 and bfloat16 autocast) against ``torch.compile``, on CPU (and CUDA when there is one); and the time of
``python -m enigma_fast.score --heldout`` (the shipped genome's held-out 10%) with a trained model, checked against
the trainer's figure.

Windows are the trainer's final-evaluation windows of its ``tiny`` recipe (EnBERT, window 128, eval stride 96, so
context 33) unless ``--window``/``--context`` say otherwise; the models are randomly initialised (speed does not
depend on the weights).

    pytest benchmarks/bench_scoring.py --benchmark-disable                          # smoke (each case once)
    python -m benchmarks.bench_scoring --preset tiny --bases 65536 --rounds 5       # throughput table
    python -m benchmarks.bench_scoring --preset 47m --bases 8192 --rounds 3
    python -m benchmarks.bench_scoring --heldout runs/tiny/final --runs 5           # the 30 s bar
    python -m benchmarks.bench_scoring --record --cpu-capability all --rounds 3      # the whole record, before/now

``--record`` scores and embeds the shipped genome's whole record (2,463,666 bases) with the ``tiny`` EnBERT
(random weights, single-base tokens, the API's defaults: window = block_size = 1024, context 512, 32 windows per
call) through the current engine and through the one it replaced (``benchmarks/scoring_before.py``), in
interleaved rounds, and prints medians of wall time and of the process's user and system CPU time per call;
``--kmer`` adds both engines with the tokenizer of the trainer's default run (non-overlapping 3-mers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.harness import (
    Case,
    add_cpu_capability_argument,
    compare,
    cpu_model,
    device_name,
    format_table,
    run_at_cpu_levels,
)
from benchmarks.scoring_before import embed_before, score_before
from enigma_fast import scoring
from enigma_fast.data import shipped_genome
from enigma_fast.models import EnBERT, EnBERTConfig
from enigma_fast.tokenizers import CharTokenizer

_GENOME: str | None = None


def genome() -> str:
    """The shipped chromosome, read once."""
    global _GENOME
    if _GENOME is None:
        _GENOME = shipped_genome()
    return _GENOME


def make_model(preset: str, device: str = "cpu", tokenizer=None, **overrides) -> EnBERT:
    """A randomly initialised EnBERT of ``preset`` with ``tokenizer`` attached (default: the single-base one)."""
    torch.manual_seed(0)
    tok = tokenizer if tokenizer is not None else CharTokenizer(case="upper")
    model = EnBERT(EnBERTConfig.from_preset(preset, vocab_size=tok.vocab_size, **overrides)).to(device).eval()
    model.tokenizer = tok
    return model


def score_fn(model, seq: str, window: int, context: int, batch_size: int, device: str, dtype: str | None = None):
    """A zero-argument call scoring ``seq``; returns its bits/base."""

    def run() -> float:
        res = scoring.score(
            model, [seq], window=window, context=context, batch_size=batch_size, device=device, dtype=dtype
        )
        return res[0].bits_per_base

    return run


PROVIDERS = ("eager", "eager bfloat16", "torch.compile")


def providers(
    model, seq: str, window: int, context: int, batch_size: int, device: str, names: tuple[str, ...] = PROVIDERS
) -> dict:
    """``eager`` (float32), ``eager bfloat16`` (autocast) and ``torch.compile`` (float32) scoring calls."""
    make = {
        "eager": lambda: score_fn(model, seq, window, context, batch_size, device),
        "eager bfloat16": lambda: score_fn(model, seq, window, context, batch_size, device, "bfloat16"),
        "torch.compile": lambda: score_fn(torch.compile(model), seq, window, context, batch_size, device),
    }
    return {name: make[name]() for name in names}


# ---- pytest-benchmark (small sizes: a smoke test under --benchmark-disable) ------------------------------------
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("preset", ["tiny", "47m"])
def test_scoring_throughput(benchmark, preset, provider, device):
    # the 47m width with one layer keeps the smoke run short; the command line times the whole model
    over = {} if preset == "tiny" else {"n_layer": 1}
    model = make_model(preset, device, **over)
    seq = genome()[:2048]
    fn = providers(model, seq, 128, 33, 32, device, names=(provider,))[provider]
    benchmark.group = f"score {preset}{' (1 layer)' if over else ''} {len(seq)} bases w128 c33"
    benchmark.extra_info["bases_per_call"] = len(seq)
    benchmark.extra_info["device"] = device_name(device)
    bpb = benchmark.pedantic(fn, rounds=2, warmup_rounds=1, iterations=1)
    assert 0.0 < bpb < 10.0


# ---- the whole record: the batched engine against the one it replaced --------------------------------------------
def default_tiny(device: str = "cpu") -> EnBERT:
    """The tiny EnBERT with the tokenizer of the trainer's default run (``--preset tiny``: non-overlapping 3-mers,
    built by the trainer's own ``make_tokenizer``), randomly initialised."""
    from enigma_fast.train.config import TrainConfig
    from enigma_fast.train.data import make_tokenizer

    return make_model("tiny", device, tokenizer=make_tokenizer(TrainConfig.resolve("tiny")))


def record_providers(
    model, seq: str, what: tuple[str, ...] = ("score", "embed"), bf16: bool = False, kmer_model=None
) -> dict:
    """``score before``/``score now`` and ``embed before``/``embed now`` of ``seq`` with the API's defaults (and with
    ``bf16`` ``score now bfloat16``: bfloat16 autocast, an option, not the default; with ``kmer_model``, ``score
    before 3-mer``/``score now 3-mer``: the same two engines with that model); each call returns what a comparison
    needs (bits/base, or the mean embedding)."""
    make = {
        "score before": lambda: score_before(model, [seq])[0].bits_per_base,
        "score now": lambda: scoring.score(model, [seq])[0].bits_per_base,
        "score now bfloat16": lambda: scoring.score(model, [seq], dtype="bfloat16")[0].bits_per_base,
        "embed before": lambda: embed_before(model, [seq]).mean,
        "embed now": lambda: scoring.embed(model, [seq]).mean,
    }
    if kmer_model is not None:
        make["score before 3-mer"] = lambda: score_before(kmer_model, [seq])[0].bits_per_base
        make["score now 3-mer"] = lambda: scoring.score(kmer_model, [seq])[0].bits_per_base
    return {n: f for n, f in make.items() if n.split()[0] in what and (bf16 or "bfloat16" not in n)}


@pytest.mark.parametrize("what", ["score", "embed"])
def test_record_before_and_now(benchmark, what):
    # smoke: 4 kbp of the record (a few windows of 1024 tokens); the command line reads the whole record
    provs = record_providers(make_model("tiny"), genome()[:4096], (what,))
    before, now = (provs[f"{what} {w}"] for w in ("before", "now"))
    benchmark.group = f"{what} 4096 bases of the record, tiny, w1024"
    got = benchmark.pedantic(now, rounds=1, warmup_rounds=0, iterations=1)
    np.testing.assert_array_equal(got, before())  # the same arithmetic: the same bits


def test_record_table_with_the_default_tokenizer(capsys):
    # the --record table on 3 kbp: the 3-mer rows come with their own old-engine peer and identical results
    args = argparse.Namespace(threads=1, what="score", bases=3072, bf16=False, kmer=True, rounds=1)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    assert record(args, "bench_scoring --record") == 0
    out = capsys.readouterr().out
    assert "| score now 3-mer |" in out and "| score before 3-mer |" in out
    assert "score 3-mer: results of before and now identical" in out
    assert "score now 3-mer against score before (single-base tokens" in out
    assert default_tiny().tokenizer.kind == "kmer"


def _usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def record(args: argparse.Namespace, cmd: str) -> int:
    """Interleaved rounds of the record providers; a table of medians (wall, user, system) and the ratios."""
    torch.set_num_threads(args.threads)
    what = tuple(args.what.split(","))
    seq = genome()[: args.bases] if args.bases else genome()
    model = make_model("tiny")
    kmer_model = default_tiny() if args.kmer else None
    provs = record_providers(model, seq, what, args.bf16, kmer_model)
    print(f"Device: {device_name('cpu')}; torch {torch.__version__}; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    print(f"Command: `{cmd}`; {len(seq):,} bases, tiny EnBERT (random weights), {args.rounds} interleaved rounds")
    if kmer_model is not None:
        print("rows '3-mer': the same model shape with the tokenizer of the trainer's default run (--preset tiny)")
    samples: dict[str, list[tuple[float, float, float, int]]] = {n: [] for n in provs}
    outs, loads = {}, [os.getloadavg()[0]]
    for r in range(args.rounds):
        names = list(provs)
        for n in names[r % len(names) :] + names[: r % len(names)]:
            u0, s0, f0 = _usage()
            t0 = time.perf_counter()
            outs[n] = provs[n]()
            t1 = time.perf_counter()
            u1, s1, f1 = _usage()
            samples[n].append((t1 - t0, u1 - u0, s1 - s0, f1 - f0))
            loads.append(os.getloadavg()[0])
            print(f"  round {r + 1} {n}: {t1 - t0:.2f} s (load {loads[-1]:.2f})", flush=True)
    print(f"\n1-minute load average during the run: {min(loads):.2f}-{max(loads):.2f}\n")
    print("| call | wall s (median) | user s | system s | minor faults | wall: before / now | CPU: before / now |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def peer_name(n: str) -> str:
        return n.split()[0] + " before" + (" 3-mer" if n.endswith("3-mer") else "")

    med = {n: [statistics.median(x[i] for x in v) for i in range(4)] for n, v in samples.items()}
    for n, (w, u, sy, f) in med.items():
        peer = med.get(peer_name(n))
        ratio = f"{peer[0] / w:.2f}x | {(peer[1] + peer[2]) / (u + sy):.2f}x" if peer and n != peer_name(n) else " |"
        print(f"| {n} | {w:.2f} | {u:.2f} | {sy:.2f} | {f:,.0f} | {ratio} |")
    for w in what:
        a, b = outs[f"{w} before"], outs[f"{w} now"]
        same = np.array_equal(a, b) if w == "embed" else a == b
        print(f"{w}: results of before and now {'identical' if same else f'differ: {a} vs {b}'}")
    if "score now 3-mer" in outs:
        a, b = outs["score before 3-mer"], outs["score now 3-mer"]
        print(f"score 3-mer: results of before and now {'identical' if a == b else f'differ: {a} vs {b}'}")
        w3, wb = med["score now 3-mer"][0], med["score before"][0]
        print(
            f"score now 3-mer against score before (single-base tokens, the engine it replaced): {wb / w3:.2f}x wall; "
            f"against score before 3-mer (the same model, the old engine): {med['score before 3-mer'][0] / w3:.2f}x"
        )
    if "score now bfloat16" in outs:
        low, ref = outs["score now bfloat16"], outs["score now"]
        print(f"score bfloat16: {low:.6f} bits/base against float32 {ref:.6f} (difference {low - ref:.1e})")
    return 0


# ---- command line ----------------------------------------------------------------------------------------------
def heldout(model_dir: str, runs: int, extra: list[str]) -> int:
    """Time ``python -m enigma_fast.score --model DIR --heldout`` end to end (a fresh process each run, model load
    and imports included) and compare its bits/base with the trainer's (RUN/summary.json)."""
    cmd = [sys.executable, "-m", "enigma_fast.score", "--model", model_dir, "--heldout", *extra]
    times, bpbs, inner = [], [], []
    for i in range(runs):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if res.returncode:
            print(res.stderr[-2000:], file=sys.stderr)
            return res.returncode
        row = res.stdout.strip().splitlines()[1:]
        ll = sum(float(r.split("\t")[3]) for r in row)
        bases = sum(int(r.split("\t")[5]) for r in row)
        bpb = -ll / bases / 0.6931471805599453
        scored_in = [ln for ln in res.stderr.splitlines() if "scored in" in ln]
        inner.append(float(scored_in[-1].split("scored in ")[1].split(" s")[0]) if scored_in else float("nan"))
        times.append(dt)
        bpbs.append(bpb)
        print(
            f"run {i + 1}: {dt:.2f} s end to end ({inner[-1]:.2f} s scoring), {bpb:.6f} bits/base, "
            f"load average before {load:.2f}"
        )
    summary = Path(model_dir).resolve().parent / "summary.json"
    trainer = json.loads(summary.read_text())["val"]["bpb"] if summary.is_file() else None
    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(f"Command: `{' '.join(['python', *cmd[1:]])}`")
    print(
        f"median of {runs}: {statistics.median(times):.2f} s end to end, {statistics.median(inner):.2f} s scoring; "
        f"load average now {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if trainer is not None:
        print(
            f"bits/base {bpbs[-1]:.6f}; the trainer's final evaluation {trainer:.6f} (difference "
            f"{bpbs[-1] - trainer:.1e})"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bases", type=int, default=65536, help="bases of the genome's held-out part to score")
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--context", type=int, default=33)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument(
        "--heldout",
        metavar="MODEL_DIR",
        default=None,
        help="time `python -m enigma_fast.score --model MODEL_DIR --heldout` instead",
    )
    p.add_argument("--runs", type=int, default=5, help="--heldout: runs (the median is reported)")
    p.add_argument("--record", action="store_true", help="the whole record of the shipped genome, before vs now")
    p.add_argument("--what", default="score,embed", help="--record: score, embed or score,embed")
    p.add_argument("--bf16", action="store_true", help="--record: also score under bfloat16 autocast")
    p.add_argument(
        "--kmer",
        action="store_true",
        help="--record: also score with the tokenizer of the trainer's default run (3-mers), both engines",
    )
    p.add_argument("--record-bases", dest="bases_record", type=int, default=0, help="--record: first N bases only")
    add_cpu_capability_argument(p)
    args, extra = p.parse_known_args(argv)
    if args.heldout:
        return heldout(args.heldout, args.runs, extra)
    if args.record:
        if extra:
            p.error(f"unrecognized arguments: {' '.join(extra)}")
        if os.environ.get("OMP_WAIT_POLICY") is None:  # as the CLIs: read when OpenMP loads, so a fresh process
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
            return subprocess.run([sys.executable, "-m", "benchmarks.bench_scoring", *argv]).returncode
        status = run_at_cpu_levels(args, "benchmarks.bench_scoring", argv)
        if status is not None:
            return status
        args.bases = args.bases_record
        return record(args, "python -m benchmarks.bench_scoring " + " ".join(argv))
    if extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    torch.set_num_threads(args.threads)
    cmd = "python -m benchmarks.bench_scoring " + " ".join(argv)
    print(f"Device: {device_name(args.device)}; torch {torch.__version__}; medians of {args.rounds} interleaved rounds")
    print(f"Command: `{cmd.strip()}`\n")
    model = make_model(args.preset, args.device)
    g = genome()
    cut = len(g) - len(g) // 10
    seq = g[cut : cut + args.bases]
    names = tuple(n for n in PROVIDERS if not (args.no_compile and n == "torch.compile"))
    provs = providers(model, seq, args.window, args.context, args.batch_size, args.device, names)
    outs = {name: fn() for name, fn in provs.items()}  # also the warm-up (compiles)
    case = compare(
        Case(
            f"{args.preset} {len(seq)} bases w{args.window} c{args.context} b{args.batch_size}",
            provs,
            device=args.device,
        ),
        rounds=args.rounds,
        warmup=0,
    )
    print(format_table([case], peer="eager"))
    print()
    for name, t in case.medians_s.items():
        print(f"{name}: {len(seq) / t:,.0f} bases/s ({outs[name]:.6f} bits/base)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
