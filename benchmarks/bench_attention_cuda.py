"""Relative-position attention benchmarks on CUDA: prefill (forward, forward+backward) and KV-cache decode.

Providers, side by side in interleaved rounds (benchmarks/harness.py):
  ``reference``    enigma_fast.reference (materialised scores; prefill only up to T = 2048);
  ``sdpa_flash``   F.scaled_dot_product_attention, flash backend, *without* the relative term (the speed ceiling);
  ``flex``         FlexAttention (compiled) whose score_mod adds scale * (q rel_emb^T) gathered by distance, the
                   (B, H, T, 2P-1) product computed in the call (so gradients reach q and rel_emb);
  ``enigma_fast``  the fused kernels;
  ``copy``         (decode) a device copy of as many bytes as the decode step reads: the bandwidth ceiling.

    pytest benchmarks/bench_attention_cuda.py                # one small shape per provider (skips without a GPU)
    python -m benchmarks.bench_attention_cuda [--quick]      # markdown tables, TFLOP/s, GB/s, bars
"""

from __future__ import annotations

import argparse
import sys

import pytest
import torch
import torch.nn.functional as F

from benchmarks.harness import Case, bench, compare, device_name, format_table
from enigma_fast import ops, reference

TOKENS = 16384  # B * T, with H = 16 heads: enough blocks to fill an H100/H200 at every T
HEADS = 16
DTYPE = torch.bfloat16


