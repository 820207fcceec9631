"""transformers' generate on our models against our own generator, and against transformers' GPT-2 of the same size.

Providers (greedy, no early stop, same prompts):
  * ``enigma_fast``: ``enigma_fast.generation.generate`` (one fused prefill, one ``decode_step`` per token);
  * ``hf-enbert``: ``EnBERTForCausalLM.generate`` (transformers' decoding loop on our fused ops and static KV cache);
  * ``hf-gpt2``: ``GPT2LMHeadModel.generate``, randomly initialised with the same width, depth, heads, FFN size
    (``ffn_mult * d_model``, GELU) and vocabulary (transformers' own attention and ``DynamicCache``).

Besides tokens/s, the run splits ``hf-enbert``'s time into the time inside our model's forward (hooks around it)
and the rest: transformers' own per-step work (preparing the inputs, logits processors, stopping criteria,
concatenations), reported per step next to our generator's whole step.

    pytest benchmarks/bench_hf.py --benchmark-disable              # smoke (CI)
    python -m benchmarks.bench_hf --preset tiny 47m --batch 1 16   # the bars: hf-enbert >= 0.8x enigma_fast,
                                                                   # hf-enbert faster than hf-gpt2
    python -m benchmarks.bench_hf --import-time 15                 # import costs, fresh processes, medians
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest
import torch

from benchmarks.harness import Case, add_cpu_capability_argument, compare, device_name, run_at_cpu_levels
from enigma_fast.generation import generate
from enigma_fast.models import EnBERTConfig

VOCAB = 16


def _require_hf():
    if os.environ.get("ENIGMA_FAST_REQUIRE_HF") == "1":
        import transformers  # noqa: F401
    else:
        pytest.importorskip("transformers", reason="the hf extra is not installed")


def models(preset: str, block_size: int, **overrides):
    """(our EnBERTForCausalLM, GPT-2 of the same size), both random, eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from enigma_fast.hf import EnBERTForCausalLM, EnBERTHFConfig

    torch.manual_seed(0)
    cfg = EnBERTConfig.from_preset(preset, vocab_size=VOCAB, block_size=block_size, **overrides)
    ours = EnBERTForCausalLM(EnBERTHFConfig.from_enigma_fast(cfg)).eval()
    gpt2_cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=block_size,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=cfg.ffn_mult * cfg.d_model,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    return ours, GPT2LMHeadModel(gpt2_cfg).eval()


def providers(ours, gpt2, idx: torch.Tensor, n: int) -> dict:
    kw = dict(max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=None)  # no early stop: n tokens
    return {
        "enigma_fast": lambda: generate(ours.core, idx, n, temperature=0.0),
        "hf-enbert": lambda: ours.generate(idx, **kw),
        "hf-gpt2": lambda: gpt2.generate(idx, **kw),
    }


def forward_share(model, fn) -> tuple[float, float, int]:
    """(total s, s inside ``model.forward``, forward calls) of one ``fn()`` run, timed with forward hooks."""
    inside, calls, start = [0.0], [0], [0.0]

    def pre(*_):
        start[0] = time.perf_counter()

    def post(*_):
        inside[0] += time.perf_counter() - start[0]
        calls[0] += 1

    h1, h2 = model.register_forward_pre_hook(pre), model.register_forward_hook(post)
    try:
        t0 = time.perf_counter()
        fn()
        total = time.perf_counter() - t0
    finally:
        h1.remove()
        h2.remove()
    return total, inside[0], calls[0]


# ---- pytest-benchmark (a smoke test under --benchmark-disable) ------------------------------------------------
@pytest.mark.parametrize("provider", ["enigma_fast", "hf-enbert", "hf-gpt2"])
def test_hf_generate_tiny(benchmark, provider):
    _require_hf()
    ours, gpt2 = models("tiny", 128, d_model=64, n_layer=2)
    idx = torch.randint(0, VOCAB, (2, 16))
    benchmark.group = "hf generate tiny b2 p16 n8"
    benchmark.pedantic(providers(ours, gpt2, idx, 8)[provider], rounds=3, warmup_rounds=1)


def test_hf_generate_matches_ours():
    _require_hf()
    ours, gpt2 = models("tiny", 128, d_model=64, n_layer=2)
    p = providers(ours, gpt2, torch.randint(0, VOCAB, (3, 16)), 8)
    assert torch.equal(p["enigma_fast"](), p["hf-enbert"]()) and p["hf-gpt2"]().shape == (3, 24)


# ---- import cost ------------------------------------------------------------------------------------------------
_IMPORTS = {
    # what `import enigma_fast` costs with transformers installed (the hook), and with it unimportable
    "import enigma_fast": "import enigma_fast",
    "import enigma_fast (transformers absent)": "import sys; sys.modules['transformers'] = None; import enigma_fast",
    # the Auto classes: alone, and after enigma_fast (its registration runs when they load)
    "from transformers import AutoModelForCausalLM": "from transformers import AutoModelForCausalLM",
    "import enigma_fast; from transformers import AutoModelForCausalLM": (
        "import enigma_fast; from transformers import AutoModelForCausalLM"
    ),
}


