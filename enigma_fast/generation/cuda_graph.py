"""The whole-step decode loop on CUDA: the step and the sampling captured once in a CUDA graph, replayed per token.

One replay runs the native decode step (``enigma_fast.ops.decode_step``: every layer, cache writes, logits) and the
sampling (greedy, temperature, top-k, top-p: the generator's own ``_sample``, so the same kernels and the same
random draws), masks rows that already produced ``eos_id``, and writes the next token into the static input of
the following replay. The host only launches replays: no value is read back per token (the generator checks
whether every row finished every ``sync_every`` tokens, as on the module path). The first token is sampled from the
prefill's logits outside the graph, exactly as the module loop does, so a seed gives the same tokens on both paths.

Capture rules kept here: the graph's inputs and outputs are tensors allocated before capture and written in place;
a warm-up step on a side stream (with ``seqlens`` restored after it, and a throwaway random generator) lets cuBLAS
and the sampling kernels initialise outside the capture; a seeded ``torch.Generator`` is registered with the graph
so that each replay advances it as an eager call would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from enigma_fast.generation.sampling import _sample

__all__ = ["graph_loop"]


def _capture_step(
    dec: Any,
    tok: torch.Tensor,
    finished: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    gen: torch.Generator | None,
    eos_id: int | None,
    pad_id: int,
    blocked: torch.Tensor | None = None,
) -> torch.cuda.CUDAGraph:
    """Capture one decode step + sampling reading ``tok (B,)`` and writing the next token into it."""

    def body(g: torch.Generator | None) -> None:
        logits = dec.step(tok[:, None])
        if blocked is not None:  # ids the model may not emit (generation/vocab.py)
            logits = logits.masked_fill(blocked, float("-inf"))
        nxt = _sample(logits, temperature, top_k, top_p, g)
        if eos_id is not None:
            nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
            finished.logical_or_(nxt == eos_id)
        tok.copy_(nxt)

    # Warm-up outside the capture, leaving every piece of state as it was.
    saved = (dec.seqlens.clone(), tok.clone(), finished.clone())
    side = torch.cuda.Stream(device=tok.device)
    side.wait_stream(torch.cuda.current_stream(tok.device))
    with torch.cuda.stream(side):
        body(torch.Generator(device=tok.device))
    torch.cuda.current_stream(tok.device).wait_stream(side)
    for t, s in zip((dec.seqlens, tok, finished), saved, strict=True):
        t.copy_(s)
    graph = torch.cuda.CUDAGraph()
    if gen is not None:
        graph.register_generator_state(gen)
    with torch.cuda.graph(graph):
        body(gen)
    return graph


def graph_loop(
    dec: Any,
    logits: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    gen: torch.Generator | None,
    eos_id: int | None,
    pad_id: int,
    sync_every: int,
    blocked: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """The generator's token loop after the prefill (``logits (B, V)`` of the prompts' last position), on a
    ``WholeStepDecoder`` ``dec`` whose caches the prefill filled: yields ``(B,)`` tokens (device tensors).
    ``blocked (V,)`` bool: ids never sampled (their logits set to -inf before sampling, inside the graph)."""
    B = logits.shape[0]
    finished = torch.zeros(B, dtype=torch.bool, device=logits.device)
    if blocked is not None:
        logits = logits.masked_fill(blocked, float("-inf"))
    tok = _sample(logits, temperature, top_k, top_p, gen)
    if eos_id is not None:
        tok = torch.where(finished, torch.full_like(tok, pad_id), tok)
        finished |= tok == eos_id
    yield tok
    if max_new_tokens <= 1:
        return
    state = tok.clone()  # the graph's static input and output
    graph = _capture_step(dec, state, finished, temperature, top_k, top_p, gen, eos_id, pad_id, blocked)
    for step in range(1, max_new_tokens):
        if eos_id is not None and step % sync_every == 0 and bool(finished.all()):
            return
        graph.replay()
        yield state.clone()
