"""Tests of the whole-step decode (``enigma_fast.ops.decode_step`` on the CPU, and the generator's use of it).

The module path (the model's ``decode_step``, op by op) is the reference: the whole-step path must give the same
greedy tokens and logits within float32 rounding (its error against a float64 run of the module path at most a
few times the module path's own), float64 within 1e-10, the same caches, for EnBERT and Enigma's decoder (with and
without the cross-attention bias), every preset shape class, padded batches and every CPU level. A step allocates
nothing (the profiler's memory events), results do not depend on the thread count, the op passes opcheck and runs
under torch.compile(fullgraph=True), bad input raises one line naming the argument before anything is written.
"""

from __future__ import annotations

import pytest
import torch
from decode_helpers import SHAPES, VOCAB, make_model, pack_of, prompts, run_both

import enigma_fast
from enigma_fast import _extension, ops
from enigma_fast.generation import generate, stream
from enigma_fast.generation.whole_step import WholeStepDecoder, whole_step_decoder

needs_kernel = pytest.mark.skipif(
    not _extension.has_kernel("decode_step", "cpu", torch.float32), reason="the extension is not built"
)


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _compare(kind: str, shape: str, padded: bool, n_steps: int = 6, **kw) -> None:
    model = make_model(kind, shape, **kw)
    ids, lengths = prompts(3, 11, padded)
    mod, fast, cache, dec = run_both(model, ids, lengths, n_steps)
    ref, _, ref_cache, _ = run_both(make_model(kind, shape, dtype=torch.float64, **kw), ids, lengths, n_steps, None)
    # the float32 runs fed the same (greedy) tokens as the float64 one only if the module path's greedy tokens agree
    assert torch.equal(mod.argmax(-1), ref.argmax(-1)), "float32 and float64 module paths disagree on a token"
    assert torch.equal(fast.argmax(-1), mod.argmax(-1))
    e_fast, e_mod = _err(fast, ref), _err(mod, ref)
    assert e_fast <= 4 * e_mod + 1e-6 * ref.abs().max().item(), (e_fast, e_mod)
    n = int(cache["seqlens"].max())
    for layer, (kv, rkv) in enumerate(zip(cache["layers"], ref_cache["layers"], strict=True)):
        for got, mine, want in ((dec.k_cache[layer], kv.k, rkv.k), (dec.v_cache[layer], kv.v, rkv.v)):
            got, mine, want = got[:, :, :n], mine[:, :, :n], want[:, :, :n]
            assert _err(got, want) <= 4 * _err(mine, want) + 1e-6 * want.abs().max().item(), layer
    assert torch.equal(dec.seqlens, cache["seqlens"])


@needs_kernel
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_whole_step_equals_module_path(kind, shape):
    _compare(kind, shape, padded=False)


@needs_kernel
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_padded_batches_every_level(kind, cpu_level):
    _compare(kind, "tiny", padded=True)


@needs_kernel
@pytest.mark.parametrize(
    "kind, kw",
    [("enbert", {"bias": False}), ("enigma", {"bias": False}), ("enigma", {"cross_rel_pos": 0})],
    ids=["enbert-nobias", "enigma-nobias", "enigma-no-cross-bias"],
)
def test_variants(kind, kw):
    _compare(kind, "odd", padded=True, **kw)