def prefill_inputs(T: int, D: int, grad: bool, device="cuda", P: int | None = None):
    B = max(1, TOKENS // T)
    P = T if P is None else P
    q, k, v = (torch.randn(B, HEADS, T, D, device=device, dtype=DTYPE, requires_grad=grad) for _ in range(3))
    rel = (0.5 * torch.randn(HEADS, 2 * P - 1, D, device=device, dtype=DTYPE)).requires_grad_(grad)
    return q, k, v, rel


_flex_cache: dict = {}


def _flex_fn(T: int, P: int, device):
    """Compiled flex_attention and a causal block mask for length T."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    key = (T, P, str(device))
    if key not in _flex_cache:
        mask = create_block_mask(lambda b, h, qi, ki: ki <= qi, None, None, T, T, device=device)
        _flex_cache[key] = (torch.compile(flex_attention, dynamic=False), mask)
    return _flex_cache[key]


def flex_rel_attention(q, k, v, rel):
    """FlexAttention with the relative term as a score_mod over a precomputed q . rel_emb^T gathered by distance."""
    T, D = q.shape[2], q.shape[3]
    P = (rel.shape[1] + 1) // 2
    scale = D**-0.5
    qr = q @ rel.transpose(-1, -2).unsqueeze(0)  # (B, H, T, 2P-1)
    fn, mask = _flex_fn(T, P, q.device)

    def score_mod(score, b, h, qi, ki):
        return score + qr[b, h, qi, (ki - qi).clamp(-(P - 1), P - 1) + (P - 1)] * scale

    return fn(q, k, v, score_mod=score_mod, block_mask=mask, scale=scale)


def sdpa_flash(q, k, v, rel, causal: bool = True):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


PREFILL = {
    "reference": lambda q, k, v, rel: reference.rel_attention(q, k, v, rel, causal=True),
    "sdpa_flash": sdpa_flash,
    "flex": flex_rel_attention,
    "enigma_fast": lambda q, k, v, rel: ops.rel_attention(q, k, v, rel, causal=True),
}


def prefill_fn(provider: str, q, k, v, rel, mode: str):
    f = PREFILL[provider]
    if mode == "forward":

        def run():
            with torch.no_grad():
                return f(q, k, v, rel)

        return run
    dout = torch.randn_like(q)
    leaves = (q, k, v) if provider == "sdpa_flash" else (q, k, v, rel)
    return lambda: torch.autograd.grad(f(q, k, v, rel), leaves, dout)


def prefill_flops(T: int, D: int, mode: str) -> float:
    """Causal attention FLOPs (Q K^T and P V, half the square), x 3.5 with the backward; the relative term is extra."""
    B = max(1, TOKENS // T)
    fwd = 2 * 2 * B * HEADS * T * T * D / 2
    return fwd if mode == "forward" else 3.5 * fwd


def decode_inputs(B: int, L: int, D: int = 64, device="cuda"):
    Tmax = L + 64
    k_cache, v_cache = (torch.randn(B, HEADS, Tmax, D, device=device, dtype=DTYPE) for _ in range(2))
    rel = torch.randn(HEADS, 2 * 1024 - 1, D, device=device, dtype=DTYPE)
    q, k_new, v_new = (torch.randn(B, HEADS, 1, D, device=device, dtype=DTYPE) for _ in range(3))
    seqlens = torch.full((B,), L - 1, dtype=torch.int32, device=device)
    return q, k_cache, v_cache, rel, seqlens, k_new, v_new


def decode_providers(B: int, L: int, D: int = 64) -> tuple[dict, int]:
    q, kc, vc, rel, seqlens, kn, vn = decode_inputs(B, L, D)
    read = 2 * B * HEADS * L * D * 2  # K and V rows read, bytes
    src = torch.empty(read // 4, device=q.device, dtype=torch.float32)  # copy of read/2 bytes: read + write = read
    dst = torch.empty_like(src)
    providers = {
        "reference": lambda: reference.rel_attention_with_kvcache(
            q, kc, vc, rel, cache_seqlens=seqlens, k_new=kn, v_new=vn
        ),
        # one query over the first L keys: no mask (SDPA's causal mask is top-left aligned)
        "sdpa_flash": lambda: sdpa_flash(q, kc[:, :, :L], vc[:, :, :L], None, causal=False),
        "enigma_fast": lambda: ops.rel_attention_with_kvcache(
            q, kc, vc, rel, cache_seqlens=seqlens, k_new=kn, v_new=vn
        ),
        "copy": lambda: dst.copy_(src),
    }
    return providers, read


# ---------------------------------------------------------------------------------------------------------------
# pytest-benchmark: one small shape per provider (a smoke test under --benchmark-disable)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("provider", list(PREFILL))
def test_prefill(benchmark, provider, mode):
    q, k, v, rel = prefill_inputs(512, 64, grad=mode != "forward")
    benchmark.group = f"rel_attention {mode} bf16 T=512 D=64"
    bench(benchmark, prefill_fn(provider, q, k, v, rel, mode), device="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("provider", ["reference", "sdpa_flash", "enigma_fast", "copy"])
def test_decode(benchmark, provider):
    providers, read = decode_providers(8, 4096)
    benchmark.group = "rel_attention_with_kvcache bf16 B=8 L=4096"
    bench(benchmark, providers[provider], device="cuda", bytes_moved=read)


# ---------------------------------------------------------------------------------------------------------------
# command line: interleaved medians, tables, bars
# ---------------------------------------------------------------------------------------------------------------
def _usable(providers: dict) -> tuple[dict, list[str]]:
    """Providers that run once without error (a missing backend or an out-of-memory is reported, not fatal)."""
    ok, notes = {}, []
    for name, fn in providers.items():
        try:
            fn()
            torch.cuda.synchronize()
            ok[name] = fn
        except Exception as err:  # noqa: BLE001 - any failure just drops the provider from the table
            notes.append(f"{name}: skipped ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
            torch.cuda.empty_cache()
    return ok, notes


def run_prefill(Ts, Ds, rounds: int) -> tuple[list[Case], list[str], list[str]]:
    cases, lines, notes = [], [], []
    for T in Ts:
        for D in Ds:
            for mode in ("forward", "forward+backward"):
                q, k, v, rel = prefill_inputs(T, D, grad=mode != "forward")
                names = [p for p in PREFILL if not (p == "reference" and T > 2048)]
                providers, skipped = _usable({p: prefill_fn(p, q, k, v, rel, mode) for p in names})
                notes += [f"T={T} D={D} {mode}: {s}" for s in skipped]
                case = compare(Case(f"{mode} T={T} D={D}", providers, 0, "cuda"), rounds=rounds)
                cases.append(case)
                fl = prefill_flops(T, D, mode)
                lines += [
                    f"| {case.name} | {n} | {t * 1e3:.3f} | {fl / t / 1e12:.1f} |" for n, t in case.medians_s.items()
                ]
                del q, k, v, rel, providers
                torch.cuda.empty_cache()
    return cases, lines, notes


def run_decode(Bs, Ls, rounds: int) -> list[Case]:
    cases = []
    for B in Bs:
        for L in Ls:
            providers, read = decode_providers(B, L)
            providers, _ = _usable(providers)
            cases.append(compare(Case(f"decode B={B} L={L}", providers, read, "cuda"), rounds=rounds))
            torch.cuda.empty_cache()
    return cases


def _bar(what: str, value: float, need: float) -> str:
    return f"{'PASS' if value >= need else 'FAIL'}  {what}: {value:.2f} (need >= {need})"


def bars(prefill: list[Case], decode: list[Case]) -> list[str]:
    out = []
    by = {c.name: c.medians_s for c in prefill + decode}
    f = by.get("forward T=2048 D=64", {})
    if "enigma_fast" in f and "sdpa_flash" in f:
        out.append(_bar("fwd T=2048 D=64: sdpa_flash time / ours (within 2x)", f["sdpa_flash"] / f["enigma_fast"], 0.5))
    if "enigma_fast" in f and "flex" in f:
        out.append(_bar("fwd T=2048 D=64: flex time / ours", f["flex"] / f["enigma_fast"], 1.0))
    fb = by.get("forward+backward T=2048 D=64", {})
    if "enigma_fast" in fb and "flex" in fb:
        out.append(_bar("fwd+bwd T=2048 D=64: flex time / ours", fb["flex"] / fb["enigma_fast"], 1.0))
    d = by.get("decode B=8 L=16384", {})
    if "enigma_fast" in d and "copy" in d:
        out.append(_bar("decode B=8 L=16384: fraction of copy bandwidth", d["copy"] / d["enigma_fast"], 0.6))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="T=2048 D=64 prefill and B=8 decode only")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA device")
        return 0
    Ts, Ds = ([2048], [64]) if args.quick else ([512, 2048, 8192], [32, 64, 128])
    Bs, Ls = ([8], [1024, 16384]) if args.quick else ([1, 8, 64], [1024, 4096, 16384, 32768])
    prefill, lines, notes = run_prefill(Ts, Ds, args.rounds)
    decode = run_decode(Bs, Ls, args.rounds)
    cmd = "python -m benchmarks.bench_attention_cuda " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"Device: {device_name('cuda')}; torch {torch.__version__}; bf16, causal, H={HEADS}, B*T={TOKENS}; "
        f"medians of {args.rounds} interleaved rounds"
    )
    print(f"Command: `{cmd.strip()}`\n")
    print("### Prefill (TFLOP/s count Q K^T and P V of the causal half only)\n")
    print("| case | provider | median ms | TFLOP/s |\n|---|---|---:|---:|")
    print("\n".join(lines))
    print()
    print(format_table(prefill, peer="flex", title="Prefill speed-up vs FlexAttention"))
    print()
    print(format_table(decode, peer="reference", title="Decode (GB/s = K and V bytes read / time)"))
    if notes:
        print("\nNotes:\n" + "\n".join(notes))
    verdicts = bars(prefill, decode)
    print("\nBars:\n" + "\n".join(verdicts))
    return 0 if all(v.startswith("PASS") for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
