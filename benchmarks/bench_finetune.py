"""Fine-tuning benchmark: the labelled tasks of the shipped genome (``enigma_fast.finetune.benchmark``), each solved
by six methods on the same splits, seeds and machine:

    kmer-lr   k-mer spectrum (k = 1..6) + logistic regression (scikit-learn)       baselines.kmer_logistic
    cnn       a small dilated CNN trained from scratch                              baselines.train_cnn
    scratch   the pretrained model's EnBERT architecture, random init, full fine-tuning   (what pretraining is worth)
    full      the pretrained model, full fine-tuning
    lora      the pretrained model, LoRA adapters (peft) + head
    probe     the pretrained model frozen, a linear head

The EnBERT methods run the CLI (``python -m enigma_fast.finetune``) as a user would, in a subprocess timed from
outside (the wall time includes start-up, data, every validation and the final evaluations); the baselines run in a
subprocess of this module. Each run records test/valid MCC and accuracy, wall seconds, the 1-minute load average
before and after, the CPU and its enigma_fast capability level; results append to ``OUT/results.jsonl`` and
``OUT/table.md`` is rewritten from the newest result of every (task, method).

    python -m benchmarks.bench_finetune --model runs/tiny/final --out bench_ft            # the whole table
    python -m benchmarks.bench_finetune --model runs/tiny/final --out bench_ft --tasks frame --methods full,lora
    pytest benchmarks/bench_finetune.py --benchmark-disable                               # smoke (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import cpu_model

TASKS = ("coding", "frame", "coding-per-base")
METHODS = ("kmer-lr", "cnn", "scratch", "full", "lora", "probe")
ENBERT = {"scratch": ["--random-init"], "full": [], "lora": ["--mode", "lora"], "probe": ["--mode", "probe"]}
ROOT = Path(__file__).resolve().parents[1]


def _task_type(task: str) -> str:
    from enigma_fast.finetune.benchmark import TASK_TYPES

    return TASK_TYPES[task]


def _limit(data: Path, task: str, out: Path, limit: int) -> Path:
    """Copies of the task's files holding their first ``limit`` training and ``limit // 2`` validation and test
    records (the smoke case)."""
    dst = out / f"data-{limit}" / task
    dst.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        lines = (data / task / f"{split}.csv").read_text().splitlines(keepends=True)
        keep = limit if split == "train" else max(1, limit // 2)
        (dst / f"{split}.csv").write_text("".join(lines[: keep + 1]))
    return dst


def enbert_args(method: str, task: str, files: Path, model: str, out: Path, budget: float, max_steps: int) -> list[str]:
    """The ``python -m enigma_fast.finetune`` arguments of an EnBERT method."""
    args = ["--model", model, "--task", _task_type(task), "--out", str(out), "--no-progress"]
    for split in ("train", "valid", "test"):
        args += [f"--{split}", str(files / f"{split}.csv")]
    if budget:
        args += ["--time-budget", str(budget), "--max-time", str(budget + 60)]
    if max_steps:
        args += ["--max-steps", str(max_steps)]
    return args + ENBERT[method]


def run_baseline(method: str, task: str, files: Path, budget: float, max_steps: int = 0, **kmer: Any) -> dict[str, Any]:
    """One baseline run in this process; the result dict (valid/test metrics and the method's own figures)."""
    from enigma_fast.finetune import baselines, read_labelled

    tr, va, te = (read_labelled(files / f"{s}.csv") for s in ("train", "valid", "test"))
    if method == "kmer-lr":
        return baselines.kmer_logistic(tr, va, te, _task_type(task), **kmer)
    epochs = 30.0 if not max_steps else max_steps / max(1, -(-len(tr) // 64))
    return baselines.train_cnn(tr, va, te, _task_type(task), time_budget=budget, epochs=epochs)


def run_one(
    method: str,
    task: str,
    data: Path,
    model: str,
    out: Path,
    *,
    budget: float = 450.0,
    max_steps: int = 0,
    limit: int = 0,
    subprocess_run: bool = True,
    kmer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``method`` on ``task`` into ``out/runs/TASK/METHOD`` and return its record (see the module doc). ``limit``
    cuts the files (``_limit``), ``max_steps`` the EnBERT runs, ``kmer`` overrides keyword arguments of
    ``kmer_logistic``; ``subprocess_run=False`` runs everything in this process (the smoke case)."""
    import enigma_fast

    files = _limit(data, task, out, limit) if limit else data / task
    run_dir = out / "runs" / task / method
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # a run of this benchmark's own (results.jsonl keeps every figure)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if method in ENBERT:
        argv = enbert_args(method, task, files, model, run_dir, budget, max_steps)
        if subprocess_run:
            proc = subprocess.run(
                [sys.executable, "-m", "enigma_fast.finetune", *argv], env=env, capture_output=True, text=True
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{method} on {task} failed: {proc.stderr.strip().splitlines()[-1:]}")
        else:
            from enigma_fast.cli.finetune import main

            if main(argv) != 0:
                raise RuntimeError(f"{method} on {task} failed")
        res = json.loads((run_dir / "metrics.json").read_text())
    else:
        if subprocess_run:
            run_dir.mkdir()
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.bench_finetune",
                "--one",
                method,
                "--task",
                task,
                "--files",
                str(files),
            ]
            cmd += ["--time-budget", str(budget), "--out", str(run_dir)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{method} on {task} failed: {proc.stderr.strip().splitlines()[-3:]}")
            res = json.loads((run_dir / "result.json").read_text())
        else:
            res = run_baseline(method, task, files, budget, max_steps, **(kmer or {}))
    wall = time.perf_counter() - t0
    test, valid = res["test"], res["valid"]
    return {
        "task": task,
        "method": method,
        "test_mcc": test["mcc"],
        "test_accuracy": test["accuracy"],
        "test_f1": test["f1"],
        "test_auroc": test["auroc"],
        "valid_mcc": valid["mcc"],
        "steps": res.get("steps"),
        "best_step": res.get("best_step"),
        "wall_s": round(wall, 1),
        "load_before": round(load0, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "level": enigma_fast.get_cpu_capability(),
        "dtype": res.get("dtype", "float32"),
        "budget_s": budget,
        "limit": limit,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: test MCC / accuracy (wall minutes, load) of each method on each task, from the newest records."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        newest[(r["task"], r["method"])] = r
    tasks = [t for t in TASKS if any(k[0] == t for k in newest)]
    lines = ["| method | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for m in METHODS:
        cells = []
        for t in tasks:
            r = newest.get((t, m))
            cells.append(
                ""
                if r is None
                else f"{r['test_mcc']:.3f} / {r['test_accuracy']:.3f} ({r['wall_s'] / 60:.1f} min, "
                f"load {r['load_before']:.1f}-{r['load_after']:.1f})"
            )
        if any(cells):
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    some = next(iter(newest.values()), None)
    if some is not None:
        lines.append("")
        lines.append(
            f"test MCC / accuracy (wall time of the whole run, 1-minute load average before-after); {some['cpu']}, "
            f"{some['cores']} cores, enigma_fast level {some['level']}"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------
# smoke case (CI): every method on every task, tiny data, a tiny model, two steps
# ------------------------------------------------------------------------------------------------------------
def test_finetune_benchmark_smoke(tmp_path: Path) -> None:
    pytest.importorskip("pyrodigal")
    pytest.importorskip("sklearn")
    pytest.importorskip("peft")
    import torch

    from enigma_fast.finetune.benchmark import build_benchmark, read_genome
    from enigma_fast.models import EnBERT, EnBERTConfig
    from enigma_fast.tokenizers import CharTokenizer

    tok = CharTokenizer(case="upper")
    torch.manual_seed(123)
    model = EnBERT(EnBERTConfig.from_preset("tiny", vocab_size=tok.vocab_size, d_model=16, n_head=2, n_layer=1))
    model.save_pretrained(tmp_path / "pre", tok)
    names, seqs = read_genome()
    (tmp_path / "part.fa").write_text(f">{names[0]}\n{seqs[0][:300_000]}\n")  # a 300-kb piece: genes called fast
    build_benchmark(tmp_path / "data", tmp_path / "part.fa", frame_counts={"train": 24, "valid": 12, "test": 12})
    results = []
    torch.set_num_threads(1)
    for task in TASKS:
        for method in METHODS:
            results.append(
                run_one(
                    method,
                    task,
                    tmp_path / "data",
                    str(tmp_path / "pre"),
                    tmp_path,
                    budget=0,
                    max_steps=2,
                    limit=16,
                    subprocess_run=False,
                    kmer={"kmax": 3, "max_train_bases": 2000},
                )
            )
    assert len(results) == len(TASKS) * len(METHODS)
    assert all(-1.0 <= r["test_mcc"] <= 1.0 for r in results)
    text = table(results)
    assert all(m in text for m in METHODS) and text.count("\n") == len(METHODS) + 4


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="the pretrained model folder (e.g. the default run's RUN/final)")
    p.add_argument("--out", required=True, help="benchmark folder: data/, runs/, results.jsonl, table.md")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--time-budget", type=float, default=450.0, help="seconds of training per run (default 450)")
    p.add_argument("--table-only", action="store_true", help="rewrite table.md from results.jsonl")
    p.add_argument("--one", choices=["kmer-lr", "cnn"], help=argparse.SUPPRESS)
    p.add_argument("--task", help=argparse.SUPPRESS)
    p.add_argument("--files", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.one:  # a baseline in its own process (run_one starts it)
        res = run_baseline(args.one, args.task, Path(args.files), args.time_budget)
        (out / "result.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    if not args.table_only:
        if not args.model:
            p.error("--model is needed to run the benchmark")
        if not (out / "data" / "benchmark.json").is_file():
            from enigma_fast.finetune.benchmark import build_benchmark

            build_benchmark(out / "data")
        for task in args.tasks.split(","):
            for method in args.methods.split(","):
                r = run_one(method, task, out / "data", args.model, out, budget=args.time_budget)
                with open(log, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(json.dumps(r), flush=True)
    results = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    (out / "table.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
