"""Benchmarks of relative-position attention: forward, backward, forward+backward and a decode step.

Providers side by side: ``reference`` (enigma_fast.reference, materialised scores), ``seed`` (the seed model's
layer: one module per head with a learned (T, T, D) table and an einsum), ``sdpa``
(torch.nn.functional.scaled_dot_product_attention without the relative term: a lower bound, since the relative
term doubles the score FLOPs) and ``enigma_fast`` (the fused kernels). Inputs are q, k, v (B, H, T, D); the
projections are not timed.

* ``pytest benchmarks/bench_attention.py [--benchmark-disable]``: small shapes, every provider and mode once.
* ``python -m benchmarks.bench_attention``: the full grid (B=4, H=12, D=32, T in 256..2048, causal, float32 and
  bfloat16) as markdown tables of interleaved medians, then the peak extra memory of forward+backward at
  B=1, H=12, T=8192, D=32 measured in a fresh subprocess (see ``peak_memory``).
* ``python -m benchmarks.bench_attention --bars --cpu-capability all``: the CPU bars at every instruction-set
  level the CPU has (B=4, H=12, T=1024, D=32, causal, float32 and bfloat16, max_rel_pos P=64 and P=1024; forward
  <= 2.5x SDPA's time, forward+backward <= 3x SDPA's, both >= 4x faster than the reference), torch's SDPA and
  the reference run at the same level (ATen, MKL and oneDNN capped alike: ``harness.PEER_CAPS``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from torch import nn

from benchmarks.harness import (
    Case,
    add_cpu_capability_argument,
    bench,
    compare,
    device_name,
    format_table,
    run_at_cpu_levels,
)
from enigma_fast import ops, reference

PROVIDERS = ["reference", "seed", "sdpa", "enigma_fast"]
MODES = ["forward", "backward", "forward+backward", "decode"]


class SeedHead(nn.Module):
    """One head of the seed's relative attention: a learned (T, T, D) table added to the scores by an einsum."""

    def __init__(self, T: int, D: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.rel = nn.Parameter(torch.randn(T, T, D, dtype=dtype) * 0.02)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        T, D = q.shape[-2], q.shape[-1]
        wei = (q @ k.transpose(-2, -1) + torch.einsum("btd,tsd->bts", q, self.rel[:T, :T])) * D**-0.5
        if causal:
            wei = wei.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        return torch.softmax(wei, dim=-1) @ v


class SeedLayer(nn.Module):
    """The seed's multi-head layer on given q, k, v: one SeedHead per head, outputs stacked."""

    def __init__(self, H: int, T: int, D: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.heads = nn.ModuleList(SeedHead(T, D, dtype) for _ in range(H))

    def forward(self, q, k, v, causal: bool) -> torch.Tensor:
        return torch.stack([h(q[:, i], k[:, i], v[:, i], causal) for i, h in enumerate(self.heads)], dim=1)


def make_case(B, H, T, D, dtype, causal=True, seed_ok=True, P=None):
    """Inputs and forward callables per provider: name -> (fn(q, k, v, rel) -> out, leaves). P: max_rel_pos
    (rel_emb holds 2P-1 offsets), default T."""
    g = torch.Generator().manual_seed(0)
    P = T if P is None else P
    q, k, v = (torch.randn(B, H, T, D, generator=g).to(dtype).requires_grad_() for _ in range(3))
    rel = (torch.randn(H, 2 * P - 1, D, generator=g) * 0.1).to(dtype).requires_grad_()
    fwd: dict[str, tuple[Callable[[], torch.Tensor], list[torch.Tensor]]] = {
        "reference": (lambda: reference.rel_attention(q, k, v, rel, causal=causal), [q, k, v, rel]),
        "sdpa": (lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal), [q, k, v]),
        "enigma_fast": (lambda: ops.rel_attention(q, k, v, rel, causal=causal), [q, k, v, rel]),
    }
    if seed_ok:
        layer = SeedLayer(H, T, D, dtype)
        fwd["seed"] = (lambda: layer(q, k, v, causal), [q, k, v, *layer.parameters()])
    return {n: fwd[n] for n in PROVIDERS if n in fwd}


def mode_fn(mode: str, fwd: Callable[[], torch.Tensor], leaves: list[torch.Tensor]) -> Callable[[], object]:
    """The timed callable of one provider in one mode (backward reuses one recorded forward graph)."""
    if mode == "forward":

        def run():
            with torch.no_grad():
                return fwd()

        return run
    if mode == "forward+backward":

        def run():
            out = fwd()
            return torch.autograd.grad(out, leaves, torch.ones_like(out))

        return run
    out = fwd()
    grad = torch.ones_like(out)
    return lambda: torch.autograd.grad(out, leaves, grad, retain_graph=True)


def decode_case(B, H, T, D, dtype) -> dict[str, Callable[[], object]]:
    """One decode step: a query token over a cache holding T - 1 tokens (the new token is appended)."""
    g = torch.Generator().manual_seed(0)
    kc, vc = (torch.randn(B, H, T, D, generator=g).to(dtype) for _ in range(2))
    q, kn, vn = (torch.randn(B, H, 1, D, generator=g).to(dtype) for _ in range(3))
    rel = (torch.randn(H, 2 * T - 1, D, generator=g) * 0.1).to(dtype)
    seqlens = torch.full((B,), T - 1, dtype=torch.int32)

    def kv(impl):
        return lambda: impl.rel_attention_with_kvcache(q, kc, vc, rel, cache_seqlens=seqlens, k_new=kn, v_new=vn)

    return {
        "reference": kv(reference),
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, kc, vc),
        "enigma_fast": kv(ops),
    }