def import_times(rounds: int) -> dict[str, float]:
    """Median wall time (s) of each statement of ``_IMPORTS`` in a fresh interpreter, interleaved rounds."""
    samples: dict[str, list[float]] = {k: [] for k in _IMPORTS}
    probe = "import time; t = time.perf_counter(); {}; print(time.perf_counter() - t)"
    for r in range(rounds):
        names = list(_IMPORTS)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            out = subprocess.run([sys.executable, "-c", probe.format(_IMPORTS[name])], capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"{name}: {out.stderr[-500:]}")
            samples[name].append(float(out.stdout.split()[-1]))
    import statistics

    return {k: statistics.median(v) for k, v in samples.items()}


def hook_install_us(n: int = 2000) -> float:
    """Microseconds per ``enigma_fast.hf._hook.install()`` once installed (what each later call costs)."""
    from enigma_fast.hf import _hook

    t = time.perf_counter()
    for _ in range(n):
        _hook.install()
    return (time.perf_counter() - t) / n * 1e6


# ---- command line ----------------------------------------------------------------------------------------------
def _load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?"


def _lscpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    want = ("Model name", "Vendor ID", "CPU family", "Model:", "Hypervisor vendor")
    return "; ".join(" ".join(line.split()) for line in out.splitlines() if line.startswith(want))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", default=["tiny", "47m"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--import-time", type=int, default=0, metavar="ROUNDS", help="measure import costs instead")
    add_cpu_capability_argument(p)
    args = p.parse_args(argv)
    if args.import_time:
        print(f"CPU: {_lscpu()}; load at start: {_load()}; {args.import_time} interleaved rounds, medians\n")
        print("| statement (fresh interpreter) | median s |\n|---|---:|")
        for name, t in import_times(args.import_time).items():
            print(f"| `{name}` | {t:.3f} |")
        print(f"\nhook install (already installed): {hook_install_us():.2f} us per call; load at end: {_load()}")
        return 0
    status = run_at_cpu_levels(args, "benchmarks.bench_hf", argv)
    if status is not None:
        return status
    import transformers

    torch.set_num_threads(args.threads)
    print(f"Device: {device_name('cpu')}; torch {torch.__version__}; transformers {transformers.__version__}")
    print(f"lscpu: {_lscpu()}")
    print(f"Command: `python -m benchmarks.bench_hf {' '.join(argv)}`; medians of {args.rounds} interleaved rounds")
    print(f"Load average (1, 5, 15 min) at start: {_load()}\n")
    rows, ok = [], True
    for preset in args.preset:
        ours, gpt2 = models(preset, max(1024, args.prompt + args.new))
        for batch in args.batch:
            idx = torch.randint(0, VOCAB, (batch, args.prompt))
            prov = providers(ours, gpt2, idx, args.new)
            same = torch.equal(prov["enigma_fast"](), prov["hf-enbert"]())  # also the warm-up
            prov["hf-gpt2"]()
            case = compare(Case(f"{preset} b{batch}", prov), rounds=args.rounds, warmup=0)
            tps = {k: batch * args.new / t for k, t in case.medians_s.items()}
            split = [forward_share(ours, prov["hf-enbert"]) for _ in range(3)]
            total, inside, calls = sorted(split)[1]
            per_step = (total - inside) / calls * 1e3
            own_step = case.medians_s["enigma_fast"] / args.new * 1e3
            r_own = tps["hf-enbert"] / tps["enigma_fast"]
            r_gpt2 = tps["hf-enbert"] / tps["hf-gpt2"]
            ok &= same and r_own >= 0.8 and r_gpt2 > 1.0
            rows.append((case.name, tps, r_own, r_gpt2, per_step, own_step, same, _load()))
            print(f"  {case.name}: done (load {_load()})", flush=True)
    print(
        "\n| case | enigma_fast tok/s | hf-enbert tok/s | hf-gpt2 tok/s | hf-enbert / enigma_fast "
        "| hf-enbert / hf-gpt2 | transformers' own ms/step | enigma_fast ms/step | same tokens | load after |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for name, tps, r_own, r_gpt2, per_step, own_step, same, load in rows:
        print(
            f"| {name} | {tps['enigma_fast']:.1f} | {tps['hf-enbert']:.1f} | {tps['hf-gpt2']:.1f} | {r_own:.2f}x "
            f"{'✓' if r_own >= 0.8 else '✗'} | {r_gpt2:.2f}x {'✓' if r_gpt2 > 1 else '✗'} | {per_step:.3f} | "
            f"{own_step:.3f} | {'yes' if same else 'NO'} | {load} |"
        )
    print(f"\nprompt {args.prompt} tokens, {args.new} new tokens per row, vocabulary {VOCAB}; load at end: {_load()}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
