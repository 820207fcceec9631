"""Tests of the CUDA relative-position attention kernels against the reference (float64 on the same device).

The same pairwise grid as tests/test_attention.py, on CUDA: float32 against the float64 reference; bfloat16 and
float16 by FlashAttention's rule, the kernel's error against an exact reference at most twice the error of PyTorch
doing the same math in that dtype (matmuls and softmax in 16 bits, as models run it). Plus decode against prefill
step by step with NaN-poisoned cache slots, the split over keys of a long cache, a CUDA-graph captured decode step,
chunked prefill into a cache, bitwise-deterministic backward, opcheck and torch.compile. Every test needs a GPU
and skips at run time without one (nothing here touches the GPU at import or collection).
"""

from __future__ import annotations

import pytest
import torch
from test_attention import CASES, _case_id, _key_start, make_inputs
from tolerances import assert_close

from enigma_fast import _extension, ops, reference

pytestmark = pytest.mark.cuda
HAS_CUDA_KERNEL = _extension.has_kernel("rel_attention", "cuda", torch.bfloat16)
needs_kernel = pytest.mark.skipif(not HAS_CUDA_KERNEL, reason="the extension was built without CUDA kernels")
LOW = [torch.bfloat16, torch.float16]


def _poison_allocator(like: list[torch.Tensor]) -> None:
    """Hand the caching allocator NaN-filled blocks of the sizes the op allocates next (outputs, grads), so that an
    element a kernel forgets to write shows up as NaN."""
    blocks = [torch.full_like(t, float("nan"), memory_format=torch.contiguous_format) for t in like]
    del blocks


