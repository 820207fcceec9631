"""Decode benchmarks: new tokens/s of generation on the module path, the whole-step path and the torch.compile'd
module step, beside transformers' GPT-2 of the same width, depth, FFN width and vocabulary, and beside the
arithmetic and memory-bandwidth limits of the model on this machine.

Providers (greedy, the same prompt, interleaved rounds, medians):
  * ``module``: the generator with ``decode_path="module"`` (each decode step op by op through the modules, what
    the generator ran before the whole-step path);
  * ``whole-step``: ``decode_path="whole_step"`` (one ``enigma_fast.ops.decode_step`` call per token);
  * ``compiled``: the module path's decode step through ``torch.compile`` (``compile=True``);
  * ``gpt2``: ``transformers.GPT2LMHeadModel`` (random init) ``generate(do_sample=False)``, ``min_new_tokens`` = new.

Limits per token: weight bytes (every weight a step reads, read once per step for the whole batch) divided by the
copy bandwidth measured at the size of the weights (bytes read + written per second, STREAM's convention), and
FLOPs (2 per weight multiply-add plus the attention over the average context) divided by torch's float32 GEMM rate
on a 1024-cube (MKL/oneDNN choose their own instruction set; ``--cpu-capability`` caps enigma_fast's and ATen's).

    pytest benchmarks/bench_decode.py --benchmark-disable          # smoke (includes the GPT-2 peer)
    python -m benchmarks.bench_decode --preset tiny --batch 1 16 --prompt 256 --new 512 --cpu-capability all
    python -m benchmarks.bench_decode --preset 47m --batch 1 16 --prompt 256 --new 64 --cpu-capability all
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import pytest
import torch

from benchmarks.harness import (
    Case,
    add_cpu_capability_argument,
    compare,
    device_name,
    run_at_cpu_levels,
    sync,
)
from enigma_fast.generation import generate, timed_generate
from enigma_fast.models import EnBERT, EnBERTConfig

VOCAB = 16


def make_model(preset: str, device: str = "cpu", **overrides) -> EnBERT:
    torch.manual_seed(0)
    return EnBERT(EnBERTConfig.from_preset(preset, vocab_size=VOCAB, **overrides)).to(device).eval()


def gpt2_peer(model: EnBERT):
    """A randomly initialised GPT-2 of the model's width, depth, heads, FFN width, vocabulary and length, or None
    without transformers."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    c = model.config
    cfg = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.d_model,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=c.ffn_mult * c.d_model,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    peer = GPT2LMHeadModel(cfg).to(model.tok_emb.weight.device).eval()
    return peer


@torch.inference_mode()
def gpt2_generate(peer, idx: torch.Tensor, n: int) -> torch.Tensor:
    return peer.generate(
        input_ids=idx,
        attention_mask=torch.ones_like(idx),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        pad_token_id=0,
    )


def providers(model: EnBERT, idx: torch.Tensor, n: int, peer=None, compiled: bool = True) -> dict:
    out = {
        "module": lambda: generate(model, idx, n, temperature=0.0, decode_path="module"),
        "whole-step": lambda: generate(model, idx, n, temperature=0.0, decode_path="whole_step"),
    }
    if compiled:
        out["compiled"] = lambda: generate(model, idx, n, temperature=0.0, compile=True)
    if peer is not None:
        out["gpt2"] = lambda: gpt2_generate(peer, idx, n)
    return out


# ---- limits --------------------------------------------------------------------------------------------------
def step_weights(model: EnBERT) -> tuple[int, int]:
    """(weight elements a decode step reads, multiply-adds per token in the projections)."""
    c = model.config
    d, F = c.d_model, c.ffn_mult * c.d_model
    macs_layer = 4 * d * d + 2 * d * F
    per_layer = macs_layer + (4 * d + F) * c.bias + 2 * d + c.max_rel_pos * d  # + biases, norms, causal rel_emb
    macs = c.n_layer * macs_layer + c.vocab_size * d
    return c.n_layer * per_layer + c.vocab_size * d + 2 * d, macs


