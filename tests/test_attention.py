"""Tests of the relative-position attention ops against the float64 reference.

The full parameter grid (B, H, Tq/Tk, D, P, causal, key_start, strided views, rel_emb) has thousands of
combinations; the value tests cover it pairwise (every pair of values of any two parameters appears in some case,
so every listed value appears), chosen by a seeded greedy construction so the set is fixed.
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from enigma_fast import _extension, ops, reference
from tests.tolerances import assert_close

HAS_KERNEL = _extension.has_kernel("rel_attention", "cpu", torch.float32)
needs_kernel = pytest.mark.skipif(not HAS_KERNEL, reason="needs the compiled CPU kernels")

GRID = {
    "B": [1, 3],
    "H": [1, 4],
    "T": [(tq, tk) for tq, tk in itertools.product([1, 7, 64, 129, 300], repeat=2) if tq <= tk],
    "D": [16, 32, 64, 80],
    "P": ["small", "large"],  # P below / above the sequence length
    "causal": [False, True],
    "key_start": [False, True],
    "strided": [False, True],
    "rel": [True, False],
}


def _pairwise(grid: dict[str, list], seed: int = 0, candidates: int = 40) -> list[dict]:
    """A fixed covering array of strength 2: greedy, each new case the candidate covering most uncovered pairs."""
    names = list(grid)
    uncovered = {
        (a, i, b, j)
        for ai, a in enumerate(names)
        for b in names[ai + 1 :]
        for i in range(len(grid[a]))
        for j in range(len(grid[b]))
    }
    rng = random.Random(seed)
    cases = []
    while uncovered:
        # Seed each candidate with one uncovered pair so every round makes progress.
        a, i, b, j = min(uncovered)
        best, best_gain = None, -1
        for _ in range(candidates):
            pick = {n: rng.randrange(len(grid[n])) for n in names}
            pick[a], pick[b] = i, j
            gain = sum((x, pick[x], y, pick[y]) in uncovered for xi, x in enumerate(names) for y in names[xi + 1 :])
            if gain > best_gain:
                best, best_gain = pick, gain
        for xi, x in enumerate(names):
            for y in names[xi + 1 :]:
                uncovered.discard((x, best[x], y, best[y]))
        cases.append({n: grid[n][best[n]] for n in names})
    return cases


CASES = _pairwise(GRID)


def _case_id(c: dict) -> str:
    tq, tk = c["T"]
    return (
        f"B{c['B']}-H{c['H']}-Tq{tq}-Tk{tk}-D{c['D']}-P{c['P']}-{'causal' if c['causal'] else 'full'}"
        f"{'-ks' if c['key_start'] else ''}{'-strided' if c['strided'] else ''}{'' if c['rel'] else '-norel'}"
    )


def make_inputs(B, H, Tq, Tk, D, P, *, rel=True, strided=False, dtype=torch.float64, key_start=None):
    """Random q, k, v (optionally strided slices of fused projections), rel_emb and key_start tensors."""
    if strided:
        # q from a (B, Tq, H, D) projection, k and v from one fused (B, Tk, 2, H, D) projection: no copies.
        q = torch.randn(B, Tq, H, D + 3, dtype=dtype)[..., :D].transpose(1, 2)
        kv = torch.randn(B, Tk, 2, H, D, dtype=dtype)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    else:
        q, k, v = (torch.randn(B, H, t, D, dtype=dtype) for t in (Tq, Tk, Tk))
    rel_emb = torch.randn(H, 2 * P - 1, D, dtype=dtype) if rel else None
    return q, k, v, rel_emb


def _key_start(B: int, Tk: int) -> torch.Tensor:
    # One row fully padded (every key masked) whenever B > 1; a partly padded row always.
    return torch.tensor([Tk // 3, Tk, 0][:B], dtype=torch.int64)


def _grads(out, inputs, g):
    leaves = [t for t in inputs if t is not None]
    return torch.autograd.grad(out, leaves, g)


@needs_kernel
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_reference_float64(cpu_level, case):
    B, H, D = case["B"], case["H"], case["D"]
    Tq, Tk = case["T"]
    P = max(1, Tk // 4) if case["P"] == "small" else Tk + 5
    q, k, v, rel = make_inputs(B, H, Tq, Tk, D, P, rel=case["rel"], strided=case["strided"])
    ks = _key_start(B, Tk) if case["key_start"] else None
    leaves = [t.requires_grad_() for t in (q, k, v, rel) if t is not None]
    out = ops.rel_attention(q, k, v, rel, causal=case["causal"], key_start=ks)
    ref = reference.rel_attention(q, k, v, rel, causal=case["causal"], key_start=ks)
    assert out.shape == (B, H, Tq, D) and out.is_contiguous()
    assert_close(out, ref)
    g = torch.randn_like(ref)
    for got, want in zip(_grads(out, leaves, g), _grads(ref, leaves, g), strict=True):
        assert got.shape == want.shape
        assert_close(got, want)


def test_pairwise_cover_every_value():
    for name, values in GRID.items():
        assert {repr(c[name]) for c in CASES} == {repr(v) for v in values}, name
    assert len(CASES) < 120


def test_all_masked_rows_are_zero():
    q, k, v, rel = make_inputs(2, 2, 5, 5, 8, 3)
    ks = torch.tensor([5, 2])
    for fn in (ops.rel_attention, reference.rel_attention):
        out = fn(q, k, v, rel, causal=True, key_start=ks)
        assert torch.isfinite(out).all()
        assert (out[0] == 0).all() and (out[1, :, :2] == 0).all()


@needs_kernel
@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck(cpu_level, causal):
    q, k, v, rel = make_inputs(2, 2, 5, 9, 6, 3)
    ks = torch.tensor([0, 7])
    inputs = [t.requires_grad_() for t in (q, k, v, rel)]

    def f(q, k, v, rel):
        return ops.rel_attention(q, k, v, rel, causal=causal, key_start=ks)

    assert torch.autograd.gradcheck(f, inputs)


@needs_kernel
def test_scale_and_no_rel_match_sdpa():
    q, k, v, _ = make_inputs(2, 3, 33, 33, 16, 1, rel=False, dtype=torch.float32)
    out = ops.rel_attention(q, k, v, causal=True, scale=0.3)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    assert_close(out, want, dtype=torch.float32, scale=10)


def _max_err(a, b):
    return (a.double() - b.double()).abs().max().item()


@needs_kernel
@pytest.mark.parametrize("causal", [False, True])
def test_bfloat16_error_within_twice_reference(cpu_level, causal):
    q, k, v, rel = make_inputs(2, 4, 100, 160, 32, 40)
    ks = torch.tensor([0, 50])
    g = torch.randn(2, 4, 100, 32, dtype=torch.float64)
    exact = [t.requires_grad_() for t in (q, k, v, rel)]
    low = [t.detach().to(torch.bfloat16).requires_grad_() for t in exact]
    out64 = reference.rel_attention(*exact, causal=causal, key_start=ks)
    want = [out64, *_grads(out64, exact, g)]
    out_ref = reference.rel_attention(*low, causal=causal, key_start=ks)
    got_ref = [out_ref, *_grads(out_ref, low, g.to(torch.bfloat16))]
    out_k = ops.rel_attention(*low, causal=causal, key_start=ks)
    got_k = [out_k, *_grads(out_k, low, g.to(torch.bfloat16))]
    for name, w, r, kk in zip(["out", "dq", "dk", "dv", "drel"], want, got_ref, got_k, strict=True):
        assert kk.dtype == torch.bfloat16
        assert _max_err(kk, w) <= 2 * _max_err(r, w), name


def _decode_inputs(B=2, H=3, T=40, D=32, P=8, dtype=torch.float64):
    q, k, v, rel = make_inputs(B, H, T, T, D, P, dtype=dtype)
    return q, k, v, rel


@needs_kernel
@pytest.mark.parametrize("fn", ["ops", "reference"])
def test_decode_matches_prefill_step_by_step(cpu_level, fn):
    impl = ops if fn == "ops" else reference
    B, H, T, D, Tmax, prompt = 2, 3, 40, 32, 48, 5
    q, k, v, rel = _decode_inputs(B, H, T, D)
    ks = torch.tensor([0, 3])  # row 1 left-padded by 3
    want = reference.rel_attention(q, k, v, rel, causal=True, key_start=ks)
    # The kernel's cache is poisoned so unwritten slots must not leak; the reference multiplies masked slots by 0.
    poison = float("nan") if fn == "ops" else 0.0
    k_cache = torch.full((B, H, Tmax, D), poison, dtype=q.dtype)
    v_cache = torch.full((B, H, Tmax, D), poison, dtype=q.dtype)
    seqlens = torch.zeros(B, dtype=torch.int32)
    t = 0
    while t < T:
        n = prompt if t == 0 else 1
        sl = slice(t, t + n)
        out = impl.rel_attention_with_kvcache(
            q[:, :, sl],
            k_cache,
            v_cache,
            rel,
            cache_seqlens=seqlens,
            k_new=k[:, :, sl],
            v_new=v[:, :, sl],
            key_start=ks,
        )
        assert_close(out, want[:, :, sl])
        seqlens += n
        t += n
    assert_close(k_cache[:, :, :T], k)
    assert_close(v_cache[:, :, :T], v)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_decode_split_over_keys(cpu_level, dtype):
    # One row and one head over a long cache: the kernel splits the keys across threads and merges.
    B, H, D, Tmax, L = 1, 1, 32, 1100, 1037
    q, k, v, rel = make_inputs(B, H, 1, Tmax, D, 300, dtype=dtype)
    seqlens = torch.tensor([L], dtype=torch.int32)
    k_new, v_new = torch.randn(2, B, H, 1, D, dtype=dtype)
    kc, vc = k.clone(), v.clone()
    out = ops.rel_attention_with_kvcache(q, kc, vc, rel, cache_seqlens=seqlens, k_new=k_new, v_new=v_new)
    kr, vr = k.clone(), v.clone()
    want = reference.rel_attention_with_kvcache(q, kr, vr, rel, cache_seqlens=seqlens, k_new=k_new, v_new=v_new)
    assert_close(out, want, dtype=dtype, scale=10)
    assert torch.equal(kc, kr) and torch.equal(vc, vr)


@needs_kernel
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Tq", [7, 70])
def test_prefill_split_over_keys(cpu_level, causal, Tq):
    # Few query tiles and many keys: the forward splits the keys and merges by log-sum-exp; the backward uses lse.
    q, k, v, rel = make_inputs(1, 1, Tq, 1000, 16, 100)
    ks = torch.tensor([130])
    leaves = [t.requires_grad_() for t in (q, k, v, rel)]
    out = ops.rel_attention(q, k, v, rel, causal=causal, key_start=ks)
    ref = reference.rel_attention(q, k, v, rel, causal=causal, key_start=ks)
    assert_close(out, ref)
    g = torch.randn_like(ref)
    for got, want in zip(_grads(out, leaves, g), _grads(ref, leaves, g), strict=True):
        assert_close(got, want)


@needs_kernel
def test_kvcache_without_new_tokens(cpu_level):
    q, k, v, rel = make_inputs(2, 2, 3, 20, 16, 5)
    seqlens = torch.tensor([20, 11])
    out = ops.rel_attention_with_kvcache(q, k, v, rel, cache_seqlens=seqlens)
    want = reference.rel_attention_with_kvcache(q, k, v, rel, cache_seqlens=seqlens)
    assert_close(out, want)
    assert_close(out[1:], reference.rel_attention(q[1:], k[1:, :, :11], v[1:, :, :11], rel, causal=True))


@needs_kernel
def test_opcheck():
    q, k, v, rel = make_inputs(2, 2, 5, 9, 8, 3)
    ks = torch.tensor([0, 4])
    for r, key_start, causal in [(rel, ks, True), (None, None, False)]:
        args = (q, k, v, r, key_start, causal, 0.5)
        torch.library.opcheck(torch.ops.enigma_fast.rel_attention_fwd.default, args)
        out, lse = torch.ops.enigma_fast.rel_attention_fwd(*args)
        dout = torch.randn_like(out)
        torch.library.opcheck(
            torch.ops.enigma_fast.rel_attention_bwd.default, (dout, q, k, v, r, key_start, out, lse, causal, 0.5)
        )
    kc, vc = torch.randn(2, 2, 12, 8, dtype=q.dtype), torch.randn(2, 2, 12, 8, dtype=q.dtype)
    seqlens = torch.tensor([3, 7], dtype=torch.int32)
    torch.library.opcheck(
        torch.ops.enigma_fast.rel_attention_kvcache.default,
        (q[:, :, :2], kc, vc, rel, seqlens, k[:, :, :2].contiguous(), v[:, :, :2].contiguous(), ks, 0.5),
    )


@needs_kernel
def test_torch_compile_fullgraph():
    q, k, v, rel = make_inputs(2, 2, 7, 11, 16, 4, dtype=torch.float32)
    ks = torch.tensor([0, 3])

    @torch.compile(fullgraph=True)
    def f(q, k, v, rel):
        return ops.rel_attention(q * 2, k, v, rel, causal=True, key_start=ks).sum()

    leaves = [t.requires_grad_() for t in (q, k, v, rel)]
    got = torch.autograd.grad(f(*leaves), leaves)
    want = torch.autograd.grad(reference.rel_attention(q * 2, k, v, rel, causal=True, key_start=ks).sum(), leaves)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, dtype=torch.float32, scale=10)

    @torch.compile(fullgraph=True)
    def step(q, kc, vc, rel, seqlens, kn, vn):
        return ops.rel_attention_with_kvcache(q, kc, vc, rel, cache_seqlens=seqlens, k_new=kn, v_new=vn)

    kc, vc = torch.zeros(2, 2, 16, 16), torch.zeros(2, 2, 16, 16)
    seqlens = torch.tensor([2, 5], dtype=torch.int32)
    kn, vn = torch.randn(2, 2, 1, 16), torch.randn(2, 2, 1, 16)
    out = step(q[:, :, :1].detach(), kc, vc, rel.detach(), seqlens, kn, vn)
    kr, vr = torch.zeros_like(kc), torch.zeros_like(vc)
    want = reference.rel_attention_with_kvcache(
        q[:, :, :1].detach(), kr, vr, rel.detach(), cache_seqlens=seqlens, k_new=kn, v_new=vn
    )
    assert_close(out, want, dtype=torch.float32, scale=10)
    assert torch.equal(kc, kr)


BAD = [
    ("k head dim", lambda q, k, v, r: (q, k[..., :4], v, r), "k must be"),
    ("v length", lambda q, k, v, r: (q, k, v[:, :, :5], r), "v must"),
    ("batch", lambda q, k, v, r: (q, k[:1], v[:1], r), "k must be"),
    ("rel_emb D", lambda q, k, v, r: (q, k, v, r[..., :4]), "rel_emb must be"),
    ("rel_emb even", lambda q, k, v, r: (q, k, v, r[:, :4]), "rel_emb must be"),
    ("rel_emb heads", lambda q, k, v, r: (q, k, v, r[:1]), "rel_emb must be"),
    ("Tq > Tk", lambda q, k, v, r: (q, k[:, :, :3], v[:, :, :3], r), "Tq"),
    ("dtype", lambda q, k, v, r: (q, k.float(), v, r), "dtype|must have q's"),
    ("int q", lambda q, k, v, r: (q.long(), k.long(), v.long(), None), "float"),
    ("device", lambda q, k, v, r: (q, k.to("meta"), v, r), "device"),
    ("3-d q", lambda q, k, v, r: (q[0], k, v, r), "q must be"),
]


@pytest.mark.parametrize("name,mutate,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises(name, mutate, match):
    q, k, v, rel = make_inputs(2, 2, 5, 9, 8, 3)
    args = mutate(q, k, v, rel)
    with pytest.raises((RuntimeError, ValueError, TypeError), match=match):
        ops.rel_attention(*args)


def test_bad_key_start_and_cache_raise():
    q, k, v, rel = make_inputs(2, 2, 1, 9, 8, 3)
    with pytest.raises((RuntimeError, ValueError), match="key_start"):
        ops.rel_attention(q, k, v, rel, key_start=torch.tensor([0, 1, 2]))
    with pytest.raises((RuntimeError, ValueError), match="cache_seqlens"):
        ops.rel_attention_with_kvcache(q, k, v, rel, cache_seqlens=torch.tensor([0]))
    with pytest.raises((RuntimeError, ValueError), match="k_new"):
        ops.rel_attention_with_kvcache(q, k, v, rel, cache_seqlens=torch.tensor([1, 2]), k_new=q)


@needs_kernel
def test_cache_seqlens_past_tmax_raises():
    q, k, v, rel = make_inputs(2, 2, 1, 9, 8, 3)
    with pytest.raises(RuntimeError, match="Tmax"):
        ops.rel_attention_with_kvcache(q, k, v, rel, cache_seqlens=torch.tensor([3, 9]), k_new=q, v_new=q)


# ---- one check for both paths (issue 11): the reference fallback rejects what the kernels reject ----


def _kv_case(dtype, B=2, H=2, Tq=1, Tmax=6, D=8):
    q = torch.randn(B, H, Tq, D, dtype=dtype)
    kc, vc = torch.randn(B, H, Tmax, D, dtype=dtype), torch.randn(B, H, Tmax, D, dtype=dtype)
    kn, vn = torch.randn(B, H, Tq, D, dtype=dtype), torch.randn(B, H, Tq, D, dtype=dtype)
    return q, kc, vc, kn, vn


KV_BAD = [
    ("full cache", dict(seqlens=[2, 6], new=True), r"cache_seqlens\[1\] \+ 1 new tokens must be within .* Tmax = 6"),
    ("past the cache", dict(seqlens=[9, 0], new=True), r"cache_seqlens\[0\] \+ 1 new tokens"),
    ("negative", dict(seqlens=[-1, 0], new=True), r"cache_seqlens\[0\] \+ 1 new tokens"),
    ("queries not cached", dict(seqlens=[0, 3], new=False), r"row 0 holds 0 keys, fewer than the Tq = 1 queries"),
    ("no room without k_new", dict(seqlens=[7, 3], new=False), r"cache_seqlens\[0\] \+ 0 new tokens"),
]


@pytest.mark.parametrize("name,case,match", KV_BAD, ids=[b[0] for b in KV_BAD])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("fn", ["ops", "reference"])
def test_kvcache_seqlens_out_of_range_raise_and_leave_the_cache(name, case, match, dtype, fn):
    """float16 on the CPU (the reference path) used to overwrite the last cache slot when cache_seqlens == Tmax
    (the float32 kernel raised). Every dtype and path now raises the same ValueError, caches untouched."""
    mod = ops if fn == "ops" else reference
    q, kc, vc, kn, vn = _kv_case(dtype)
    k0, v0 = kc.clone(), vc.clone()
    new = dict(k_new=kn, v_new=vn) if case["new"] else {}
    with pytest.raises(ValueError, match=match):
        mod.rel_attention_with_kvcache(q, kc, vc, cache_seqlens=torch.tensor(case["seqlens"]), **new)
    assert torch.equal(kc, k0) and torch.equal(vc, v0)


def test_kvcache_float16_reference_writes_only_the_new_slots():
    q, kc, vc, kn, vn = _kv_case(torch.float16, Tq=2)
    k0 = kc.clone()
    seqlens = torch.tensor([4, 0])
    ops.rel_attention_with_kvcache(q, kc, vc, cache_seqlens=seqlens, k_new=kn, v_new=vn)
    want = k0.clone()
    want[0, :, 4:6], want[1, :, 0:2] = kn[0], kn[1]
    assert torch.equal(kc, want)


ATTN_BAD_EVERY_DTYPE = [
    ("q last dim strided", lambda q, k, v: (torch.cat([q, q], -1)[..., ::2], k, v)),
    ("k last dim strided", lambda q, k, v: (q, torch.cat([k, k], -1)[..., ::2], v)),
    ("D = 0", lambda q, k, v: (q[..., :0], k[..., :0], v[..., :0])),
    ("Tq > Tk", lambda q, k, v: (torch.cat([q, q, q, q], 2), k, v)),
]


@pytest.mark.parametrize("name,mutate", ATTN_BAD_EVERY_DTYPE, ids=[b[0] for b in ATTN_BAD_EVERY_DTYPE])
def test_float16_cpu_attention_rejects_what_the_kernel_rejects(name, mutate):
    """The float16 CPU path (reference) rejects the layouts and shapes the float32 kernel rejects, same message."""

    def err(dtype, fn):
        q, k, v, _ = make_inputs(1, 2, 2, 3, 4, 2, dtype=dtype)
        with pytest.raises(ValueError) as info:
            fn(*mutate(q, k, v))
        return str(info.value)

    want = err(torch.float32, ops.rel_attention)
    assert err(torch.float16, ops.rel_attention) == want
    assert err(torch.float16, reference.rel_attention) == want


def test_attention_argument_types():
    q, k, v, rel = make_inputs(1, 2, 2, 3, 4, 2, dtype=torch.float32)
    with pytest.raises(TypeError, match="causal must be a bool, got str"):
        ops.rel_attention(q, k, v, rel, causal="yes")
    with pytest.raises(TypeError, match="scale must be a real number, got str"):
        ops.rel_attention(q, k, v, rel, scale="0.5")
    with pytest.raises(TypeError, match="key_start must be int32 or int64, got float32"):
        ops.rel_attention(q, k, v, rel, key_start=torch.zeros(1))
    with pytest.raises(TypeError, match="k must be a torch.Tensor, got list"):
        ops.rel_attention(q, [1, 2], v, rel)
    with pytest.raises(TypeError, match="cache_seqlens must be an int32/int64 tensor"):
        ops.rel_attention_with_kvcache(q, k, v, rel, cache_seqlens=None)


def test_attention_without_keys_returns_empty():
    """Tk = 0 (so Tq = 0): the reference used to fail in amax; both paths return the empty output."""
    q = torch.randn(1, 2, 0, 4, dtype=torch.float16)
    for fn in (ops.rel_attention, reference.rel_attention):
        assert fn(q, q, q).shape == (1, 2, 0, 4)


# ---- enigma_fast.nn.RelativeMultiHeadAttention ----


def _manual_mha(m, x, memory=None, key_start=None):
    d, H, D = m.d_model, m.n_head, m.head_dim
    w, b = m.qkv.weight, m.qkv.bias
    src = x if memory is None else memory
    q = (x @ w[:d].T + b[:d]).view(x.shape[0], x.shape[1], H, D).transpose(1, 2)
    k = (src @ w[d : 2 * d].T + b[d : 2 * d]).view(src.shape[0], src.shape[1], H, D).transpose(1, 2)
    v = (src @ w[2 * d :].T + b[2 * d :]).view(src.shape[0], src.shape[1], H, D).transpose(1, 2)
    y = reference.rel_attention(q, k, v, m.rel_emb, causal=m.causal, key_start=key_start)
    return m.out(y.transpose(1, 2).reshape(x.shape))


def test_module_self_and_cross_attention():
    from enigma_fast.nn import RelativeMultiHeadAttention

    m = RelativeMultiHeadAttention(48, 4, max_rel_pos=6, causal=True).double()
    assert m.rel_emb.shape == (4, 11, 12)
    x = torch.randn(2, 17, 48, dtype=torch.float64)
    ks = torch.tensor([0, 5])
    assert_close(m(x, key_start=ks), _manual_mha(m, x, key_start=ks))
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    cross = RelativeMultiHeadAttention(48, 4, max_rel_pos=6, causal=False).double()
    mem = torch.randn(2, 23, 48, dtype=torch.float64)
    assert_close(cross(x, mem), _manual_mha(cross, x, mem))


def test_module_kv_cache_decode_matches_full():
    from enigma_fast.nn import KVCache, RelativeMultiHeadAttention

    m = RelativeMultiHeadAttention(32, 2, max_rel_pos=4, causal=True).double().eval()
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    full = m(x)
    cache = KVCache.allocate(2, 2, 16, 16, dtype=torch.float64, device="cpu")
    outs = []
    for t0, t1 in [(0, 4)] + [(t, t + 1) for t in range(4, 12)]:
        outs.append(m(x[:, t0:t1], cache=cache))
        cache.seqlens += t1 - t0
    assert_close(torch.cat(outs, dim=1), full)


def test_module_dropout_uses_reference_in_training_only():
    from enigma_fast.nn import RelativeMultiHeadAttention

    m = RelativeMultiHeadAttention(32, 2, max_rel_pos=4, causal=True, dropout=0.5).double()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    torch.manual_seed(1)
    a = m(x)
    torch.manual_seed(2)
    b = m(x)
    assert not torch.allclose(a, b)  # dropout active in training
    m.eval()
    assert_close(m(x), _manual_mha(m, x))


def test_backend_info_reports_attention():
    info = _extension.backend_info()["ops"]
    for name in ("rel_attention", "rel_attention_with_kvcache"):
        assert info[name]["cpu"].startswith("compiled") == HAS_KERNEL


def test_cuda_matches_reference(cuda_device):
    # CUDA tensors run the reference until a CUDA kernel registers these op names, then the kernel: same results.
    q, k, v, rel = (t.to(cuda_device) for t in make_inputs(2, 2, 37, 70, 32, 9, dtype=torch.float32))
    ks = torch.tensor([0, 20], device=cuda_device)
    out = ops.rel_attention(q, k, v, rel, causal=True, key_start=ks)
    want = reference.rel_attention(q.double(), k.double(), v.double(), rel.double(), causal=True, key_start=ks)
    assert_close(out, want, dtype=torch.float32, scale=10)
    kc, vc = torch.zeros(2, 2, 80, 32, device=cuda_device), torch.zeros(2, 2, 80, 32, device=cuda_device)
    seqlens = torch.tensor([3, 50], dtype=torch.int32, device=cuda_device)
    got = ops.rel_attention_with_kvcache(
        q[:, :, :1], kc, vc, rel, cache_seqlens=seqlens, k_new=k[:, :, :1], v_new=v[:, :, :1]
    )
    kr, vr = torch.zeros_like(kc), torch.zeros_like(vc)
    want = reference.rel_attention_with_kvcache(
        q[:, :, :1], kr, vr, rel, cache_seqlens=seqlens, k_new=k[:, :, :1], v_new=v[:, :, :1]
    )
    assert_close(got, want, dtype=torch.float32, scale=10)
    assert torch.equal(kc, kr)
