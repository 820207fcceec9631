"""Fused RMSNorm: values and gradients against the float64 reference, autograd, opcheck, compile, the drop-in
module, errors on bad input. CUDA cases skip without a GPU."""

from __future__ import annotations

import pytest
import torch

from enigma_fast import _extension, nn, ops, reference
from tests.conftest import devices
from tests.tolerances import TOL

needs_ext = pytest.mark.skipif(_extension.EXTENSION is None, reason="compiled extension not built")

SHAPES = [(1, 1), (1, 7), (3, 129), (2, 5, 384), (64, 1024), (2, 4099), (3, 8192), (1, 3, 40000)]


def _dtypes(device: str) -> list[torch.dtype]:
    return [torch.float32, torch.bfloat16, torch.float64] + ([torch.float16] if device == "cuda" else [])


def _poison(device: str, numel: int) -> None:
    """Fill freed memory with NaN so an output element the kernel never writes shows up as NaN."""
    t = torch.full((numel * 2,), float("nan"), device=device)
    del t


def _inputs(shape, dtype, device, weight=True, residual=False):
    x = torch.randn(shape, dtype=dtype, device=device)
    w = (torch.rand(shape[-1], dtype=dtype, device=device) + 0.5) if weight else None
    r = torch.randn(shape, dtype=dtype, device=device) if residual else None
    return x, w, r


def _grad_tol(dtype: torch.dtype) -> float:
    # Gradients pass through a row reduction and (for dweight) a sum over rows: allow more than the forward.
    return {torch.float64: 1.0, torch.float32: 10.0, torch.bfloat16: 2.0, torch.float16: 4.0}[dtype]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("weight", [True, False], ids=["w", "no_w"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "add"])
def test_forward_backward_matches_float64_reference(cpu_level, device, shape, weight, residual):
    for dtype in _dtypes(device):
        x, w, r = _inputs(shape, dtype, device, weight, residual)
        leaves = [t for t in (x, r, w) if t is not None]
        ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
        for t in leaves:
            t.requires_grad_()
        xr, rr, wr = (ref_leaves.pop(0), ref_leaves.pop(0) if residual else None, ref_leaves.pop(0) if weight else None)
        eps = 1e-5
        _poison(device, x.numel())
        if residual:
            y, h = ops.add_rms_norm(x, r, w, eps)
            y_ref, h_ref = reference.add_rms_norm(xr, rr, wr, eps)
            # h is rounded to dtype first, exactly as the op does it.
            torch.testing.assert_close(h, (x.detach() + r.detach()))
        else:
            y = ops.rms_norm(x, w, eps)
            y_ref = reference.rms_norm(xr, wr, eps)
        assert y.dtype == dtype and y.shape == x.shape
        atol, rtol = TOL[dtype]
        if residual and dtype != torch.float64:
            # The op normalises h rounded to dtype; compare against the reference on that same h.
            y_ref = reference.rms_norm((x.detach() + r.detach()).double(), None if wr is None else wr, eps)
        torch.testing.assert_close(y.double(), y_ref.detach(), atol=atol, rtol=rtol)

        dy = torch.randn_like(y)
        outs = (y, h) if residual else (y,)
        ref_outs = (y_ref, h_ref) if residual else (y_ref,)
        dh = torch.randn_like(y) if residual else None
        grads = torch.autograd.grad(outs, [t for t in (x, r, w) if t is not None], (dy, dh) if residual else (dy,))
        ref_in = [t for t in (xr, rr, wr) if t is not None]
        if residual and dtype != torch.float64:
            # Reference gradient through the rounded h: d/dx = d/dh.
            hd = (x.detach() + r.detach()).double().requires_grad_()
            wd = wr
            yy = reference.rms_norm(hd, wd, eps)
            g = torch.autograd.grad((yy, hd), [hd] + ([wd] if wd is not None else []), (dy.double(), dh.double()))
            ref_grads = [g[0], g[0]] + ([g[1]] if wd is not None else [])
        else:
            ref_grads = torch.autograd.grad(
                ref_outs, ref_in, (dy.double(), dh.double()) if residual else (dy.double(),), allow_unused=True
            )
        s = _grad_tol(dtype)
        for got, want in zip(grads, ref_grads, strict=True):
            scale = max(1.0, want.abs().max().item())
            torch.testing.assert_close(got.double(), want, atol=atol * s * scale, rtol=rtol * s)


