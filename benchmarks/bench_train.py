"""Training throughput (bases/s) of the trainer's step: random windows of the shipped genome, forward, backward,
clipping and fused AdamW, on the fused ops against the same step on the reference ops.

    pytest benchmarks/bench_train.py --benchmark-disable                           # smoke (each case once)
    python -m benchmarks.bench_train --preset tiny --batch 16 --window 256          # the default recipe
    python -m benchmarks.bench_train --preset 47m --batch 8 --window 512 --rounds 3
    python -m benchmarks.bench_train --preset tiny --batch 8 --window 256 --bf16   # + the step under bf16 autocast
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import numpy as np
import pytest
import torch

from benchmarks.harness import (
    Case,
    add_cpu_capability_argument,
    bench,
    compare,
    device_name,
    format_table,
    run_at_cpu_levels,
)
from enigma_fast import _extension
from enigma_fast.data import shipped_genome
from enigma_fast.data.windows import WindowSampler
from enigma_fast.models import EnBERT, EnBERTConfig
from enigma_fast.tokenizers import CharTokenizer

_TOKENS: np.ndarray | None = None


def genome_tokens() -> np.ndarray:
    """The shipped genome as single-base ids (uint8), read once."""
    global _TOKENS
    if _TOKENS is None:
        _TOKENS = CharTokenizer().encode_tensor(shipped_genome()).numpy().astype(np.uint8)
    return _TOKENS


def make_step(
    preset: str, batch: int, window: int, reference: bool, device: str = "cpu", bf16: bool = False, **overrides
):
    """A zero-argument training step (the trainer's recipe: AdamW fused where available, clip 1.0) on random
    genome windows, the forward under bfloat16 autocast when ``bf16`` (as ``--dtype bfloat16``); returns (step,
    bases per call)."""
    torch.manual_seed(0)
    tok = CharTokenizer()
    cfg = EnBERTConfig.from_preset(preset, vocab_size=tok.vocab_size, **overrides)
    model = EnBERT(cfg).to(device).train()
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = genome_tokens()
    sampler = WindowSampler(tokens, np.array([[0, len(tokens)]]), window + 1, seed=0)
    state = {"step": 0}

    def step():
        rows, _ = sampler.batch(state["step"], batch)
        state["step"] += 1
        x = torch.from_numpy(rows).to(device)
        amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with _extension.force_reference() if reference else contextlib.nullcontext():
            with amp:
                _, loss = model(x[:, :-1], x[:, 1:])
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step, batch * window


# ---- pytest-benchmark (small shapes: a smoke test under --benchmark-disable) -------------------------------------
@pytest.mark.parametrize("ops", ["fused", "reference", "fused-bf16"])
@pytest.mark.parametrize("preset", ["tiny", "47m"])
def test_train_throughput(benchmark, preset, ops):
    # the 47m width with one layer keeps the smoke run short; the command line times the whole model
    batch, window, over = (4, 64, {}) if preset == "tiny" else (1, 32, {"n_layer": 1})
    step, bases = make_step(preset, batch, window, ops == "reference", bf16=ops == "fused-bf16", **over)
    benchmark.group = f"train step {preset}{' (1 layer)' if over else ''} b{batch} w{window}"
    benchmark.extra_info["bases_per_call"] = bases
    loss = bench(benchmark, step, rounds=3)
    assert torch.isfinite(loss)


# ---- command line ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--bar", type=float, default=None, help="exit 1 unless fused ops are at least this much faster")
    p.add_argument("--bf16", action="store_true", help="also time the fused step under bfloat16 autocast")
    add_cpu_capability_argument(p)
    args = p.parse_args(argv)
    status = run_at_cpu_levels(args, "benchmarks.bench_train", argv)
    if status is not None:
        return status
    torch.set_num_threads(args.threads)
    cmd = "python -m benchmarks.bench_train " + " ".join(argv)
    print(f"Device: {device_name(args.device)}; torch {torch.__version__}; medians of {args.rounds} interleaved rounds")
    print(f"Command: `{cmd.strip()}`\n")
    over = {"block_size": max(args.window, 1024)}
    ref, bases = make_step(args.preset, args.batch, args.window, True, args.device, **over)
    fused, _ = make_step(args.preset, args.batch, args.window, False, args.device, **over)
    providers = {"reference ops": ref, "fused ops": fused}
    if args.bf16:
        providers["fused ops, bf16 autocast"] = make_step(
            args.preset, args.batch, args.window, False, args.device, bf16=True, **over
        )[0]
    case = compare(
        Case(f"train step {args.preset} b{args.batch} w{args.window}", providers, device=args.device),
        rounds=args.rounds,
        warmup=1,
    )
    print(format_table([case], peer="reference ops"))
    print()
    for name, t in case.medians_s.items():
        print(f"{name}: {bases / t:,.0f} bases/s")
    if args.bf16:
        ratio = case.medians_s["fused ops"] / case.medians_s["fused ops, bf16 autocast"]
        print(f"bf16 autocast: {ratio:.2f}x the float32 fused step")
    speedup = case.medians_s["reference ops"] / case.medians_s["fused ops"]
    if args.bar is not None:
        ok = speedup >= args.bar
        print(
            f"\n{'PASS' if ok else 'FAIL'}  train step {args.preset} b{args.batch} w{args.window}: fused ops "
            f"{speedup:.2f}x the reference ops (need >= {args.bar})"
        )
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