@needs_kernel
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_float64_matches_module_path_tightly(kind, cpu_level):
    model = make_model(kind, "odd", dtype=torch.float64)
    ids, lengths = prompts(2, 9, padded=True)
    mod, fast, cache, dec = run_both(model, ids, lengths, 5)
    torch.testing.assert_close(fast, mod, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(dec.k_cache[-1], cache["layers"][-1].k, atol=1e-12, rtol=1e-12)


@needs_kernel
def test_logits_depend_on_the_context():
    """The random models are not near-constant: another first prompt token changes the last step's logits."""
    model = make_model("enbert", "tiny")
    ids, _ = prompts(2, 11, padded=False)
    other = ids.clone()
    other[:, 0] = (other[:, 0] + 1) % VOCAB
    _, a, _, _ = run_both(model, ids, None, 3, tokens_from=torch.zeros(2, 3, dtype=torch.long))
    _, b, _, _ = run_both(model, other, None, 3, tokens_from=torch.zeros(2, 3, dtype=torch.long))
    assert _err(a[-1], b[-1]) > 1e-2


@needs_kernel
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_generate_same_tokens_both_paths(kind, cpu_level):
    model = make_model(kind, "tiny")
    ids, lengths = prompts(4, 13, padded=True)
    for kw in ({"temperature": 0.0}, {"temperature": 0.9, "seed": 3}, {"top_k": 5, "top_p": 0.8, "seed": 4}):
        a = generate(model, ids, 20, prompt_lengths=lengths, decode_path="module", **kw)
        b = generate(model, ids, 20, prompt_lengths=lengths, decode_path="whole_step", **kw)
        c = generate(model, ids, 20, prompt_lengths=lengths, **kw)  # auto: the whole-step path
        assert torch.equal(a, b) and torch.equal(b, c), kw


@needs_kernel
def test_generate_eos_and_stream_on_whole_step():
    model = make_model("enbert", "tiny")
    ids, _ = prompts(3, 6, padded=False)
    free = generate(model, ids, 15, temperature=0.0, decode_path="module")
    eos = int(free[0, 8])
    a = generate(model, ids, 15, temperature=0.0, eos_id=eos, pad_id=1, decode_path="module")
    b = generate(model, ids, 15, temperature=0.0, eos_id=eos, pad_id=1, decode_path="whole_step")
    assert torch.equal(a, b)
    steps = list(stream(model, ids, 15, temperature=0.0, decode_path="whole_step"))
    assert torch.equal(torch.stack(steps, 1), free[:, 6:])


def test_decode_path_choice():
    model = make_model("enbert", "tiny")
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="decode_path must be one of"):
        whole_step_decoder(model, 1, 8, 4, cpu, torch.float32, "fast")
    assert whole_step_decoder(model, 1, 8, 4, cpu, torch.float32, "module") is None
    assert whole_step_decoder(model, 1, 8, 4, cpu, torch.float32, "auto", compile=True) is None
    with pytest.raises(ValueError, match="decode_path='whole_step': no whole-step kernel for torch.bfloat16"):
        whole_step_decoder(model, 1, 8, 4, cpu, torch.bfloat16, "whole_step")
    model.train()
    with pytest.raises(ValueError, match="training mode with dropout"):
        model.config.dropout = 0.1
        whole_step_decoder(model, 1, 8, 4, cpu, torch.float32, "whole_step")
    with pytest.raises(ValueError, match="decode_path must be one of"):
        generate(model.eval(), torch.zeros(1, 3, dtype=torch.long), 2, decode_path="native")


@needs_kernel
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_hooks_and_foreign_modules_take_the_module_path(kind):
    """A forward hook (here one that forbids token 5) or a module of another library in a model's place would be
    skipped by the native step: "auto" then runs the modules, and the tokens are the hooked model's."""
    model = make_model(kind, "tiny").eval()
    cpu = torch.device("cpu")
    ids, lengths = prompts(2, 7, True)
    assert whole_step_decoder(model, 2, 32, 7, cpu, torch.float32, "auto") is not None
    plain = generate(model, ids, 8, temperature=0.0, prompt_lengths=lengths)
    banned = int(plain[:, ids.shape[1] :].flatten()[0])

    def ban(mod, inp, out):
        return out.index_fill(-1, torch.tensor([banned]), -1e9)

    handle = model.lm_head.register_forward_hook(ban)
    assert whole_step_decoder(model, 2, 32, 7, cpu, torch.float32, "auto") is None
    with pytest.raises(ValueError, match="forward hooks"):
        whole_step_decoder(model, 2, 32, 7, cpu, torch.float32, "whole_step")
    hooked = generate(model, ids, 8, temperature=0.0, prompt_lengths=lengths)
    assert banned not in hooked[:, ids.shape[1] :].tolist()[0] + hooked[:, ids.shape[1] :].tolist()[1]
    handle.remove()

    class Foreign(torch.nn.Module):  # e.g. an adapter wrapping our projection
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    Foreign.__module__ = "somewhere.else"
    model.lm_head = Foreign(model.lm_head)
    with pytest.raises(ValueError, match="somewhere.else.Foreign"):
        whole_step_decoder(model, 2, 32, 7, cpu, torch.float32, "whole_step")


@needs_kernel
def test_pack_is_kept_and_remade_when_weights_change():
    model = make_model("enbert", "tiny")
    p1 = pack_of(model)
    assert pack_of(model) is p1
    with torch.no_grad():
        model.blocks[0].ffn.fc.weight.mul_(1.5)
    p2 = pack_of(model)
    assert p2 is not p1
    ids, _ = prompts(2, 5, padded=False)
    mod, fast, _, _ = run_both(model, ids, None, 3)
    torch.testing.assert_close(fast, mod, atol=1e-4, rtol=1e-4)


