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
``ENIGMA_FAST_CPU_CAPABILITY`` and torch's peers at the same level (``PEER_CAPS``): ATen's own kernels by
``ATEN_CPU_CAPABILITY``, and the libraries torch calls for matrix products (SDPA's blocks, ``bmm``, linear layers)
by their own switches, MKL's ``MKL_ENABLE_INSTRUCTIONS`` and oneDNN's ``ONEDNN_MAX_CPU_ISA``, which
``ATEN_CPU_CAPABILITY`` does not reach. Each level's header names the instruction sets MKL and oneDNN report
under those caps (``peer_isas``), so a cap a library ignores shows.
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
    "PEER_CAPS",
    "Case",
    "add_cpu_capability_argument",
    "bench",
    "compare",
    "cpu_model",
    "device_name",
    "format_table",
    "peer_isas",
    "run_at_cpu_levels",
    "sync",
]

CPU_LEVELS = ("default", "avx2", "avx512")

# The environment that caps torch's peers at each level, set before torch loads (a fresh process per level).
# default (SSE2): MKL's lowest code path is SSE4.2 and oneDNN's SSE4.1 (128-bit vectors, no AVX, no FMA, like
# SSE2); avx2 (x86-64-v3): AVX2 + FMA; avx512 (x86-64-v4): AVX-512 F/BW/DQ/VL/CD, without the AVX-512 BF16/VNNI
# and AMX extensions (which enigma_fast's kernels do not use either). Only Intel CPUs honour MKL's switch (on AMD,
# MKL picks its code path itself: the peer's products may then run wider than the level).
PEER_CAPS = {
    "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {
        "ATEN_CPU_CAPABILITY": "avx512",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
    },
}

_ISA_PROBE = r"""
import torch
a = torch.randn(64, 64)
a @ a
b = torch.randn(64, 64, dtype=torch.bfloat16)
torch.nn.functional.linear(b, b)
"""


def peer_isas(env: dict[str, str] | None = None) -> str:
    """The instruction sets MKL and oneDNN say they run under ``env`` (default: this process's environment),
    from their verbose banners in a child process: e.g. "MKL: Intel(R) SSE4.2 enabled processors; oneDNN: Intel
    SSE4.1"."""
    env = {**(os.environ if env is None else env), "MKL_VERBOSE": "1", "ONEDNN_VERBOSE": "all"}
    try:
        res = subprocess.run(
            [sys.executable, "-c", _ISA_PROBE], env=env, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "MKL/oneDNN: not probed"
    mkl, onednn = "not reported", "not called by a bfloat16 matrix product"
    for line in (res.stdout + res.stderr).splitlines():
        if line.startswith("MKL_VERBOSE oneMKL") and " for " in line:
            mkl = line.split(" for ", 1)[1].split(", Lnx")[0].replace("Intel(R) 64 architecture ", "")
        elif ",info,cpu,isa:" in line:
            onednn = line.split(",info,cpu,isa:", 1)[1].strip()
    return f"MKL: {mkl}; oneDNN: {onednn}"


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
    libs = "; ".join(
        f"{k}={os.environ[k]}" for k in ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA") if k in os.environ
    )
    return (
        f"{cpu_model()}, {torch.get_num_threads()} threads, level {ours} (CPU best {best}; torch {theirs}"
        f"{'; ' + libs if libs else '; MKL and oneDNN uncapped'})"
    )


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
    capped = all(os.environ.get(k) == v for k, v in PEER_CAPS.get(env_level or "", {"": "?"}).items())
    if len(levels) == 1 and env_level == levels[0] and capped:
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
        env = {**os.environ, "ENIGMA_FAST_CPU_CAPABILITY": level, **PEER_CAPS[level]}
        caps = ", ".join(f"{k}={v}" for k, v in PEER_CAPS[level].items())
        print(f"\n## CPU level {level} ({cpu_model()})\n\npeers capped by {caps} ({peer_isas(env)})\n", flush=True)
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
