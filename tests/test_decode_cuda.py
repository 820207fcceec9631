"""Tests of the whole-step decode on CUDA: the op against the module path (float32 logits within rounding, greedy
tokens equal; bfloat16 within twice the module path's own error against float32), the generator's CUDA graph (same
greedy and seeded tokens as the module path, no allocation and no host synchronisation per replay), opcheck. Every
test needs a GPU and skips at run time without one (nothing here touches the GPU at import or collection).
"""

from __future__ import annotations

import pytest
import torch
from decode_helpers import make_model, prompts, run_both

from enigma_fast import _extension, ops
from enigma_fast.generation import generate
from enigma_fast.generation.cuda_graph import _capture_step
from enigma_fast.generation.whole_step import WholeStepDecoder

pytestmark = pytest.mark.cuda
needs_kernel = pytest.mark.skipif(
    not _extension.has_kernel("decode_step", "cuda", torch.float32), reason="the extension was built without CUDA"
)


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


@needs_kernel
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
@pytest.mark.parametrize("shape", ["tiny", "odd", "d128"])
def test_whole_step_equals_module_path_cuda(kind, shape, cuda_device):
    model = make_model(kind, shape, device=cuda_device)
    ids, lengths = prompts(3, 11, padded=True, device=cuda_device)
    mod, fast, cache, dec = run_both(model, ids, lengths, 6)
    assert torch.equal(fast.argmax(-1), mod.argmax(-1))
    torch.testing.assert_close(fast, mod, atol=2e-4 * mod.abs().max().item(), rtol=1e-4)
    n = int(cache["seqlens"].max())
    for layer, kv in enumerate(cache["layers"]):
        torch.testing.assert_close(dec.k_cache[layer][:, :, :n], kv.k[:, :, :n], atol=1e-4, rtol=1e-4)
    assert torch.equal(dec.seqlens, cache["seqlens"])


@needs_kernel
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_bfloat16_within_module_error(kind, cuda_device):
    ids, lengths = prompts(2, 9, padded=True, device=cuda_device)
    ref32 = make_model(kind, "tiny", device=cuda_device)
    tokens = torch.randint(0, 30, (2, 5), device=cuda_device)
    ref, _, _, _ = run_both(ref32, ids, lengths, 5, tokens_from=tokens)
    model = make_model(kind, "tiny", device=cuda_device, dtype=torch.bfloat16)
    mod, fast, _, _ = run_both(model, ids, lengths, 5, tokens_from=tokens)
    assert _err(fast, ref) <= 2 * _err(mod, ref) + 1e-2 * ref.abs().max().item()


@needs_kernel
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_generate_with_cuda_graph_equals_module_path(kind, cuda_device):
    model = make_model(kind, "tiny", device=cuda_device)
    ids, lengths = prompts(4, 13, padded=True, device=cuda_device)
    for kw in ({"temperature": 0.0}, {"temperature": 0.9, "seed": 3}, {"top_k": 5, "top_p": 0.8, "seed": 4}):
        a = generate(model, ids, 20, prompt_lengths=lengths, decode_path="module", **kw)
        b = generate(model, ids, 20, prompt_lengths=lengths, decode_path="whole_step", **kw)
        assert torch.equal(a, b), kw
    free = generate(model, ids, 20, temperature=0.0, decode_path="module")
    eos = int(free[0, 16])
    a = generate(model, ids, 20, temperature=0.0, eos_id=eos, pad_id=1, decode_path="module")
    b = generate(model, ids, 20, temperature=0.0, eos_id=eos, pad_id=1, decode_path="whole_step")
    assert torch.equal(a, b)


@needs_kernel
def test_graph_replay_allocates_nothing_and_never_syncs(cuda_device):
    model = make_model("enbert", "tiny", device=cuda_device)
    ids, lengths = prompts(2, 9, padded=True, device=cuda_device)
    dec = WholeStepDecoder(model, 2, 40, 9, ids.device, torch.float32)
    cache = dec.allocate_cache()
    with torch.inference_mode():
        logits = model.prefill(ids, (9 - lengths).to(torch.int32), cache)
        dec.start(cache)
        tok = logits.argmax(-1)
        finished = torch.zeros(2, dtype=torch.bool, device=cuda_device)
        graph = _capture_step(dec, tok, finished, 0.7, 5, None, torch.Generator(device=cuda_device), None, 0)
        graph.replay()
        torch.cuda.synchronize()
        before = torch.cuda.memory_stats(cuda_device)["allocation.all.allocated"]
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(10):
                graph.replay()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        assert torch.cuda.memory_stats(cuda_device)["allocation.all.allocated"] == before
        assert int(dec.seqlens[0]) == 9 + 11


@needs_kernel
def test_opcheck_cuda(cuda_device):
    model = make_model("enigma", "odd", device=cuda_device)
    from enigma_fast.generation.whole_step import packed_weights

    pack = packed_weights(model)
    g = pack.geometry
    B, Tmax, S = 2, 12, 5
    shape = (g.n_layer, B, g.n_head, Tmax, g.head_dim)
    mem = (g.n_layer, B, g.n_head, S, g.head_dim)
    d = dict(device=cuda_device)
    args = (
        pack.packed,
        list(pack.ints),
        g.eps,
        torch.randint(0, 30, (B,), **d),
        torch.randn(shape, **d),
        torch.randn(shape, **d),
        torch.tensor([3, 7], dtype=torch.int32, **d),
        None,
        torch.tensor([4, 0], **d),
        torch.randn(mem, **d),
        torch.randn(mem, **d),
        torch.tensor([0, 2], **d),
        torch.empty(B, 37, **d),
        ops.decode_workspace(pack, B, Tmax, S),
    )
    torch.library.opcheck(torch.ops.enigma_fast.decode_step.default, args)