@needs_ext
@pytest.mark.parametrize("device", devices())
def test_gradcheck_float64(cpu_level, device):
    x = torch.randn(3, 2, 17, dtype=torch.float64, device=device, requires_grad=True)
    r = torch.randn(3, 2, 17, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(17, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: ops.rms_norm(x, w, 1e-5), (x, w))
    assert torch.autograd.gradcheck(lambda x, r, w: ops.add_rms_norm(x, r, w, 1e-5), (x, r, w))
    assert torch.autograd.gradcheck(lambda x: ops.rms_norm(x, None, 1e-5), (x,))


@needs_ext
@pytest.mark.parametrize("device", devices())
def test_opcheck(device):
    for dtype in (torch.float32, torch.float64):
        x, w, r = _inputs((4, 33), dtype, device, residual=True)
        x.requires_grad_()
        w.requires_grad_()
        r.requires_grad_()
        torch.library.opcheck(torch.ops.enigma_fast.rms_norm_fwd, (x, w, 1e-6))
        torch.library.opcheck(torch.ops.enigma_fast.rms_norm_fwd, (x, None, 1e-6))
        torch.library.opcheck(torch.ops.enigma_fast.add_rms_norm_fwd, (x, r, w, 1e-6))
        y, rstd = torch.ops.enigma_fast.rms_norm_fwd(x.detach(), w.detach(), 1e-6)
        dy, dh = torch.randn_like(y), torch.randn_like(y)
        torch.library.opcheck(torch.ops.enigma_fast.rms_norm_bwd, (dy, x.detach(), w.detach(), rstd, dh, True))
        torch.library.opcheck(torch.ops.enigma_fast.rms_norm_bwd, (dy, x.detach(), None, rstd, None, False))


@needs_ext
def test_torch_compile_fullgraph_matches_eager():
    def block(x, r, w1, w2):
        y, h = ops.add_rms_norm(x, r, w1, 1e-6)
        return ops.rms_norm(y * 2.0 + h, w2, 1e-6).sum(-1)

    args = [torch.randn(4, 8, 64), torch.randn(4, 8, 64), torch.rand(64) + 0.5, torch.rand(64) + 0.5]
    eager_args = [a.clone().requires_grad_() for a in args]
    comp_args = [a.clone().requires_grad_() for a in args]
    compiled = torch.compile(block, fullgraph=True, backend="inductor")
    out_e, out_c = block(*eager_args), compiled(*comp_args)
    torch.testing.assert_close(out_c, out_e)
    out_e.sum().backward()
    out_c.sum().backward()
    for a, b in zip(comp_args, eager_args, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


@needs_ext
def test_strided_rows_read_in_place(cpu_level):
    # q/k/v-style slice of a wider projection: rows 3*N apart, last dimension contiguous.
    big = torch.randn(6, 3 * 96)
    x = big[:, 96:192]
    w = torch.rand(96) + 0.5
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-6), reference.rms_norm(x.contiguous(), w, 1e-6))
    x3 = torch.randn(2, 5, 3 * 40)[..., :40]
    torch.testing.assert_close(ops.rms_norm(x3, w[:40].contiguous(), 1e-6), reference.rms_norm(x3, w[:40], 1e-6))


@needs_ext
def test_dweight_deterministic_across_thread_counts(cpu_level):
    x = torch.randn(777, 300, requires_grad=True)
    w = torch.rand(300, requires_grad=True)
    dy = torch.randn(777, 300)
    prev = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, prev):
            torch.set_num_threads(threads)
            gx, gw = torch.autograd.grad(ops.rms_norm(x, w, 1e-6), (x, w), dy)
            results.append((gx, gw))
    finally:
        torch.set_num_threads(prev)
    for gx, gw in results[1:]:
        assert torch.equal(gx, results[0][0]) and torch.equal(gw, results[0][1])


def test_zero_rows_and_weight_grad_only():
    x = torch.randn(0, 16)
    w = torch.ones(16, requires_grad=True)
    y = ops.rms_norm(x, w, 1e-6)
    assert y.shape == (0, 16)
    (gw,) = torch.autograd.grad(y.sum(), (w,))
    assert torch.equal(gw, torch.zeros(16))


