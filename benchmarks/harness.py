"""Shared benchmark harness: providers side by side, interleaved rounds, medians, GB/s, device name.

Noisy machines make single timings meaningless, so every comparison here runs all providers of one case in
interleaved rounds (A B C A B C ...) and reports each provider's median and its ratio to a peer measured in
the same run. Used two ways:

* from pytest-benchmark tests (``benchmarks/test_*.py``): ``bench(benchmark, fn)`` times one provider;
  under ``--benchmark-disable`` it runs the function once (a smoke test, so no benchmark rots);
* from the command line (``python -m benchmarks.<suite>``), ``compare`` prints markdown tables for
  docs/benchmarks.md.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["Case", "bench", "compare", "device_name", "format_table", "sync"]


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work on ``device`` (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device | str) -> str:
    """Human-readable device: the GPU name, or the CPU model with the thread count torch uses."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


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
