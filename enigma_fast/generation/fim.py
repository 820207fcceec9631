"""Infilling with an EnBERT trained by fill-in-the-middle (``python -m enigma_fast.train --objective fim``).

Gaps are filled one after another, left to right. For gap g of a sequence ``flank_0 gap_0 flank_1 ... flank_G``, the
prompt is the prefix-suffix-middle form of ``enigma_fast.data.fim``::

    <pre> flank_0 fill_0 ... flank_g <suf> flank_{g+1} <mid>

(every gap before g already filled, the suffix the flank up to the next gap), and the model writes the middle under
the same constraints as the Enigma's infill (``enigma_fast.generation.infill``): only base tokens, at most the bases
still missing; a gap of exact length n ends after n bases, a free gap may end with ``<eot>`` once it holds a base and
ends at ``max_gap_length`` bases. Rows (items x samples) are batched: prompts left-padded (``key_start``), one
prefill, one cached decode step per token.
"""

from __future__ import annotations

from typing import Any

import torch

from enigma_fast.data.fim import fim_markers, fim_mode
from enigma_fast.generation.sampling import _sample

__all__ = ["fim_fill_batch"]


def _prompt(tok: Any, masked: Any, fills: list[str], g: int, markers: Any, mode: str = "psm") -> list[int]:
    """The prompt of gap ``g``: ``<pre> prefix <suf> suffix <mid>`` (PSM) or ``<pre> <suf> suffix <mid> prefix``
    (SPM), the prefix holding every earlier gap filled."""
    prefix = "".join(f + x for f, x in zip(masked.flanks[:g], fills[:g], strict=True)) + masked.flanks[g]
    suffix = tok.encode(masked.flanks[g + 1])
    if mode == "spm":
        return [markers.pre, markers.suf, *suffix, markers.mid, *tok.encode(prefix)]
    return [markers.pre, *tok.encode(prefix), markers.suf, *suffix, markers.mid]


@torch.no_grad()
def fim_fill_batch(
    model: Any,
    tok: Any,
    items: list[Any],
    num_samples: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    gen: torch.Generator | None,
    max_gap_length: int,
    bpt: torch.Tensor,
    device: torch.device,
    emit: torch.Tensor | None = None,
) -> list[list[list[str]]]:
    """The fills ``out[i][s][j]`` (sample s of gap j of item i) of the parsed ``items`` (``MaskedSequence``), as
    ``fill_gaps`` returns them; ``emit (V,)`` bool: the ids a fill may hold (``generation/vocab.py``; None: every
    base token). ValueError when a prompt and its gap do not fit the model's ``block_size``."""
    markers = fim_markers(tok)
    mode = fim_mode(model)
    rows = [m for m in items for _ in range(num_samples)]
    fills: list[list[str]] = [[] for _ in rows]
    special = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
    special[torch.tensor(list(tok.special_ids.values()), dtype=torch.long, device=device)] = True
    is_base = ~special & (bpt >= 1)
    if emit is not None:  # base tokens the model may write (generation/vocab.py)
        is_base = is_base & emit
    dtype = next(model.parameters()).dtype
    for g in range(max(len(m.gaps) for m in rows)):
        active = [r for r, m in enumerate(rows) if len(m.gaps) > g]
        prompts = [_prompt(tok, rows[r], fills[r], g, markers, mode) for r in active]
        lengths = [max_gap_length if rows[r].gaps[g] is None else rows[r].gaps[g] for r in active]
        B, S, N = len(active), max(map(len, prompts)), max(lengths)
        if S + N > model.config.block_size:
            raise ValueError(
                f"infilling gap {g} takes {S} prompt tokens and up to {N} more, more than the model's block_size "
                f"{model.config.block_size}; use shorter flanks"
            )
        idx = torch.full((B, S), tok.pad_id, dtype=torch.long)
        for b, p in enumerate(prompts):
            idx[b, S - len(p) :] = torch.tensor(p, dtype=torch.long)
        key_start = torch.tensor([S - len(p) for p in prompts], dtype=torch.int32)
        idx, key_start = idx.to(device), key_start.to(device)
        remaining = torch.tensor(lengths, dtype=torch.long, device=device)
        free = torch.tensor([rows[r].gaps[g] is None for r in active], dtype=torch.bool, device=device)
        written = torch.zeros(B, dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        cache = model.allocate_cache(B, model.cache_length(S, N), device, dtype)
        logits = model.prefill(idx, key_start if bool((key_start > 0).any()) else None, cache)
        out = []
        for step in range(N):
            allowed = is_base[None, :] & (bpt[None, :] <= remaining[:, None])
            allowed[:, markers.eot] = free & (written > 0)
            allowed = allowed & ~done[:, None]
            allowed[:, tok.pad_id] |= done  # finished rows write padding
            t = _sample(logits.float().masked_fill(~allowed, float("-inf")), temperature, top_k, top_p, gen)
            out.append(t)
            base = ~done & (t != markers.eot)
            remaining = remaining - torch.where(base, bpt[t], 0)
            written = written + torch.where(base, bpt[t], 0)
            done = done | (t == markers.eot) | (remaining <= 0)
            if step + 1 == N or (device.type != "cuda" and bool(done.all())):
                break
            logits = model.decode_step(t[:, None], cache)
        ids = torch.stack(out, dim=1).cpu().tolist()
        for b, r in enumerate(active):
            keep = []
            for t in ids[b]:
                if t in (markers.eot, tok.pad_id):
                    break
                keep.append(t)
            fills[r].append(tok.decode(keep))
    return [[fills[i * num_samples + s] for s in range(num_samples)] for i in range(len(items))]
