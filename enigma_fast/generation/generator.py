"""KV-cached batched sampling for EnBERT and Enigma.

The model's static caches are allocated once for (batch, prompt + new tokens); the prompts run through one
fused prefill, then each new token is one decode step over the cache. Prompts of different lengths are
left-padded and masked with ``key_start`` (relative attention is shift-invariant, Enigma shifts its absolute
positions), so padding changes no result. Nothing in the loop reads a value back to the host on CUDA, except an
all-rows-finished check every ``sync_every`` steps when ``eos_id`` is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from enigma_fast.generation.sampling import _int_arg, _sample, check_sampling_args
from enigma_fast.nn.ids import IdRange, check_id_ranges, check_id_tensor

__all__ = ["generate", "stream"]


def _check(
    model: Any,
    idx: torch.Tensor,
    max_new_tokens: int,
    prompt_lengths: torch.Tensor | None,
    eos_id: int | None,
    pad_id: int,
) -> None:
    """Everything about the prompts, once, before the prefill: shapes and dtypes, then the prompt ids (in
    ``[0, vocab_size)``, padding included) and ``prompt_lengths`` (in ``[1, T]``) with a single host read. The
    decode loop feeds back only ids it sampled from ``vocab_size`` logits (or ``pad_id``), so it needs no check."""
    dev = next(model.parameters()).device
    check_id_tensor("idx", idx, dev)
    B, T = idx.shape
    if T == 0:
        raise ValueError("prompts must hold at least one token, got idx of shape " + str(tuple(idx.shape)))
    max_new_tokens = _int_arg("max_new_tokens", max_new_tokens, 1)
    limit = model.max_new_tokens_for(T)
    if max_new_tokens > limit:
        raise ValueError(
            f"a {T}-token prompt leaves room for {max(limit, 0)} new tokens within the model's block_size "
            f"{model.config.block_size}, asked for {max_new_tokens}"
        )
    V = model.config.vocab_size
    _int_arg("eos_id", eos_id, 0, V, allow_none=True)
    _int_arg("pad_id", pad_id, 0, V)
    if prompt_lengths is not None:
        if not isinstance(prompt_lengths, torch.Tensor):
            raise TypeError(f"prompt_lengths must be None or a ({B},) int tensor, got {type(prompt_lengths).__name__}")
        if prompt_lengths.shape != (B,) or prompt_lengths.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"prompt_lengths must be a ({B},) int32/int64 tensor, got {prompt_lengths.dtype} "
                f"{tuple(prompt_lengths.shape)}"
            )
    check_id_ranges(
        [
            IdRange("idx", idx, 0, V, f"token ids in [0, vocab_size={V})"),
            IdRange("prompt_lengths", prompt_lengths, 1, T + 1, f"prompt lengths in [1, {T}]"),
        ]
    )


def stream(
    model: Any,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    prompt_lengths: torch.Tensor | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
    seed: int | None = None,
    compile: bool = False,
    sync_every: int = 64,
) -> Iterator[torch.Tensor]:
    """Yield the sampled tokens ``(B,)`` one step at a time (see :func:`generate` for the arguments).

    Rows that produced ``eos_id`` yield ``pad_id`` afterwards; the iterator ends early once all rows are done
    (checked every step on CPU, every ``sync_every`` steps on CUDA). Every argument is checked here, when
    ``stream`` is called, not at the first ``next``.
    """
    temperature, top_k, top_p = check_sampling_args(temperature, top_k, top_p)
    _check(model, idx, max_new_tokens, prompt_lengths, eos_id, pad_id)
    _int_arg("seed", seed, -(2**63), 2**64, allow_none=True)
    _int_arg("sync_every", sync_every, 1)
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be a bool, got {type(compile).__name__} {compile!r}")
    return _stream(
        model,
        idx,
        int(max_new_tokens),
        temperature,
        top_k,
        top_p,
        prompt_lengths,
        eos_id,
        pad_id,
        seed,
        compile,
        sync_every,
    )


def _stream(
    model: Any,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    prompt_lengths: torch.Tensor | None,
    eos_id: int | None,
    pad_id: int,
    seed: int | None,
    compile: bool,
    sync_every: int,
) -> Iterator[torch.Tensor]:
    B, T = idx.shape
    device = idx.device
    key_start = None
    if prompt_lengths is not None:
        key_start = (T - prompt_lengths.to(device=device, dtype=torch.int32)).contiguous()
    dtype = next(model.parameters()).dtype
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
    step_fn = model.decode_step
    if compile:
        step_fn = getattr(model, "_compiled_decode_step", None)
        if step_fn is None:
            mode = "reduce-overhead" if device.type == "cuda" else None
            step_fn = torch.compile(model.decode_step, mode=mode, fullgraph=True)
            model._compiled_decode_step = step_fn
    with torch.inference_mode():
        cache = model.allocate_cache(B, model.cache_length(T, max_new_tokens), device, dtype)
        logits = model.prefill(idx, key_start, cache)
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            tok = _sample(logits, temperature, top_k, top_p, gen)
            if eos_id is not None:
                tok = torch.where(finished, torch.full_like(tok, pad_id), tok)
                finished |= tok == eos_id
            yield tok
            if step + 1 == max_new_tokens:
                break
            if eos_id is not None and (device.type != "cuda" or (step + 1) % sync_every == 0) and bool(finished.all()):
                break
            logits = step_fn(tok[:, None], cache)


def generate(
    model: Any,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    prompt_lengths: torch.Tensor | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
    seed: int | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """Sample continuations of a batch of prompts with a KV cache.

    Args:
        model: an ``EnBERT`` or ``Enigma`` (anything with ``allocate_cache``/``prefill``/``decode_step``).
        idx: ``(B, T)`` prompt token ids; with ``prompt_lengths`` the prompts are left-padded to T.
        max_new_tokens: tokens to sample per row.
        temperature: finite, >= 0; 0 = greedy. top_k (int >= 1) / top_p (in (0, 1]): truncation of the
            distribution (see ``sampling.sample``).
        prompt_lengths: ``(B,)`` real lengths of left-padded prompts, in ``[1, T]``, or None (all T).
        eos_id: stop a row at this token (later positions get ``pad_id``); None = never stop early. Both ids in
            ``[0, vocab_size)``.
        seed: seeds a ``torch.Generator`` on idx's device: same seed, same tokens.
        compile: run the decode step through ``torch.compile`` (CUDA graphs on GPU).

    Returns:
        ``(B, T + n)`` int64: the prompts followed by the ``n <= max_new_tokens`` sampled tokens.

    Raises:
        TypeError / ValueError (one line naming the argument) before any model work: a prompt id outside
        ``[0, vocab_size)``, wrong shapes/dtypes/devices, options out of range (see ``check_sampling_args``).
    """
    toks = list(
        stream(
            model,
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            prompt_lengths=prompt_lengths,
            eos_id=eos_id,
            pad_id=pad_id,
            seed=seed,
            compile=compile,
        )
    )
    new = torch.stack(toks, dim=1) if toks else idx.new_empty((idx.shape[0], 0))
    return torch.cat([idx.long(), new.long()], dim=1)