@needs_ext
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: (torch.randn(4, 8), torch.ones(7)), r"weight must be \(8,\)"),
        (lambda: (torch.randn(4, 8), torch.ones(2, 4)), r"weight must be \(8,\)"),
        (lambda: (torch.randint(0, 5, (4, 8)), None), "must be float32, bfloat16 or float64"),
        (lambda: (torch.randn(4, 8), torch.ones(8, dtype=torch.float64)), "weight must have the same dtype"),
        (lambda: (torch.randn(8, 4).t(), None), "contiguous last dimension"),
        (lambda: (torch.randn(4, 0), None), "must be non-empty"),
    ],
)
def test_bad_input_raises_clear_error(make, match):
    x, w = make()
    with pytest.raises(RuntimeError, match=match):
        torch.ops.enigma_fast.rms_norm_fwd(x, w, 1e-6)


@needs_ext
def test_bad_residual_and_eps():
    x = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="residual must have the shape of x"):
        torch.ops.enigma_fast.add_rms_norm_fwd(x, torch.randn(4, 9), None, 1e-6)
    with pytest.raises(RuntimeError, match="eps must be >= 0"):
        torch.ops.enigma_fast.rms_norm_fwd(x, None, -1.0)


@needs_ext
@pytest.mark.cuda
def test_mismatched_devices_raise(cuda_device):
    x = torch.randn(4, 8, device=cuda_device)
    with pytest.raises(RuntimeError, match="weight must be on the same device"):
        torch.ops.enigma_fast.rms_norm_fwd(x, torch.ones(8), 1e-6)


def test_float16_on_cpu_uses_reference():
    x = torch.randn(3, 10, dtype=torch.float16)
    w = torch.ones(10, dtype=torch.float16)
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-6), reference.rms_norm(x, w, 1e-6))


# ---------------------------------------------------------------------------------------------------------------
# one check for both paths (issue 11): the reference fallback rejects what the kernels reject, with the same words
# ---------------------------------------------------------------------------------------------------------------
NOT_FLOAT = [torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool, torch.complex64]


@pytest.mark.parametrize("dtype", NOT_FLOAT, ids=str)
@pytest.mark.parametrize("fn", ["ops", "reference"])
def test_non_float_input_raises_type_error(dtype, fn):
    """Integer, bool and complex inputs have no kernel: they used to run the reference and return garbage of the
    input dtype (torch's own rms_norm raises). Now a one-line TypeError naming x, on every path."""
    mod = ops if fn == "ops" else reference
    x = torch.ones(3, 8, dtype=dtype)
    w = torch.ones(8, dtype=dtype)
    match = r"^(add_)?rms_norm: x must be float16, bfloat16, float32 or float64, got " + str(dtype)[6:] + "$"
    with pytest.raises(TypeError, match=match):
        mod.rms_norm(x, w, 1e-6)
    with pytest.raises(TypeError, match=match):
        mod.add_rms_norm(x, x.clone(), None, 1e-6)


def _error(fn, *args) -> tuple[type, str]:
    with pytest.raises((ValueError, TypeError)) as info:
        fn(*args)
    return type(info.value), str(info.value)


BAD_FOR_EVERY_DTYPE = [
    ("weight too short", lambda d: (torch.randn(4, 8, dtype=d), torch.ones(1, dtype=d), 1e-6)),
    ("weight 2-d", lambda d: (torch.randn(4, 8, dtype=d), torch.ones(4, 8, dtype=d), 1e-6)),
    ("weight strided", lambda d: (torch.randn(4, 8, dtype=d), torch.ones(16, dtype=d)[::2], 1e-6)),
    ("eps < 0", lambda d: (torch.randn(4, 8, dtype=d), None, -1e-3)),
    ("eps nan", lambda d: (torch.randn(4, 8, dtype=d), None, float("nan"))),
    ("eps not a number", lambda d: (torch.randn(4, 8, dtype=d), None, "1e-6")),
    ("x 0-d", lambda d: (torch.randn((), dtype=d), None, 1e-6)),
    ("x last dim empty", lambda d: (torch.randn(4, 0, dtype=d), None, 1e-6)),
    ("x last dim strided", lambda d: (torch.randn(8, 4, dtype=d).t(), None, 1e-6)),
    ("x rows overlap", lambda d: (torch.randn(1, 8, dtype=d).expand(4, 8), None, 1e-6)),
]


