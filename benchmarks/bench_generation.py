"""Generation and training-step benchmarks: KV-cached sampling against the seed-style recompute loop, and a
training step on the fused ops against the same step on the reference ops.

Providers:
  * ``seed-style``: greedy loop that runs the whole prefix through the model for every new token, on the
    reference ops (what the seed's generator does);
  * ``cached``: enigma_fast's KV-cached generator (prefill + one decode step per token), eager;
  * ``cached+compiled``: the same with the decode step through torch.compile.

    pytest benchmarks/bench_generation.py --benchmark-disable           # smoke
    python -m benchmarks.bench_generation --preset tiny --batch 1 --prompt 256 --new 512   # the bar
    python -m benchmarks.bench_generation --train --preset 47m --batch 8 --seq 512
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import pytest
import torch

from benchmarks.harness import Case, compare, device_name, format_table
from enigma_fast import _extension
from enigma_fast.generation import generate
from enigma_fast.models import EnBERT, EnBERTConfig

VOCAB = 16


def make_model(preset: str, device: str = "cpu", **overrides) -> EnBERT:
    torch.manual_seed(0)
    cfg = EnBERTConfig.from_preset(preset, vocab_size=VOCAB, **overrides)
    return EnBERT(cfg).to(device).eval()


@torch.inference_mode()
def seed_style_generate(model: EnBERT, idx: torch.Tensor, n: int) -> torch.Tensor:
    """Recompute the whole prefix for every new token, on the reference ops (greedy)."""
    with _extension.force_reference():
        for _ in range(n):
            logits, _ = model(idx)
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def generation_providers(model: EnBERT, idx: torch.Tensor, n: int, with_seed: bool = True) -> dict:
    providers = {
        "cached": lambda: generate(model, idx, n, temperature=0.0),
        "cached+compiled": lambda: generate(model, idx, n, temperature=0.0, compile=True),
    }
    if with_seed:
        providers = {"seed-style": lambda: seed_style_generate(model, idx, n), **providers}
    return providers


def train_step_fn(model: EnBERT, idx: torch.Tensor, reference: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with _extension.force_reference() if reference else contextlib.nullcontext():
            _, loss = model(idx[:, :-1], idx[:, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return loss

    return step


# ---- pytest-benchmark (small sizes: a smoke test under --benchmark-disable) ------------------------------------
@pytest.mark.parametrize("provider", ["seed-style", "cached", "cached+compiled"])
def test_generation_tiny(benchmark, provider):
    model = make_model("tiny", d_model=64, n_layer=2)
    idx = torch.randint(0, VOCAB, (1, 32))
    fn = generation_providers(model, idx, 16)[provider]
    benchmark.group = "generation tiny b1 p32 n16"
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("ops", ["fused", "reference"])
def test_train_step_tiny(benchmark, ops):
    model = make_model("tiny").train()
    idx = torch.randint(0, VOCAB, (2, 129))
    benchmark.group = "train step tiny b2 t128"
    benchmark.pedantic(train_step_fn(model, idx, ops == "reference"), rounds=3, warmup_rounds=1)


def test_cached_and_seed_style_agree():
    model = make_model("tiny", d_model=64, n_layer=2)
    idx = torch.randint(0, VOCAB, (2, 20))
    assert torch.equal(seed_style_generate(model, idx, 12), generate(model, idx, 12, temperature=0.0))


# ---- command line ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt", type=int, default=256)
    p.add_argument("--new", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-seed-style", action="store_true", help="skip the (slow) recompute loop")
    p.add_argument("--train", action="store_true", help="time a training step, fused vs reference ops")
    p.add_argument("--seq", type=int, default=512)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cmd = "python -m benchmarks.bench_generation " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"Device: {device_name(args.device)}; torch {torch.__version__}; medians of {args.rounds} interleaved rounds")
    print(f"Command: `{cmd.strip()}`\n")
    if args.train:
        model = make_model(args.preset, args.device, block_size=max(args.seq + 1, 1024)).train()
        print(f"{args.preset}: {model.num_parameters() / 1e6:.1f}M parameters")
        idx = torch.randint(0, VOCAB, (args.batch, args.seq + 1), device=args.device)
        case = Case(
            f"train step {args.preset} b{args.batch} t{args.seq}",
            {"reference ops": train_step_fn(model, idx, True), "fused ops": train_step_fn(model, idx, False)},
            device=args.device,
        )
        compare(case, rounds=args.rounds, warmup=1)
        print(format_table([case], peer="reference ops"))
        ratio = case.medians_s["reference ops"] / case.medians_s["fused ops"]
        tok_s = args.batch * args.seq / case.medians_s["fused ops"]
        print(f"\nfused speed-up {ratio:.2f}x; {tok_s:.0f} training tokens/s on the fused ops")
        return 0
    model = make_model(args.preset, args.device, block_size=max(1024, args.prompt + args.new))
    idx = torch.randint(0, VOCAB, (args.batch, args.prompt), device=args.device)
    providers = generation_providers(model, idx, args.new, with_seed=not args.no_seed_style)
    outs = {name: fn() for name, fn in providers.items()}  # also the warm-up (compiles)
    same = all(torch.equal(o, outs["cached"]) for o in outs.values())
    case = compare(
        Case(f"{args.preset} b{args.batch} p{args.prompt} n{args.new}", providers, device=args.device),
        rounds=args.rounds,
        warmup=0,
    )
    print(format_table([case], peer="seed-style" if not args.no_seed_style else "cached"))
    print()
    for name, t in case.medians_s.items():
        print(f"{name}: {args.batch * args.new / t:.1f} tokens/s")
    print(f"same tokens (greedy) across providers: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