def flops_per_token(model: EnBERT, context: float) -> float:
    """Projections and head (2 per multiply-add) plus attention over ``context`` keys (scores with the relative
    term, and the weighted sum of values): 4 d per key per layer, and the relative term's 2 P d."""
    c = model.config
    _, macs = step_weights(model)
    return 2.0 * macs + c.n_layer * (4.0 * context * c.d_model + 2.0 * c.max_rel_pos * c.d_model)


def _median_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_rate(device: str) -> float:
    """torch's float32 GEMM rate (FLOP/s), 1024-cube."""
    a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)
    c = torch.empty(1024, 1024, device=device)

    def run():
        torch.mm(a, b, out=c)
        sync(device)

    return 2 * 1024**3 / _median_time(run, 10)


def copy_bandwidth(nbytes: int, device: str) -> float:
    """Bytes read + written per second copying a buffer of ``nbytes`` (at least 1 MB)."""
    n = max(nbytes, 1 << 20) // 4
    src, dst = torch.randn(n, device=device), torch.empty(n, device=device)

    def run():
        dst.copy_(src)
        sync(device)

    return 2 * 4 * n / _median_time(run, 15)


# ---- pytest-benchmark (a smoke test under --benchmark-disable) -------------------------------------------------
@pytest.mark.parametrize("provider", ["module", "whole-step", "compiled", "gpt2"])
def test_decode_tiny(benchmark, provider):
    model = make_model("tiny", d_model=64, n_layer=2, n_head=2)
    idx = torch.randint(0, VOCAB, (2, 24))
    peer = gpt2_peer(model) if provider == "gpt2" else None
    if provider == "gpt2" and peer is None:
        pytest.skip("transformers is not installed")
    fn = providers(model, idx, 8, peer)[provider]
    benchmark.group = "decode tiny b2 p24 n8"
    benchmark.pedantic(fn, rounds=2, warmup_rounds=1)


def test_whole_step_and_module_agree():
    model = make_model("tiny", d_model=64, n_layer=2)
    idx = torch.randint(0, VOCAB, (3, 20))
    p = providers(model, idx, 12, compiled=False)
    assert torch.equal(p["module"](), p["whole-step"]())


def test_gpt2_peer_generates_the_asked_length():
    model = make_model("tiny", d_model=64, n_layer=2, n_head=2)
    peer = gpt2_peer(model)
    if peer is None:
        pytest.skip("transformers is not installed")
    assert gpt2_generate(peer, torch.randint(0, VOCAB, (2, 10)), 7).shape == (2, 17)