@pytest.mark.parametrize("name,make", BAD_FOR_EVERY_DTYPE, ids=[b[0] for b in BAD_FOR_EVERY_DTYPE])
def test_float16_cpu_reference_rejects_what_the_kernel_rejects(name, make):
    """float16 on the CPU runs the reference: it used to broadcast a wrong weight shape and accept eps < 0. Now it
    raises the same error, with the same message, as the float32 kernel path."""
    want = _error(ops.rms_norm, *make(torch.float32))
    assert _error(ops.rms_norm, *make(torch.float16)) == want
    assert _error(reference.rms_norm, *make(torch.float16)) == want
    assert _error(reference.rms_norm, *make(torch.float32)) == want
    x, w, eps = make(torch.float16)
    assert _error(ops.add_rms_norm, x, torch.zeros_like(x), w, eps)[0] is want[0]


def test_float16_cpu_residual_and_weight_dtype_checked():
    x = torch.randn(4, 8, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"add_rms_norm: residual must have the shape of x \(4, 8\), got \(4, 1\)"):
        ops.add_rms_norm(x, torch.randn(4, 1, dtype=torch.float16), None, 1e-6)
    with pytest.raises(TypeError, match=r"residual must have the same dtype as x \(float16\), got float32"):
        ops.add_rms_norm(x, torch.randn(4, 8), None, 1e-6)
    with pytest.raises(TypeError, match=r"weight must have the same dtype as x \(float16\), got float32"):
        ops.rms_norm(x, torch.ones(8), 1e-6)


def test_errors_stay_runtime_errors_for_old_callers():
    """The checks raise ValueError/TypeError that are also RuntimeError, the type the kernels raised before."""
    with pytest.raises(RuntimeError, match="eps must be >= 0"):
        ops.rms_norm(torch.randn(2, 4), None, -1.0)
    with pytest.raises(RuntimeError, match="x must be float16"):
        ops.rms_norm(torch.ones(2, 4, dtype=torch.int64), None)


# ---------------------------------------------------------------------------------------------------------------
# drop-in module
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalized_shape", [64, (4, 16)])
@pytest.mark.parametrize("eps", [None, 1e-5])
@pytest.mark.parametrize("affine", [True, False])
def test_module_is_drop_in_for_torch_rmsnorm(normalized_shape, eps, affine):
    ours = nn.RMSNorm(normalized_shape, eps=eps, elementwise_affine=affine)
    theirs = torch.nn.RMSNorm(normalized_shape, eps=eps, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            theirs.weight.copy_(torch.rand_like(theirs.weight) + 0.5)
    # state_dict round trip both ways: same keys and shapes.
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    shape = (3, 5) + ((64,) if normalized_shape == 64 else (4, 16))
    x = torch.randn(shape)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    assert repr(ours).startswith("RMSNorm(")


def test_module_residual_form_and_mixed_dtype():
    m = nn.RMSNorm(32, eps=1e-6)
    x, r = torch.randn(2, 3, 32, dtype=torch.bfloat16), torch.randn(2, 3, 32, dtype=torch.bfloat16)
    y, h = m(x, r)
    torch.testing.assert_close(h, x + r)
    torch.testing.assert_close(y, reference.rms_norm(x + r, m.weight.detach().to(torch.bfloat16), 1e-6))
    with pytest.raises(ValueError, match="normalized_shape"):
        m(torch.randn(2, 31))
    # A transposed input (last dim not contiguous) is accepted by the module.
    xt = torch.randn(32, 4).t()
    torch.testing.assert_close(m(xt), torch.nn.functional.rms_norm(xt, (32,), m.weight.detach(), 1e-6))


def test_replace_rms_norm_in_place():
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 16), torch.nn.RMSNorm(16), torch.nn.Sequential(torch.nn.RMSNorm(16))
    )
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 16)
    before = model(x)
    weight = model[1].weight
    assert nn.replace_rms_norm(model) == 2
    assert isinstance(model[1], nn.RMSNorm) and isinstance(model[2][0], nn.RMSNorm)
    assert model[1].weight is weight  # the same parameter: optimizers keep working
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    assert nn.replace_rms_norm(model) == 0