def _bytes(B, H, T, D, dtype) -> int:
    return 4 * B * H * T * D * torch.empty((), dtype=dtype).element_size()  # q, k, v read, out written


# ---- pytest-benchmark: small shapes, so the --benchmark-disable smoke run stays fast ----
SMALL = dict(B=1, H=2, T=128, D=32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_attention(benchmark, provider, mode, dtype):
    B, H, T, D = SMALL["B"], SMALL["H"], SMALL["T"], SMALL["D"]
    if mode == "decode":
        fns = decode_case(B, H, T, D, dtype)
        if provider not in fns:
            pytest.skip("the seed layer has no KV cache")
        fn = fns[provider]
    else:
        fwd, leaves = make_case(B, H, T, D, dtype)[provider]
        fn = mode_fn(mode, fwd, leaves)
    bench(benchmark, fn, bytes_moved=_bytes(B, H, T, D, dtype))


# ---- command line: the full grid as markdown ----
PEAK_SCRIPT = r"""
import json, sys, torch
from enigma_fast import ops
B, H, T, D = 1, 12, 8192, 32
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
q, k, v = (torch.randn(B, H, T, D, requires_grad=True) for _ in range(3))
rel = torch.randn(H, 2 * T - 1, D, requires_grad=True)
dout = torch.randn(B, H, T, D)
small = [t.detach()[:, :, :256].clone().requires_grad_() for t in (q, k, v)]  # warm-up: threads, code paths
ops.rel_attention(*small, rel[:, T - 256 : T + 255].detach().requires_grad_(), causal=True).sum().backward()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
base = status("VmRSS")
out = ops.rel_attention(q, k, v, rel, causal=True)
out.backward(dout)
peak = status("VmHWM")
kept = sum(t.numel() * t.element_size() for t in (out, q.grad, k.grad, v.grad, rel.grad))
print(json.dumps({"base": base, "peak": peak, "outputs_and_grads": kept}))
"""


def peak_memory() -> dict[str, int]:
    """Extra peak memory of forward+backward at B=1, H=12, T=8192, D=32, float32, causal, with rel_emb.

    Measured in a fresh Python process from the kernel's point of view of the OS: the peak resident set size
    (VmHWM, reset through /proc/self/clear_refs after inputs are allocated and a small warm-up ran) minus the
    resident size before the call, minus the bytes of the output and the four gradients the call returns. Large
    buffers are mmap-backed, so freed work memory leaves the RSS and this is the op's transient working set.
    """
    res = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, check=True, env={**os.environ}
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def bars(rounds: int, dtypes: list[str], Ps: list[int]) -> list[str]:
    """The CPU bars at B=4, H=12, T=1024, D=32, causal: tables per case and one PASS/FAIL line per bar."""
    B, H, T, D = 4, 12, 1024, 32
    verdicts = []
    for dt_name in dtypes:
        dtype = getattr(torch, dt_name)
        for P in Ps:
            cases = []
            for mode in ("forward", "forward+backward"):
                fwds = make_case(B, H, T, D, dtype, seed_ok=False, P=P)
                providers = {n: mode_fn(mode, f, leaves) for n, (f, leaves) in fwds.items()}
                cases.append(compare(Case(mode, providers), rounds=rounds, warmup=1))
            print()
            print(format_table(cases, peer="reference", title=f"{dt_name}, causal, B={B}, H={H}, T={T}, D={D}, P={P}"))
            fwd, fb = (c.medians_s for c in cases)
            tag = f"{dt_name} P={P}"
            verdicts += [
                _verdict(f"forward {tag}: time / SDPA's time", fwd["enigma_fast"] / fwd["sdpa"], 2.5, upper=True),
                _verdict(f"fwd+bwd {tag}: time / SDPA's fwd+bwd time", fb["enigma_fast"] / fb["sdpa"], 3.0, upper=True),
                _verdict(f"forward {tag}: speed-up vs reference", fwd["reference"] / fwd["enigma_fast"], 4.0),
                _verdict(f"fwd+bwd {tag}: speed-up vs reference", fb["reference"] / fb["enigma_fast"], 4.0),
            ]
    return verdicts


def _verdict(what: str, value: float, bar: float, upper: bool = False) -> str:
    ok = value <= bar if upper else value >= bar
    return f"{'PASS' if ok else 'FAIL'}  {what}: {value:.2f} (need {'<=' if upper else '>='} {bar})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--max-rel-pos", type=int, nargs="+", default=None, help="P values (default: P = T)")
    ap.add_argument("--seed-max-t", type=int, default=1024, help="largest T for the seed layer (its tables: H*T*T*D)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--bars", action="store_true", help="only the CPU bar cases (T=1024, P=64 and 1024)")
    add_cpu_capability_argument(ap)
    args = ap.parse_args(argv)
    status = run_at_cpu_levels(args, "benchmarks.bench_attention", argv)
    if status is not None:
        return status
    torch.set_num_threads(args.threads)
    B, H, D = 4, 12, 32
    print(f"device: {device_name('cpu')}; torch {torch.__version__}")
    print(f"command: python -m benchmarks.bench_attention {' '.join(argv)}".rstrip())
    if args.bars:
        verdicts = bars(args.rounds, args.dtype, args.max_rel_pos or [64, 1024])
        print("\nBars:\n" + "\n".join(verdicts))
        return 0 if all(v.startswith("PASS") for v in verdicts) else 1
    for dt_name in args.dtype:
        dtype = getattr(torch, dt_name)
        for P in args.max_rel_pos or [None]:
            for mode in args.modes:
                cases = []
                for T in args.T:
                    if mode == "decode":
                        providers = decode_case(B, H, T, D, dtype)
                    else:
                        fwds = make_case(B, H, T, D, dtype, seed_ok=T <= args.seed_max_t, P=P)
                        providers = {n: mode_fn(mode, f, leaves) for n, (f, leaves) in fwds.items()}
                    # Attention is compute-bound: GB/s says little here, so the table shows times and ratios only.
                    case = Case(f"T={T}", providers)
                    cases.append(compare(case, rounds=args.rounds, warmup=1))
                title = f"{mode}, {dt_name}, causal, B={B}, H={H}, D={D}, P={'T' if P is None else P}"
                print()
                print(format_table(cases, peer="reference", title=title))
                print()
                print("| case | enigma_fast vs reference | vs seed | time / sdpa time |")
                print("|---|---:|---:|---:|")
                for c in cases:
                    m = c.medians_s
                    ef = m["enigma_fast"]
                    seed = f"{m['seed'] / ef:.2f}x faster" if "seed" in m else "-"
                    print(f"| {c.name} | {m['reference'] / ef:.2f}x faster | {seed} | {ef / m['sdpa']:.2f} |")
    if not args.no_memory:
        r = peak_memory()
        extra = r["peak"] - r["base"] - r["outputs_and_grads"]
        print()
        print("### peak memory, forward+backward, float32, causal, B=1, H=12, T=8192, D=32")
        print()
        print(
            f"extra peak RSS beyond inputs, output and gradients: {extra / 2**20:.1f} MiB "
            f"(peak RSS rise {(r['peak'] - r['base']) / 2**20:.1f} MiB, of which output + gradients "
            f"{r['outputs_and_grads'] / 2**20:.1f} MiB); the reference's (T x T) float32 scores alone would take "
            f"{12 * 8192 * 8192 * 4 / 2**30:.1f} GiB per materialised tensor"
        )
    return 0


if __name__ == "__main__":
    torch.manual_seed(0)
    raise SystemExit(main())