@needs_kernel
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_results_do_not_depend_on_threads(kind):
    """The native step alone (the prefill runs torch's own kernels, whose rounding may follow the thread count):
    the same inputs give bitwise the same logits and caches on 1 and 2 threads."""
    pack, args, kw = _raw_inputs(kind, shape="47m", B=2, Tmax=40)
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            a = {k: v.clone() for k, v in args.items()}
            for _ in range(3):
                ops.decode_step(pack, **a, **kw)
            outs.append(a)
    finally:
        torch.set_num_threads(before)
    for name in ("logits", "k_cache", "v_cache", "seqlens"):
        assert torch.equal(outs[0][name], outs[1][name]), name


def _memory_events(fn) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name == "[memory]")


@needs_kernel
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_a_step_allocates_nothing(kind):
    model = make_model(kind, "tiny")
    ids, lengths = prompts(2, 9, padded=True)
    dec = WholeStepDecoder(model, 2, 20, 9, ids.device, torch.float32)
    cache = dec.allocate_cache()
    key_start = (9 - lengths).to(torch.int32)
    tok = torch.tensor([[3], [5]])
    with torch.inference_mode():
        model.prefill(ids, key_start, cache)
        dec.start(cache)
        dec.step(tok, cache)  # warm-up
        # the measurement sees allocations: a control that allocates is counted
        assert _memory_events(lambda: torch.empty(1000)) >= 1
        assert _memory_events(lambda: dec.step(tok, cache)) == 0
        assert _memory_events(lambda: [dec.step(tok, cache) for _ in range(3)]) == 0


def _raw_inputs(kind="enbert", B=2, Tmax=12, S=5, shape="odd"):
    model = make_model(kind, shape)
    pack = pack_of(model)
    g = pack.geometry
    shape = (g.n_layer, B, g.n_head, Tmax, g.head_dim)
    args = dict(
        tok=torch.randint(0, VOCAB, (B,)),
        k_cache=torch.randn(shape),
        v_cache=torch.randn(shape),
        seqlens=torch.tensor([3, 7][:B], dtype=torch.int32) + (Tmax - 12),
        logits=torch.full((B, VOCAB), float("nan")),
        work=ops.decode_workspace(pack, B, Tmax, S),
    )
    kw = dict(key_start=torch.tensor([1, 0][:B]))
    if kind == "enigma":
        mem = (g.n_layer, B, g.n_head, S, g.head_dim)
        kw = dict(
            pos_offset=torch.tensor([4, 0][:B]),
            memory_k=torch.randn(mem),
            memory_v=torch.randn(mem),
            memory_start=torch.tensor([0, 2][:B]),
        )
    return pack, args, kw