def test_main_table_has_the_decode_only_column(capsys):
    # the command line end to end on a small case: one row per batch, every cell filled, greedy tokens equal
    assert (
        main(
            [
                "--preset",
                "tiny",
                "--batch",
                "1",
                "--prompt",
                "8",
                "--new",
                "4",
                "--rounds",
                "1",
                "--no-compiled",
                "--no-gpt2",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    head = next(ln for ln in out.splitlines() if ln.startswith("| model"))
    row = next(ln for ln in out.splitlines() if ln.startswith("| tiny | 1 |"))
    assert head.count("|") == row.count("|") and "decode steps alone" in head
    assert row.rstrip(" |").endswith("%)")  # decode-only tok/s and its share of the bandwidth limit
    assert "same greedy tokens as the module path: True" in out


# ---- command line ----------------------------------------------------------------------------------------------
def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", default=["tiny"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--prompt", type=int, default=256)
    p.add_argument("--new", type=int, default=512)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-compiled", action="store_true", help="skip the torch.compile'd module step")
    p.add_argument("--no-gpt2", action="store_true", help="skip the transformers GPT-2 peer")
    add_cpu_capability_argument(p)
    args = p.parse_args(argv)
    argv = list(argv if argv is not None else sys.argv[1:])
    status = run_at_cpu_levels(args, "benchmarks.bench_decode", argv)
    if status is not None:
        return status
    torch.set_num_threads(args.threads)
    cmd = "python -m benchmarks.bench_decode " + " ".join(argv)
    print(f"Device: {device_name(args.device)}; torch {torch.__version__}; medians of {args.rounds} interleaved rounds")
    print(f"Command: `{cmd.strip()}`; load before: {_load()}\n")
    head = (
        "| model | batch | module tok/s | whole-step tok/s | compiled tok/s | GPT-2 tok/s | whole-step / module | "
        "whole-step / GPT-2 | bandwidth limit tok/s (% reached) | arithmetic limit tok/s (% reached) | "
        "whole-step decode steps alone tok/s (% of bandwidth limit) |"
    )
    rows = [head, "|" + "---|" * 2 + "---:|" * 9]
    notes = []
    ok = True
    for preset in args.preset:
        model = make_model(preset, args.device, block_size=max(1024, args.prompt + args.new))
        peer = None if args.no_gpt2 else gpt2_peer(model)
        n_weights, _ = step_weights(model)
        bw = copy_bandwidth(4 * n_weights, args.device)
        rate = gemm_rate(args.device)
        ctx = args.prompt + args.new / 2
        notes.append(
            f"{preset}: {model.num_parameters() / 1e6:.2f}M parameters, {4 * n_weights / 1e6:.1f} MB of weights per "
            f"step, {flops_per_token(model, ctx) / 1e6:.2f} MFLOP per token at context {ctx:.0f}; copy bandwidth "
            f"{bw / 1e9:.1f} GB/s at that size, GEMM {rate / 1e9:.0f} GFLOP/s"
        )
        for batch in args.batch:
            torch.manual_seed(1)
            idx = torch.randint(0, VOCAB, (batch, args.prompt), device=args.device)
            prov = providers(model, idx, args.new, peer, compiled=not args.no_compiled)
            outs = {name: fn() for name, fn in prov.items()}  # warm-up (compiles, packs)
            same = torch.equal(outs["module"], outs["whole-step"])
            ok &= same
            if "compiled" in outs:
                same_c = torch.equal(outs["module"], outs["compiled"])
                ok &= same_c
            case = compare(Case(f"{preset} b{batch}", prov, device=args.device), rounds=args.rounds, warmup=0)
            tps = {k: batch * args.new / t for k, t in case.medians_s.items()}
            bw_limit = bw / (4 * n_weights / batch)
            ar_limit = rate / flops_per_token(model, ctx)
            fast = tps["whole-step"]
            gpt = tps.get("gpt2")
            cells = [
                preset,
                str(batch),
                f"{tps['module']:,.0f}",
                f"{fast:,.0f}",
                f"{tps['compiled']:,.0f}" if "compiled" in tps else "-",
                f"{gpt:,.0f}" if gpt else "-",
                f"{fast / tps['module']:.2f}x",
                f"{fast / gpt:.2f}x" if gpt else "-",
                f"{bw_limit:,.0f} ({100 * fast / bw_limit:.0f}%)",
                f"{ar_limit:,.0f} ({100 * fast / ar_limit:.0f}%)",
            ]
            # the decode steps alone (no prefill), medians over as many timed runs as rounds
            timings = [
                timed_generate(model, idx, args.new, temperature=0.0, decode_path="whole_step")[1]
                for _ in range(args.rounds)
            ]
            step_us = statistics.median(t.decode_us_per_step for t in timings)
            prefill_us = statistics.median(t.prefill_us_per_token for t in timings)
            step_tps = batch / (step_us * 1e-6)
            cells.append(f"{step_tps:,.0f} ({100 * step_tps / bw_limit:.0f}%)")
            rows.append("| " + " | ".join(cells) + " |")
            _, mtiming = timed_generate(model, idx, args.new, temperature=0.0, decode_path="module")
            notes.append(
                f"{preset} b{batch}: whole-step prefill {prefill_us:.1f} us per prompt token, decode "
                f"{step_us:.0f} us per step (medians of {args.rounds}); module path decode "
                f"{mtiming.decode_us_per_step:.0f} us per step; same greedy tokens as the module path: {same}"
            )
    print("\n".join(rows))
    print()
    for n in notes:
        print(f"* {n}")
    print(f"\nload after: {_load()}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
