"""Shared benchmark harness: providers side by side, interleaved rounds, medians, GB/s, device name.

Noisy machines make single timings meaningless, so every comparison here runs all providers of one case in
interleaved rounds (A B C A B C ...) and reports each provider's median and its ratio to a peer measured in
the same run. Used two ways:

* from pytest-benchmark tests (``benchmarks/test_*.py``): ``bench(benchmark, fn)`` times one provider;
  under ``--benchmark-disable`` it runs the function once (a smoke test, so no benchmark rots);
* from the command line (``python -m benchmarks.<suite>``), ``compare`` prints markdown tables for
  docs/benchmarks.md.

CPU figures depend on the instruction-set level the kernels run at: ``--cpu-capability LEVEL|all`` (see
``add_cpu_capability_argument``) re-runs a suite in one fresh process per level, with enigma_fast capped by
``ENIGMA_FAST_CPU_CAPABILITY`` and torch's peers by ``ATEN_CPU_CAPABILITY`` at the same level.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "Case",
    "add_cpu_capability_argument",
    "bench",
    "compare",
    "cpu_model",
    "device_name",
    "format_table",
    "run_at_cpu_levels",
    "sync",
]

CPU_LEVELS = ("default", "avx2", "avx512")


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work on ``device`` (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def device_name(device: torch.device | str) -> str:
    """Human-readable device: the GPU name, or the CPU model with the thread count torch uses and the instruction-set
    levels enigma_fast's kernels and torch's run at."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import enigma_fast

    ours = enigma_fast.get_cpu_capability() or "no compiled kernels"
    best = enigma_fast.supported_cpu_capabilities()[-1]
    theirs = torch.backends.cpu.get_cpu_capability()
    return f"{cpu_model()}, {torch.get_num_threads()} threads, level {ours} (CPU best {best}; torch {theirs})"


def add_cpu_capability_argument(parser: argparse.ArgumentParser) -> None:
    """``--cpu-capability LEVEL|all``: run the suite at that instruction-set level (or at each the CPU has)."""
    parser.add_argument(
        "--cpu-capability",
        default=None,
        metavar="LEVEL",
        help="CPU instruction-set level: default, avx2, avx512, or all (every level this CPU runs, lowest first); "
        "each level runs in a fresh process with ENIGMA_FAST_CPU_CAPABILITY and ATEN_CPU_CAPABILITY set to it",
    )


def run_at_cpu_levels(args: argparse.Namespace, module: str, argv: Sequence[str]) -> int | None:
    """Re-run ``python -m module argv`` once per level asked by ``--cpu-capability`` in a fresh process whose
    environment caps enigma_fast and torch at that level; returns the worst exit status, or None when this process
    is already the one to measure (no option, or the environment already holds the level)."""
    want = args.cpu_capability
    if want is None:
        return None
    import enigma_fast

    have = enigma_fast.supported_cpu_capabilities()
    levels = have if want == "all" else [want]
    for level in levels:
        if level not in CPU_LEVELS:
            raise SystemExit(f"--cpu-capability must be one of {', '.join(CPU_LEVELS)} or all, got {level!r}")
        if level not in have:
            raise SystemExit(f"--cpu-capability {level}: this CPU runs {', '.join(have)} only")
    env_level = os.environ.get("ENIGMA_FAST_CPU_CAPABILITY")
    if len(levels) == 1 and env_level == levels[0] and os.environ.get("ATEN_CPU_CAPABILITY") == levels[0]:
        return None
    rest: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--cpu-capability":
            skip = True
            continue
        if a.startswith("--cpu-capability="):
            continue
        rest.append(a)
    status = 0
    for level in levels:
        env = {**os.environ, "ENIGMA_FAST_CPU_CAPABILITY": level, "ATEN_CPU_CAPABILITY": level}
        print(f"\n## CPU level {level} ({cpu_model()})\n", flush=True)
        res = subprocess.run([sys.executable, "-m", module, *rest, "--cpu-capability", level], env=env)
        status = max(status, res.returncode)
    return status


@dataclass
class Case:
    """One benchmark case: providers name -> zero-argument callable, plus bytes moved for GB/s (0 = none)."""

    name: str
    providers: dict[str, Callable[[], object]]
    bytes_moved: int = 0
    device: str = "cpu"
    medians_s: dict[str, float] = field(default_factory=dict)


def _time_once(fn: Callable[[], object], device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def compare(case: Case, rounds: int = 15, warmup: int = 2, min_time_s: float = 0.0) -> Case:
    """Time every provider of ``case`` in interleaved rounds; fill ``case.medians_s`` and return the case.

    Each round calls every provider once, in an order rotated by the round index, so that slow drifts of the
    machine hit all providers alike. Rounds continue past ``rounds`` until ``min_time_s`` has elapsed.
    """
    names = list(case.providers)
    for _ in range(warmup):
        for n in names:
            case.providers[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    r = 0
    while r < rounds or time.perf_counter() - start < min_time_s:
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            samples[n].append(_time_once(case.providers[n], case.device))
        r += 1
    case.medians_s = {n: statistics.median(v) for n, v in samples.items()}
    return case


def format_table(cases: Sequence[Case], peer: str, title: str = "") -> str:
    """Markdown table: one row per case and provider with median ms, GB/s and speed-up over ``peer``."""
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += ["| case | provider | median ms | GB/s | speed-up vs " + peer + " |", "|---|---|---:|---:|---:|"]
    for c in cases:
        base = c.medians_s.get(peer)
        for n, t in c.medians_s.items():
            gbs = f"{c.bytes_moved / t / 1e9:.1f}" if c.bytes_moved else "-"
            ratio = f"{base / t:.2f}x" if base else "-"
            lines.append(f"| {c.name} | {n} | {t * 1e3:.3f} | {gbs} | {ratio} |")
    return "\n".join(lines)


def bench(benchmark, fn: Callable[[], object], device: str = "cpu", bytes_moved: int = 0, rounds: int = 10):
    """Time ``fn`` with pytest-benchmark (GB/s into extra_info); with --benchmark-disable, run it once."""

    def run():
        out = fn()
        sync(device)
        return out

    benchmark.extra_info["device"] = device_name(device)
    result = benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if bytes_moved and stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["GB/s"] = bytes_moved / stats.stats.median / 1e9
    return result