@needs_kernel
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_op_against_reference_route(kind, cpu_level):
    """The kernel and the pure-PyTorch reference on the same raw inputs: logits (poisoned first), caches, seqlens."""
    pack, args, kw = _raw_inputs(kind)
    with _extension.force_reference():
        ref_pack = ops.decode_pack(pack.weights, pack.geometry)
    assert ref_pack.packed is None and pack.packed is not None
    ref_args = {k: v.clone() for k, v in args.items()}
    got = ops.decode_step(pack, **args, **kw)
    want = ops.decode_step(ref_pack, **ref_args, **kw)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    for name in ("k_cache", "v_cache", "seqlens"):
        torch.testing.assert_close(args[name], ref_args[name], atol=1e-5, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_opcheck(kind):
    pack, args, kw = _raw_inputs(kind)
    a = dict(args, **kw)
    torch.library.opcheck(torch.ops.enigma_fast.decode_pack.default, (list(pack.weights), list(pack.ints)))
    torch.library.opcheck(
        torch.ops.enigma_fast.decode_step.default,
        (
            pack.packed,
            list(pack.ints),
            pack.geometry.eps,
            a["tok"],
            a["k_cache"],
            a["v_cache"],
            a["seqlens"],
            a.get("key_start"),
            a.get("pos_offset"),
            a.get("memory_k"),
            a.get("memory_v"),
            a.get("memory_start"),
            a["logits"],
            a["work"],
        ),
    )


@needs_kernel
def test_torch_compile_fullgraph():
    pack, args, kw = _raw_inputs("enbert")
    eager = {k: v.clone() for k, v in args.items()}
    want = ops.decode_step(pack, **eager, **kw).clone()

    def step(tok, k_cache, v_cache, seqlens, logits, work, key_start):
        return ops.decode_step(pack, tok, k_cache, v_cache, seqlens, logits, work, key_start=key_start) * 1.0

    got = torch.compile(step, fullgraph=True)(**args, **kw)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    for name in ("k_cache", "v_cache", "seqlens"):
        assert torch.equal(args[name], eager[name]), name


@needs_kernel
def test_bad_input_raises_before_writing():
    pack, args, kw = _raw_inputs("enbert")
    before = {k: v.clone() for k, v in args.items() if k != "logits"}

    def call(**change):
        return ops.decode_step(pack, **{**args, **change}, **kw)

    cases = [
        ({"tok": torch.tensor([0, VOCAB])}, ValueError, r"tok must hold token ids in \[0, vocab_size=37\), got 37"),
        ({"tok": torch.tensor([0, 1], dtype=torch.int32)}, TypeError, "tok must be int64, got Int"),
        ({"seqlens": torch.tensor([3, 12], dtype=torch.int32)}, ValueError, r"seqlens\[1\] = 12 leaves no room"),
        ({"seqlens": torch.tensor([3, 7])}, TypeError, "seqlens must be int32, got Long"),
        ({"k_cache": args["k_cache"].double()}, TypeError, "k_cache must be Float like the packed weights"),
        ({"v_cache": args["v_cache"][:, :1]}, ValueError, r"v_cache must be a contiguous \[2, 2, 4, 12, 30\]"),
        ({"logits": torch.empty(2, VOCAB + 1)}, ValueError, r"logits must be a contiguous \[2, 37\]"),
        ({"work": args["work"][:10]}, ValueError, "work must be a contiguous 1-d Float tensor of at least"),
    ]
    for change, err, msg in cases:
        with pytest.raises(err, match=msg):
            call(**change)
    with pytest.raises(ValueError, match="an EnBERT takes no memory_k"):
        call(memory_k=torch.zeros(1), memory_v=torch.zeros(1))
    for k, v in before.items():  # bit for bit (the work buffer is uninitialised memory: NaNs compare unequal)
        assert torch.equal(args[k].contiguous().view(torch.uint8), v.contiguous().view(torch.uint8)), k


@needs_kernel
def test_bad_weights_name_the_weight():
    model = make_model("enbert", "odd")
    pack = pack_of(model)
    w = list(pack.weights)
    w[5] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"weights\[5\] \(layer 0 qkv.weight\) must be \(360, 120\), got \(3, 3\)"):
        ops.decode_pack(w, pack.geometry)
    with pytest.raises(TypeError, match="must be floating point"):
        ops.decode_pack([t.long() if i == 0 else t for i, t in enumerate(pack.weights)], pack.geometry)
    with pytest.raises(ValueError, match=r"weights must hold 26 tensors"):
        ops.decode_pack(pack.weights[:-1], pack.geometry)
    # the C++ check, without the Python one in front
    with pytest.raises(ValueError, match=r"weights\[5\] \(layer 0 qkv.weight\) must be \(360, 120\)"):
        torch.ops.enigma_fast.decode_pack(w, list(pack.ints))


def test_reference_route_matches_module_path():
    """Packed on the reference route (as without the extension), the whole-step decoder equals the module path."""
    model = make_model("enigma", "odd")
    ids, lengths = prompts(2, 7, padded=True)
    with _extension.force_reference():
        pack = ops.decode_pack(*model.decode_weights())
        assert pack.packed is None
        assert ops.decode_workspace(pack, 2, 8, 7).numel() == 0
    T = ids.shape[1]
    key_start = (T - lengths).to(torch.int32)
    cache = model.allocate_cache(2, 8, ids.device, torch.float32)
    dec = WholeStepDecoder(model, 2, 8, T, ids.device, torch.float32)
    dec.pack, dec.work = pack, ops.decode_workspace(pack, 2, 8, T)
    dcache = dec.allocate_cache()
    with torch.inference_mode():
        want = [model.prefill(ids, key_start, cache)]
        model.prefill(ids, key_start, dcache)
        dec.start(dcache)
        got = [want[0]]
        for _ in range(5):
            tok = want[-1].argmax(-1, keepdim=True)
            want.append(model.decode_step(tok, cache))
            got.append(dec.step(tok, dcache).clone())
    torch.testing.assert_close(torch.stack(got), torch.stack(want), atol=1e-5, rtol=1e-5)


def test_backend_info_lists_the_op():
    info = enigma_fast.backend_info()["ops"]["decode_step"]
    assert info["cpu"].startswith("compiled") == _extension.has_kernel("decode_step", "cpu", torch.float32)
