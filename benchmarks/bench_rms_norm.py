"""RMSNorm benchmarks: forward and forward+backward, providers side by side.

Providers: ``eager`` (the float32 composite x.float().pow(2).mean ...), ``F.rms_norm`` (torch's own),
``compiled`` (torch.compile of the eager composite) and ``enigma_fast``; on CUDA also ``copy`` (a plain
device-to-device copy of the same bytes: the bandwidth ceiling a forward can reach).

    pytest benchmarks/bench_rms_norm.py                      # pytest-benchmark, one provider per test
    python -m benchmarks.bench_rms_norm --device cpu --threads 2   # interleaved medians + the bars, markdown
    python -m benchmarks.bench_rms_norm --cpu-capability all       # the same at every CPU instruction-set level
"""

from __future__ import annotations

import argparse
import sys

import pytest
import torch
import torch.nn.functional as F

from benchmarks.harness import (
    Case,
    add_cpu_capability_argument,
    bench,
    compare,
    device_name,
    format_table,
    run_at_cpu_levels,
)
from enigma_fast import ops

CPU_SHAPES = [(4096, 1024), (16384, 384)]
CUDA_SHAPES = [(16384, 4096), (16384, 384), (65536, 1024)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
EPS = 1e-6


def eager_rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The composite most code writes: float32 statistics, scale, cast back."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


_compiled = None


def compiled_rms_norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(eager_rms_norm, dynamic=False)
    return _compiled(x, w)


FORWARD = {
    "eager": eager_rms_norm,
    "F.rms_norm": lambda x, w: F.rms_norm(x, (x.shape[-1],), w, EPS),
    "compiled": compiled_rms_norm,
    "enigma_fast": lambda x, w: ops.rms_norm(x, w, EPS),
}


def make_inputs(shape, dtype, device, grad=False):
    x = torch.randn(shape, dtype=dtype, device=device, requires_grad=grad)
    w = (torch.rand(shape[-1], dtype=dtype, device=device) + 0.5).requires_grad_(grad)
    return x, w


def forward_fn(provider: str, x: torch.Tensor, w: torch.Tensor):
    if provider == "copy":  # the memory-bound peer: the same bytes moved by a plain copy
        out = torch.empty_like(x)
        return lambda: out.copy_(x)
    f = FORWARD[provider]

    def run():
        with torch.no_grad():
            return f(x, w)

    return run


def fwd_bwd_fn(provider: str, x: torch.Tensor, w: torch.Tensor):
    f = FORWARD[provider]
    dy = torch.randn_like(x)

    def run():
        y = f(x, w)
        return torch.autograd.grad(y, (x, w), dy)

    return run


def bytes_moved(shape, dtype, mode: str) -> int:
    n = shape[0] * shape[1] * torch.finfo(dtype).bits // 8
    return 2 * n if mode == "forward" else 5 * n  # fwd: x in, y out; + bwd: dy, x in, dx out


# ---------------------------------------------------------------------------------------------------------------
# pytest-benchmark
# ---------------------------------------------------------------------------------------------------------------
def _devices():
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("provider", list(FORWARD))
def test_rms_norm(benchmark, device, mode, dtype, provider):
    shape = CPU_SHAPES[0] if device == "cpu" else CUDA_SHAPES[0]
    x, w = make_inputs(shape, DTYPES[dtype], device, grad=mode != "forward")
    fn = forward_fn(provider, x, w) if mode == "forward" else fwd_bwd_fn(provider, x, w)
    benchmark.group = f"rms_norm {mode} {device} {dtype} {shape}"
    bench(benchmark, fn, device=device, bytes_moved=bytes_moved(shape, DTYPES[dtype], mode))


# ---------------------------------------------------------------------------------------------------------------
# interleaved comparison, tables and bars
# ---------------------------------------------------------------------------------------------------------------
def run_cases(device: str, rounds: int) -> tuple[list[Case], list[str]]:
    """Interleaved medians for every shape/dtype/mode; returns the cases and the bar verdicts."""
    cases, verdicts = [], []
    shapes = CPU_SHAPES if device == "cpu" else CUDA_SHAPES
    for shape in shapes:
        for dname, dtype in DTYPES.items():
            for mode in ("forward", "forward+backward"):
                grad = mode != "forward"
                x, w = make_inputs(shape, dtype, device, grad=grad)
                providers = {p: (forward_fn if not grad else fwd_bwd_fn)(p, x, w) for p in FORWARD}
                if device == "cuda" and not grad:
                    providers["copy"] = forward_fn("copy", x, w)
                case = compare(
                    Case(f"{mode} {dname} {shape}", providers, bytes_moved(shape, dtype, mode), device), rounds=rounds
                )
                cases.append(case)
                m = case.medians_s
                ours = m["enigma_fast"]
                if device == "cpu":
                    best = min(m["eager"], m["F.rms_norm"])
                    what = "forward" if mode == "forward" else "fwd+bwd"
                    verdicts.append(
                        _bar(f"CPU {what} {dname} {shape}: vs faster of eager/F.rms_norm", best / ours, 1.5)
                    )
                elif mode == "forward" and dname == "bfloat16" and shape == (16384, 4096):
                    verdicts.append(
                        _bar(f"CUDA forward bf16 {shape}: fraction of copy bandwidth", m["copy"] / ours, 0.8)
                    )
                    verdicts.append(_bar(f"CUDA forward bf16 {shape}: vs F.rms_norm", m["F.rms_norm"] / ours, 1.0))
    return cases, verdicts


def _bar(what: str, value: float, need: float) -> str:
    return f"{'PASS' if value >= need else 'FAIL'}  {what}: {value:.2f} (need >= {need})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--rounds", type=int, default=30)
    add_cpu_capability_argument(p)
    args = p.parse_args(argv)
    status = run_at_cpu_levels(args, "benchmarks.bench_rms_norm", argv)
    if status is not None:
        return status
    torch.set_num_threads(args.threads)
    cases, verdicts = run_cases(args.device, args.rounds)
    cmd = "python -m benchmarks.bench_rms_norm " + " ".join(argv)
    print(f"Device: {device_name(args.device)}; torch {torch.__version__}; medians of {args.rounds} interleaved rounds")
    print(f"Command: `{cmd.strip()}`\n")
    print(format_table(cases, peer="eager", title=f"RMSNorm on {args.device}"))
    print("\nBars:\n" + "\n".join(verdicts))
    return 0 if all(v.startswith("PASS") for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