def _grads(out, leaves, g):
    return torch.autograd.grad(out, [t for t in leaves if t is not None], g)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def _lowp_torch(q, k, v, rel, causal, key_start, scale=None):
    """The reference math written in the inputs' dtype (16-bit matmuls and softmax): PyTorch's same-dtype error."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    scale = D**-0.5 if scale is None else scale
    pos = Tk - Tq + torch.arange(Tq, device=q.device)
    j = torch.arange(Tk, device=q.device)
    s = q @ k.transpose(-1, -2)
    if rel is not None:
        P = (rel.shape[1] + 1) // 2
        r = (j.view(1, -1) - pos.view(-1, 1)).clamp(-(P - 1), P - 1) + (P - 1)
        s = s + torch.gather(q @ rel.transpose(-1, -2).unsqueeze(0), -1, r.expand(B, H, Tq, Tk))
    masked = torch.zeros(B, Tq, Tk, dtype=torch.bool, device=q.device)
    if causal:
        masked = masked | (j.view(1, 1, -1) > pos.view(1, -1, 1))
    if key_start is not None:
        masked = masked | (j.view(1, 1, -1) < key_start.view(B, 1, 1))
    s = (s * scale).masked_fill(masked.unsqueeze(1), float("-inf"))
    p = torch.softmax(s.float(), dim=-1).nan_to_num(0.0).to(q.dtype)  # all-masked rows: zeros, like the op
    return p @ v


def _case_inputs(case, device, dtype=torch.float64):
    """The CPU test's inputs on ``device``; strided cases stay views of fused projections there too."""
    B, H, D = case["B"], case["H"], case["D"]
    Tq, Tk = case["T"]
    P = max(1, Tk // 4) if case["P"] == "small" else Tk + 5
    q, k, v, rel = make_inputs(B, H, Tq, Tk, D, P, rel=case["rel"], dtype=dtype)
    q, k, v = q.to(device), k.to(device), v.to(device)
    if case["strided"]:
        q = torch.randn(B, Tq, H, D + 3, dtype=dtype, device=device)[..., :D].transpose(1, 2)
        kv = torch.randn(B, Tk, 2, H, D, dtype=dtype, device=device)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    rel = rel.to(device) if rel is not None else None
    ks = _key_start(B, Tk).to(device) if case["key_start"] else None
    return q, k, v, rel, ks


@needs_kernel
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_float32_matches_reference(case, cuda_device):
    q, k, v, rel, ks = _case_inputs(case, cuda_device)
    exact = [t.requires_grad_() for t in (q, k, v, rel) if t is not None]
    want = reference.rel_attention(q, k, v, rel, causal=case["causal"], key_start=ks)
    g = torch.randn_like(want)
    want_grads = _grads(want, exact, g)
    low = [t.detach().float().requires_grad_() for t in exact]
    qf, kf, vf = low[:3]
    rf = low[3] if rel is not None else None
    _poison_allocator([qf, qf, kf, vf])
    out = ops.rel_attention(qf, kf, vf, rf, causal=case["causal"], key_start=ks)
    assert out.shape == q.shape and out.is_contiguous() and out.dtype == torch.float32
    # float32 table tolerance x 10: the kernels use the fast exp2/exp of --use_fast_math.
    assert_close(out, want, dtype=torch.float32, scale=10)
    for got, w in zip(_grads(out, low, g.float()), want_grads, strict=True):
        assert_close(got, w, dtype=torch.float32, scale=10)


def _check_low(q, k, v, rel, ks, causal, dtype):
    """Kernel error <= 2x PyTorch's same-dtype error, both against the float64 reference, for out and every grad."""
    exact = [t.requires_grad_() for t in (q, k, v, rel) if t is not None]
    want = reference.rel_attention(q, k, v, rel, causal=causal, key_start=ks)
    g = torch.randn_like(want)
    want_all = [want, *_grads(want, exact, g)]
    low_pt = [t.detach().to(dtype).requires_grad_() for t in exact]
    low_k = [t.detach().to(dtype).requires_grad_() for t in exact]
    split = lambda xs: (*xs[:3], xs[3] if rel is not None else None)  # noqa: E731
    out_pt = _lowp_torch(*split(low_pt), causal, ks)
    pt_all = [out_pt, *_grads(out_pt, low_pt, g.to(dtype))]
    _poison_allocator(low_k[:1] + low_k)
    out_k = ops.rel_attention(*split(low_k), causal=causal, key_start=ks)
    k_all = [out_k, *_grads(out_k, low_k, g.to(dtype))]
    for name, w, pt, kk in zip(["out", "dq", "dk", "dv", "drel"][: len(k_all)], want_all, pt_all, k_all, strict=True):
        assert kk.dtype == dtype and torch.isfinite(kk).all(), name
        assert _max_err(kk, w) <= 2 * _max_err(pt, w) + 1e-6, (name, _max_err(kk, w), _max_err(pt, w))


@needs_kernel
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_16bit_error_within_twice_pytorch(case, dtype, cuda_device):
    q, k, v, rel, ks = _case_inputs(case, cuda_device)
    _check_low(q, k, v, rel, ks, case["causal"], dtype)


@needs_kernel
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("D", [32, 64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_16bit_head_dims_long(D, causal, dtype, cuda_device):
    # Several query and key tiles, a partial last tile, P shorter than the sequence, left padding.
    q, k, v, rel = (t.to(cuda_device) for t in make_inputs(2, 3, 333, 400, D, 150))
    ks = torch.tensor([0, 77], device=cuda_device)
    _check_low(q, k, v, rel, ks, causal, dtype)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_backward_is_deterministic(dtype, cuda_device):
    q, k, v, rel = (t.to(cuda_device, dtype).requires_grad_() for t in make_inputs(3, 2, 200, 260, 64, 100))
    g = torch.randn(3, 2, 200, 64, device=cuda_device, dtype=dtype)
    first = _grads(ops.rel_attention(q, k, v, rel, causal=True), (q, k, v, rel), g)
    for _ in range(2):
        again = _grads(ops.rel_attention(q, k, v, rel, causal=True), (q, k, v, rel), g)
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def _nan_cache(B, H, Tmax, D, dtype, device):
    return (torch.full((B, H, Tmax, D), float("nan"), dtype=dtype, device=device) for _ in range(2))


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("D", [32, 64, 128])
def test_decode_matches_prefill_step_by_step(D, dtype, cuda_device):
    B, H, T, Tmax, prompt = 2, 3, 90, 100, 40  # a 40-token prompt takes the tile kernel for 16-bit inputs
    q, k, v, rel = (t.to(cuda_device) for t in make_inputs(B, H, T, T, D, 30))
    ks = torch.tensor([0, 3], device=cuda_device)
    want = reference.rel_attention(q, k, v, rel, causal=True, key_start=ks)
    want_pt = _lowp_torch(*(t.to(dtype) for t in (q, k, v, rel)), True, ks) if dtype != torch.float32 else None
    k_cache, v_cache = _nan_cache(B, H, Tmax, D, dtype, cuda_device)  # unwritten slots must not leak
    seqlens = torch.zeros(B, dtype=torch.int32, device=cuda_device)
    t = 0
    while t < T:
        n = prompt if t == 0 else 1
        sl = slice(t, t + n)
        out = ops.rel_attention_with_kvcache(
            q[:, :, sl].to(dtype),
            k_cache,
            v_cache,
            rel.to(dtype),
            cache_seqlens=seqlens,
            k_new=k[:, :, sl].to(dtype),
            v_new=v[:, :, sl].to(dtype),
            key_start=ks,
        )
        if dtype == torch.float32:
            assert_close(out, want[:, :, sl], dtype=dtype, scale=10)
        else:
            assert _max_err(out, want[:, :, sl]) <= 2 * _max_err(want_pt[:, :, sl], want[:, :, sl]) + 1e-6
        seqlens += n
        t += n
    assert torch.equal(k_cache[:, :, :T], k.to(dtype)) and torch.equal(v_cache[:, :, :T], v.to(dtype))
    assert torch.isnan(k_cache[:, :, T:]).all()


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("B,L", [(1, 5000), (3, 1037)])
def test_decode_split_over_keys(B, L, dtype, cuda_device):
    H, D, Tmax = 2, 64, 5200
    q, k, v, rel = (t.to(cuda_device, dtype) for t in make_inputs(B, H, 1, Tmax, D, 700, dtype=torch.float32))
    seqlens = torch.tensor([L - 10 * b for b in range(B)], dtype=torch.int64, device=cuda_device)
    k_new, v_new = (torch.randn(B, H, 1, D, device=cuda_device, dtype=dtype) for _ in range(2))
    kc, vc = k.clone(), v.clone()
    out = ops.rel_attention_with_kvcache(q, kc, vc, rel, cache_seqlens=seqlens, k_new=k_new, v_new=v_new)
    kr, vr = k.double(), v.double()
    want = reference.rel_attention_with_kvcache(
        q.double(), kr, vr, rel.double(), cache_seqlens=seqlens, k_new=k_new.double(), v_new=v_new.double()
    )
    assert_close(out, want, dtype=dtype, scale=10 if dtype == torch.float32 else 1)
    assert torch.equal(kc.double(), kr) and torch.equal(vc.double(), vr)


@needs_kernel
def test_decode_step_captured_in_cuda_graph(cuda_device):
    B, H, D, Tmax, dtype = 4, 2, 64, 3000, torch.bfloat16
    k_cache, v_cache = (torch.randn(B, H, Tmax, D, device=cuda_device, dtype=dtype) for _ in range(2))
    rel = torch.randn(H, 255, D, device=cuda_device, dtype=dtype)
    seqlens = torch.tensor([5, 900, 2000, 2500], dtype=torch.int32, device=cuda_device)
    q, k_new, v_new = (torch.zeros(B, H, 1, D, device=cuda_device, dtype=dtype) for _ in range(3))

    def step():
        return ops.rel_attention_with_kvcache(q, k_cache, v_cache, rel, cache_seqlens=seqlens, k_new=k_new, v_new=v_new)

    stream = torch.cuda.Stream(cuda_device)
    stream.wait_stream(torch.cuda.current_stream(cuda_device))
    with torch.cuda.stream(stream):
        step()  # warm-up outside the capture (allocator, kernel attributes)
    torch.cuda.current_stream(cuda_device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    kc_ref, vc_ref = k_cache.clone(), v_cache.clone()
    for _ in range(3):
        for t in (q, k_new, v_new):
            t.copy_(torch.randn_like(t))
        sl = seqlens.clone()
        graph.replay()
        want = reference.rel_attention_with_kvcache(q, kc_ref, vc_ref, rel, cache_seqlens=sl, k_new=k_new, v_new=v_new)
        assert_close(out, want, dtype=dtype)
        assert torch.equal(k_cache, kc_ref) and torch.equal(v_cache, vc_ref)
        seqlens.add_(1)  # the next replay reads the new lengths on the device


@needs_kernel
def test_kvcache_without_new_tokens(cuda_device):
    q, k, v, rel = (t.to(cuda_device, torch.float32) for t in make_inputs(2, 2, 20, 64, 32, 9, dtype=torch.float32))
    seqlens = torch.tensor([64, 41], device=cuda_device)
    for dtype in (torch.float32, torch.bfloat16):
        args = [t.to(dtype) for t in (q, k, v, rel)]
        out = ops.rel_attention_with_kvcache(*args, cache_seqlens=seqlens)
        want = reference.rel_attention_with_kvcache(*(t.double() for t in args), cache_seqlens=seqlens)
        assert_close(out, want, dtype=dtype, scale=10 if dtype == torch.float32 else 1)


@needs_kernel
def test_opcheck_and_compile(cuda_device):
    q, k, v, rel = (t.to(cuda_device, torch.bfloat16) for t in make_inputs(2, 2, 37, 70, 32, 9))
    ks = torch.tensor([0, 4], device=cuda_device)
    for r, key_start, causal in [(rel, ks, True), (None, None, False)]:
        args = (q, k, v, r, key_start, causal, 0.5)
        torch.library.opcheck(torch.ops.enigma_fast.rel_attention_fwd.default, args)
        out, lse = torch.ops.enigma_fast.rel_attention_fwd(*args)
        dout = torch.randn_like(out)
        torch.library.opcheck(
            torch.ops.enigma_fast.rel_attention_bwd.default, (dout, q, k, v, r, key_start, out, lse, causal, 0.5)
        )
    kc, vc = (torch.randn(2, 2, 80, 32, device=cuda_device, dtype=q.dtype) for _ in range(2))
    seqlens = torch.tensor([3, 7], dtype=torch.int32, device=cuda_device)
    torch.library.opcheck(
        torch.ops.enigma_fast.rel_attention_kvcache.default,
        (q[:, :, :2], kc, vc, rel, seqlens, k[:, :, :2].contiguous(), v[:, :, :2].contiguous(), ks, 0.5),
    )

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(q, k, v, rel):
        return ops.rel_attention(q * 2, k, v, rel, causal=True, key_start=ks)

    leaves = [t.detach().requires_grad_() for t in (q, k, v, rel)]
    got = f(*leaves)
    want = ops.rel_attention(leaves[0] * 2, *leaves[1:], causal=True, key_start=ks)
    assert torch.equal(got, want)


@needs_kernel
def test_strided_index_vectors(cuda_device):
    # key_start / cache_seqlens views with stride 2 are read like their contiguous copies.
    q, k, v, rel = (t.to(cuda_device, torch.bfloat16) for t in make_inputs(2, 2, 40, 50, 64, 9))
    ks = torch.tensor([0, 99, 7, 99], device=cuda_device)[::2]
    out = ops.rel_attention(q, k, v, rel, causal=True, key_start=ks)
    assert torch.equal(out, ops.rel_attention(q, k, v, rel, causal=True, key_start=ks.contiguous()))
    seqlens = torch.tensor([50, 0, 33, 0], dtype=torch.int32, device=cuda_device)[::2]
    got = ops.rel_attention_with_kvcache(q[:, :, :3], k, v, rel, cache_seqlens=seqlens, key_start=ks)
    want = ops.rel_attention_with_kvcache(
        q[:, :, :3], k, v, rel, cache_seqlens=seqlens.contiguous(), key_start=ks.contiguous()
    )
    assert torch.equal(got, want)
