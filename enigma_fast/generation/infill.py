"""Infilling with an Enigma trained by span corruption (or an EnBERT trained fill-in-the-middle, see
``enigma_fast.generation.fim``): fill the gaps of a DNA sequence from both flanks.

A sequence with gaps is written with ``[N:<bases>]`` (a gap of exactly that many bases) or ``[N]`` (a gap whose
length the model chooses, at most ``max_gap_length`` bases), e.g. ``ACGT[N:12]TTGA[N]CC``; or given as a
``(left, length, right)`` tuple (one gap; ``length`` None = free). The source is the flanks with sentinel ``<mask_j>``
in place of gap j; the decoder writes ``<mask_0> fill_0 <mask_1> fill_1 ... <eos>`` under constraints:

* the sentinel that opens gap j is forced when gap j is due;
* inside a gap of exact length n only base tokens (non-special, at most the bases still missing, and made of the
  letters the model was trained on unless ``vocab`` says otherwise: see ``generation/vocab.py``) are allowed; after
  n bases the next sentinel (``<eos>`` after the last gap) is forced;
* inside a free gap the model may also close it with the next sentinel (or ``<eos>``) once it holds a base; at
  ``max_gap_length`` bases it is closed.

Rows are batched (every item times ``num_samples``, sources left-padded), the decoder runs on its KV cache (one
prefill, one decode step per token), and sampling is ``generate``'s (temperature, top-k, top-p, seed). A gap may
touch either end of the sequence (one flank); a sequence needs at least one base and one gap, and no two gaps may
touch (write them as one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from enigma_fast.data.fim import fim_markers
from enigma_fast.generation.fim import fim_fill_batch
from enigma_fast.generation.sampling import _int_arg, _sample, check_sampling_args
from enigma_fast.generation.vocab import emit_mask
from enigma_fast.tokenizers import FALLBACK_ALPHABET

__all__ = ["MaskedSequence", "fill_gaps", "infill", "parse_masked"]

_GAP = re.compile(r"\[N(?::([0-9]+))?\]")
_DNA = frozenset(FALLBACK_ALPHABET)


@dataclass(frozen=True)
class MaskedSequence:
    """A sequence with gaps: ``flanks`` (``len(gaps) + 1`` strings, the outer two may be empty) around ``gaps``
    (lengths in bases, None = free length)."""

    flanks: tuple[str, ...]
    gaps: tuple[int | None, ...]

    def join(self, fills: Sequence[str]) -> str:
        """The sequence with gap j replaced by ``fills[j]``."""
        out = [self.flanks[0]]
        for fill, flank in zip(fills, self.flanks[1:], strict=True):
            out += [fill, flank]
        return "".join(out)


def parse_masked(item: Any, name: str = "text") -> MaskedSequence:
    """Parse ``"ACGT[N:12]TTGA"`` (or a ``(left, length, right)`` tuple) into a :class:`MaskedSequence`.

    ValueError (TypeError for a wrong type), one line starting with ``name``: an empty gap (``[N:0]``), malformed
    gap syntax (``[N:x]``, ``[N:12``, a stray bracket), two gaps that touch, a letter that is not DNA/IUPAC, no gap,
    or no base at all.
    """
    if isinstance(item, tuple):
        if len(item) != 3:
            raise ValueError(f"{name} must be a (left, length, right) tuple, got {len(item)} items")
        left, length, right = item
        if not isinstance(left, str) or not isinstance(right, str):
            raise TypeError(
                f"{name}: left and right flanks must be str, got {type(left).__name__} and {type(right).__name__}"
            )
        if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
            raise TypeError(
                f"{name}: the gap length must be an int >= 1 or None, got {type(length).__name__} {length!r}"
            )
        if length is not None and length < 1:
            raise ValueError(f"{name}: empty gap (length {length}); a gap needs a length >= 1 or None (free)")
        for flank, which in ((left, "left"), (right, "right")):
            bad = next((j for j, ch in enumerate(flank) if ch not in _DNA), None)
            if bad is not None:
                raise ValueError(f"{name}: the {which} flank holds {flank[bad]!r} at position {bad}, not a DNA letter")
        masked = MaskedSequence((left, right), (length,))
    elif isinstance(item, str):
        flanks, gaps, pos = [], [], 0
        while True:
            nxt = min((j for j in (item.find("[", pos), item.find("]", pos)) if j >= 0), default=-1)
            flank = item[pos:] if nxt < 0 else item[pos:nxt]
            bad = next((j for j, ch in enumerate(flank) if ch not in _DNA), None)
            if bad is not None:
                raise ValueError(
                    f"{name}: {flank[bad]!r} at position {pos + bad} is not a DNA letter or a gap "
                    "'[N:<length>]' / '[N]'"
                )
            flanks.append(flank)
            if nxt < 0:
                break
            m = _GAP.match(item, nxt)
            if m is None:
                raise ValueError(
                    f"{name}: malformed gap at position {nxt}: {item[nxt : nxt + 12]!r}; write a gap as "
                    "'[N:<length>]' (length >= 1 bases) or '[N]' (free length)"
                )
            if m.group(1) is not None and int(m.group(1)) == 0:
                raise ValueError(f"{name}: empty gap '[N:0]' at position {nxt}; a gap needs a length >= 1")
            if gaps and not flank:
                raise ValueError(f"{name}: the gaps at position {nxt} and before it touch; write them as one gap")
            gaps.append(None if m.group(1) is None else int(m.group(1)))
            pos = m.end()
        masked = MaskedSequence(tuple(flanks), tuple(gaps))
    else:
        raise TypeError(f"{name} must be a str with gaps or a (left, length, right) tuple, got {type(item).__name__}")
    if not masked.gaps:
        raise ValueError(f"{name}: no gap to fill; mark one as '[N:<length>]' or '[N]'")
    if not any(masked.flanks):
        raise ValueError(f"{name}: no flanking bases; infill needs at least one base beside the gaps")
    return masked


def _items(text: Any) -> list[tuple[str, Any]]:
    if isinstance(text, str | tuple):
        return [("text", text)]
    if isinstance(text, Sequence) and not isinstance(text, bytes | bytearray):
        if not len(text):
            raise ValueError("text must hold at least one sequence, got an empty list")
        return [(f"text[{i}]", t) for i, t in enumerate(text)]
    raise TypeError(f"text must be a str, a (left, length, right) tuple or a list of them, got {type(text).__name__}")


@dataclass(frozen=True)
class _Item:
    """One sequence to fill, set up once: its gaps, the source ids (the flanks' tokens with sentinel j in place of
    gap j), the source position of each sentinel, each gap's base budget (a free gap: ``max_gap_length``), whether
    it is free, and the decoder steps it may take (its sentinels, at most one token per base, ``<eos>``)."""

    masked: MaskedSequence
    src: list[int]
    sentinel_pos: list[int]
    budget: list[int]
    free: list[bool]
    steps: int


def _setup(name: str, item: Any, tok: Any, max_gap_length: int, block_size: int) -> _Item:
    """Parse one item and lay out its source and gaps (ValueError naming ``name`` when it cannot be filled)."""
    masked = parse_masked(item, name)
    n_sent = tok.num_sentinels
    if len(masked.gaps) > n_sent:
        raise ValueError(
            f"{name}: {len(masked.gaps)} gaps, but the tokenizer has {n_sent} sentinels "
            f"(<mask_0> .. <mask_{n_sent - 1}>); fill at most {n_sent} gaps at a time"
        )
    src: list[int] = []
    sentinel_pos = []
    for j, flank in enumerate(masked.flanks):
        src += tok.encode(flank)
        if j < len(masked.gaps):
            sentinel_pos.append(len(src))
            src.append(tok.sentinel_id(j))
    if len(src) > block_size:
        raise ValueError(
            f"{name}: the flanks and sentinels make {len(src)} source tokens, more than the model's "
            f"block_size {block_size}; use shorter flanks"
        )
    budget = [max_gap_length if g is None else g for g in masked.gaps]
    free = [g is None for g in masked.gaps]
    return _Item(masked, src, sentinel_pos, budget, free, sum(1 + n for n in budget) + 1)


def fill_gaps(
    model: Any,
    tokenizer: Any,
    text: Any,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    max_gap_length: int = 64,
    max_batch: int = 64,
    vocab: str | torch.Tensor = "trained",
) -> list[list[list[str]]]:
    """The fills of every gap: ``out[i][s][j]`` is sample s of gap j of item i (see :func:`infill`)."""
    _, fills = _fill(
        model, tokenizer, text, num_samples, temperature, top_k, top_p, seed, max_gap_length, max_batch, vocab
    )
    return fills


@torch.no_grad()
def _fill(
    model: Any,
    tokenizer: Any,
    text: Any,
    num_samples: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
    max_gap_length: int,
    max_batch: int,
    vocab: str | torch.Tensor,
) -> tuple[list[_Item], list[list[list[str]]]]:
    """The items as set up and their fills (``fill_gaps``): every argument checked before any model work."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    fim = kind == "enbert" and bool(getattr(model.config, "fim", False))  # an EnBERT trained fill-in-the-middle
    if kind != "enigma" and not fim:
        raise TypeError(
            f"infill needs an Enigma (encoder-decoder) model or an EnBERT trained with --objective fim, got "
            f"{type(model).__name__}"
        )
    temperature, top_k, top_p = check_sampling_args(temperature, top_k, top_p)
    num_samples = _int_arg("num_samples", num_samples, 1)
    max_gap_length = _int_arg("max_gap_length", max_gap_length, 1)
    max_batch = _int_arg("max_batch", max_batch, 1)
    _int_arg("seed", seed, -(2**63), 2**64, allow_none=True)
    if fim:
        fim_markers(tokenizer)  # its three markers are sentinels
    elif tokenizer.num_sentinels == 0:
        raise ValueError(
            "the tokenizer has no sentinel tokens (<mask_0>, ...): infill needs a model trained with "
            "span corruption (python -m enigma_fast.train --model enigma --objective span)"
        )
    V = model.config.vocab_size
    if tokenizer.vocab_size > V:
        raise ValueError(f"the tokenizer's {tokenizer.vocab_size} ids do not fit the model's vocab_size {V}")
    device = next(model.parameters()).device
    bpt = torch.zeros(V, dtype=torch.long)  # bases each id writes (ids past the tokenizer's: none)
    bpt[: tokenizer.vocab_size] = torch.from_numpy(tokenizer.bases_per_token())
    bpt = bpt.to(device)
    emit = emit_mask(tokenizer, vocab, V, device)
    if emit is None:  # a tokenizer always names its ids; kept for a duck-typed one
        emit = torch.ones(V, dtype=torch.bool, device=device)
    if not bool((emit & (bpt == 1)).any()):  # every exact length must stay reachable
        raise ValueError("vocab allows no single-base token, so a gap of 1 base could never be filled")
    if fim:  # gaps are filled one at a time (generation/fim.py), each checked against block_size there
        items = [_Item(parse_masked(item, name), [], [], [], [], 0) for name, item in _items(text)]
    else:
        items = [_setup(name, item, tokenizer, max_gap_length, model.config.block_size) for name, item in _items(text)]
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
    out: list[list[list[str]]] = []
    i = 0
    while i < len(items):  # batches of at most max_batch rows
        j = min(len(items), i + max(1, max_batch // num_samples))
        if fim:
            rows = [it.masked for it in items[i:j]]
            out += fim_fill_batch(
                model, tokenizer, rows, num_samples, temperature, top_k, top_p, gen, max_gap_length, bpt, device, emit
            )
        else:
            out += _fill_batch(
                model, tokenizer, items[i:j], num_samples, temperature, top_k, top_p, gen, bpt, device, emit
            )
        i = j
    return items, out


def _fill_batch(model, tok, items, num_samples, temperature, top_k, top_p, gen, bpt, device, emit):
    """Fill ``items`` (each ``num_samples`` rows) in one batch under the constraints of the module doc."""
    rows = [it for it in items for _ in range(num_samples)]
    B = len(rows)
    S = max(len(r.src) for r in rows)
    G = max(len(r.budget) for r in rows)
    N = max(it.steps for it in items)
    idx = torch.full((B, S), tok.pad_id, dtype=torch.long)
    src_start = torch.zeros(B, dtype=torch.int32)
    gap_len = torch.zeros((B, G + 1), dtype=torch.long)  # bases per gap (free: max_gap_length)
    free = torch.zeros((B, G + 1), dtype=torch.bool)
    n_gaps = torch.zeros(B, dtype=torch.long)
    sent_pos = torch.zeros((B, G), dtype=torch.long)  # source position of each gap's sentinel (unpadded)
    sentinel_set = set(tok.sentinel_ids)
    for b, r in enumerate(rows):
        n = len(r.budget)
        idx[b, S - len(r.src) :] = torch.tensor(r.src, dtype=torch.long)
        src_start[b] = S - len(r.src)
        sent_pos[b, :n] = torch.tensor(r.sentinel_pos, dtype=torch.long)
        gap_len[b, :n] = torch.tensor(r.budget, dtype=torch.long)
        free[b, :n] = torch.tensor(r.free, dtype=torch.bool)
        n_gaps[b] = n
    idx, src_start, gap_len, free, n_gaps, sent_pos = (
        t.to(device) for t in (idx, src_start, gap_len, free, n_gaps, sent_pos)
    )
    key_start = src_start if bool((src_start > 0).any()) else None
    # markers[b, g]: the token that opens gap g (sentinel g), or <eos> at g == number of gaps
    sent = torch.tensor(
        tok.sentinel_ids[: G + 1] + [tok.eos_id] * max(0, G + 1 - tok.num_sentinels), dtype=torch.long, device=device
    )
    markers = sent[None, : G + 1].expand(B, G + 1).clone()
    markers[torch.arange(B, device=device), n_gaps] = tok.eos_id
    special = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
    special[torch.tensor(list(tok.special_ids.values()), dtype=torch.long, device=device)] = True
    is_base = ~special & (bpt >= 1) & emit  # base tokens the model may write (generation/vocab.py)
    ar = torch.arange(B, device=device)
    g = torch.zeros(B, dtype=torch.long, device=device)  # the gap being written (or opened next)
    inside = torch.zeros(B, dtype=torch.bool, device=device)  # its sentinel has been written
    remaining = torch.zeros(B, dtype=torch.long, device=device)  # bases it may still take
    written = torch.zeros(B, dtype=torch.long, device=device)  # bases written into it
    done = torch.zeros(B, dtype=torch.bool, device=device)
    dtype = next(model.parameters()).dtype
    cache = model.allocate_cache(B, model.cache_length(S, N), device, dtype)
    # every decoder input sits at the source position of the sentinel of the gap it belongs to (span_corrupt)
    logits = model.prefill(idx, key_start, cache, bos_pos=sent_pos[:, 0])
    toks = []
    for step in range(N):
        g_next = (g + 1).clamp_max(G)
        opener = markers[ar, g]  # token that opens gap g
        closer = markers[ar, g_next]  # token that ends gap g (opens g + 1, or <eos>)
        is_free = free[ar, g]
        allowed = is_base[None, :] & (bpt[None, :] <= remaining[:, None]) & inside[:, None]
        can_close = inside & is_free & (written > 0)
        allowed[ar, closer] |= can_close
        forced = torch.where(done, torch.full_like(opener, tok.pad_id), opener)
        force = done | ~inside
        allowed = torch.where(force[:, None], torch.zeros_like(allowed), allowed)
        allowed[ar, forced] |= force
        tok_ = _sample(logits.float().masked_fill(~allowed, float("-inf")), temperature, top_k, top_p, gen)
        toks.append(tok_)
        # state update
        closed = inside & can_close & (tok_ == closer)  # a free gap ended by the model: tok_ opens gap g + 1
        base = inside & ~closed & ~done
        remaining = remaining - torch.where(base, bpt[tok_], 0)
        written = written + torch.where(base, bpt[tok_], 0)
        full = base & (remaining <= 0)  # exact length reached or free gap at its maximum: the next opener is forced
        g = g + (closed | full).long()
        inside = inside & ~full & ~closed
        opened = (~inside & ~done & ~full) | closed  # the token written opened gap g (or was <eos>)
        finished = opened & (g >= n_gaps)
        done = done | finished
        start = opened & ~finished
        inside = inside | start
        remaining = torch.where(start, gap_len[ar, g.clamp_max(G)], remaining)
        written = torch.where(start, torch.zeros_like(written), written)
        if step + 1 == N or (device.type != "cuda" and bool(done.all())):
            break
        fed_gap = (g - full.long()).clamp(min=0).minimum((n_gaps - 1).clamp_min(0))  # the gap tok_ belongs to
        logits = model.decode_step(tok_[:, None], cache, pos=sent_pos[ar, fed_gap])
    out_ids = torch.stack(toks, dim=1).cpu().tolist()
    results: list[list[list[str]]] = []
    for b in range(B):
        fills: list[list[int]] = []
        for t in out_ids[b]:
            if t == tok.eos_id or t == tok.pad_id:
                break
            if t in sentinel_set:
                fills.append([])
            elif fills:
                fills[-1].append(t)
        texts = [tok.decode(f) for f in fills]
        if b % num_samples == 0:
            results.append([])
        results[-1].append(texts)
    return results


def infill(
    model: Any,
    tokenizer: Any,
    text: Any,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    max_gap_length: int = 64,
    max_batch: int = 64,
    vocab: str | torch.Tensor = "trained",
) -> list[list[str]]:
    """Fill the gaps of DNA sequences with an Enigma trained by span corruption.

    Args:
        model: an ``Enigma`` whose vocabulary holds the tokenizer's sentinels, or an ``EnBERT`` trained with
            ``--objective fim`` (``config.fim``; gaps filled left to right, see ``enigma_fast.generation.fim``).
        tokenizer: its tokenizer (``model.tokenizer`` after ``from_pretrained``).
        text: ``"ACGT[N:12]TTGA"`` (gaps ``[N:<bases>]`` exact, ``[N]`` free), a ``(left, length, right)`` tuple
            (``length`` None = free), or a list of these (a batch).
        num_samples: samples per item (rows ``items x num_samples``, decoded together).
        temperature, top_k, top_p, seed: sampling as :func:`enigma_fast.generation.generate` (temperature 0 =
            greedy); one ``torch.Generator`` seeded with ``seed`` draws every row.
        max_gap_length: most bases of a free-length gap.
        max_batch: most rows decoded at once.
        vocab: which tokens may fill a gap: ``"trained"`` (default) those made of the letters the model was trained
            on (``tokenizer.trained_letters``; A/C/G/T for folders that do not record them), ``"full"`` every piece
            and fallback token (lower case, N, IUPAC codes), or a ``(vocab_size,)`` bool mask (it must allow a
            single-base token). Special tokens and sentinels never appear in a fill.

    Returns:
        ``out[i][s]``: sample s of item i, the flanks as given with every gap filled; an exact gap of n bases gets
        exactly n bases, a free one 1..``max_gap_length``.

    Shapes: B = items x num_samples rows; source ``(B, S)`` = flank tokens with one sentinel per gap, left-padded
    (S <= block_size); every decoder token sits at the source position of its gap's sentinel (as in training);
    the decoder runs at most ``sum_j (1 + n_j) + 1`` steps (n_j = bases of gap j).

    Raises:
        TypeError / ValueError, one line naming the item (``text[2]: empty gap '[N:0]' at position 4``) or the
        option: malformed gaps, more gaps than sentinels, a tokenizer without sentinels, flanks longer than
        block_size, sampling options out of range.
    """
    items, fills = _fill(
        model, tokenizer, text, num_samples, temperature, top_k, top_p, seed, max_gap_length, max_batch, vocab
    )
    return [[it.masked.join(f) for f in samples] for it, samples in zip(items, fills, strict=True)]
