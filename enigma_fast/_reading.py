"""The batched engine behind ``enigma_fast.scoring``: many windows per model call, no per-window host work.

Scoring. The windows (``enigma_fast.data.windows.eval_window_arrays``) are sorted by length (longest first, stable)
and read in groups of consecutive batches (``_GROUP_IDS`` window ids at most): a group's ids are gathered from the
flat id array with one vectorised index, checked against the vocabulary once and copied to the device once; each
batch is a slice of that tensor; its log-probabilities are written into one preallocated device buffer, and the
group is copied back and scattered into the output with one vectorised assignment. So the host does a fixed
amount of array work per group, none per window, and the device is never waited on inside a group.

A window scores the targets at window positions ``[first, length)`` (EnBERT ``first = max(score_from, 1)``;
Enigma ``first = max(score_from, src_len)``), a contiguous run, which is what makes the scatter one assignment.

EnBERT reads only what its scored targets need: every block but the last runs on all of a batch's positions (their
states are the keys and values of the positions after them), the last block's queries, its feed-forward, the final
norm and the LM head run only on the last ``keep`` positions, where ``keep`` covers the batch's scored targets
(the last ``stride`` of a window: about half of the default windows). The last block's attention reads all keys,
with the queries placed at the last ``keep`` positions (``rel_attention`` with ``Tq < Tk``), so each kept
position sees exactly what it sees in the full forward.

Embeddings. Sequences are cut into chunks of ``block_size`` tokens, sorted by length and batched the same way;
per-token states are written straight into one preallocated ``(sum T_i, d_model)`` array, and each sequence's
mean is accumulated as the states arrive, in the order and precision of ``numpy.mean`` over its tokens (float32
sums token after token), so that the per-token array need not be kept when only the means are asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from enigma_fast.data.windows import EvalWindowArrays

logger = logging.getLogger("enigma_fast.scoring")

_GROUP_IDS = 1 << 22  # window ids gathered, checked and copied to the device at a time (32 MiB as int64)
_CPU_CALL_BYTES = 16 << 20  # on CPU, the widest activation of one model call stays within this (see per_call)


def per_call(model: Any, dev: torch.device, batch_size: int, length: int) -> int:
    """Windows (or chunks) of ``length`` tokens per model call: ``batch_size``, and on CPU at most as many as keep
    the call's widest activation (float32 ``(B, length, max(ffn_mult * d_model, vocab_size))``) within 16 MiB.

    glibc's malloc maps a block above its mmap threshold afresh from the OS and unmaps it when it is freed; the
    threshold adapts upward to the sizes freed, but never past 32 MiB. So every call of a bigger batch page-faults
    its activations in again, 4 KiB at a time (32 windows of 1024 tokens on the tiny model: ~6,000 faults per
    window, about a sixth of the process's CPU time spent in the kernel), where blocks under the cap are recycled.
    Smaller calls leave the arithmetic as it is (results do not depend on the batching).
    """
    if dev.type != "cpu":
        return batch_size
    c = model.config
    width = 4 * max(int(getattr(c, "ffn_mult", 4)) * int(c.d_model), int(c.vocab_size))
    return max(1, min(batch_size, _CPU_CALL_BYTES // max(1, width * length)))


class Reporter:
    """Progress over tokens: a tqdm bar on stderr when installed (else an INFO line now and then), or a caller's
    object with ``update(n)``."""

    def __init__(self, progress: Any, total: int, desc: str) -> None:
        self.bar, self.own, self.total, self.done, self.next_log = None, False, total, 0, total // 10
        if progress is True:
            try:
                from tqdm.auto import tqdm

                self.bar, self.own = tqdm(total=total, desc=desc, unit="tok", unit_scale=True, leave=False), True
            except ImportError:
                self.bar = None
        elif progress is not False and progress is not None:
            if not callable(getattr(progress, "update", None)):
                raise TypeError(f"progress must be a bool or an object with update(n), got {type(progress).__name__}")
            self.bar = progress
        self.log = progress is True and self.bar is None

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.log and self.done >= self.next_log:
            logger.info("scored %d / %d tokens", self.done, self.total)
            self.next_log += max(1, self.total // 10)

    def close(self) -> None:
        if self.own:
            self.bar.close()


def _groups(sizes: np.ndarray, batch_size: int, budget: int) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` of whole batches (``batch_size`` items each, the last shorter) whose ``sizes`` sum to at most
    ``budget`` (a single batch always fits)."""
    n = len(sizes)
    edges = np.arange(0, n, batch_size)
    per_batch = np.add.reduceat(sizes, edges) if n else np.zeros(0, dtype=np.int64)
    out, a, acc = [], 0, 0
    for i, s in enumerate(per_batch.tolist()):  # one step per batch, not per window
        if i > 0 and acc + s > budget:
            out.append((int(edges[a]), int(edges[i])))
            a, acc = i, 0
        acc += s
    if n:
        out.append((int(edges[a]), n))
    return out


def _gather(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int, right: bool) -> np.ndarray:
    """Ids ``(n, width)`` int64: row r holds ``flat[starts[r] : starts[r] + lengths[r]]``, left-aligned and
    right-padded with 0 (``right=False``) or right-aligned and left-padded (``right=True``)."""
    col = np.arange(width, dtype=np.int64)[None, :]
    shift = (width - lengths)[:, None] if right else 0
    pos = starts[:, None] + col - shift
    real = (col >= shift) & (col < shift + lengths[:, None]) if right else col < lengths[:, None]
    ids = np.asarray(flat[np.clip(pos, 0, max(len(flat) - 1, 0))], dtype=np.int64)
    ids[~real] = 0
    return ids


def _check_ids(ids: np.ndarray, real: np.ndarray | None, pos: np.ndarray, vocab: int, name: str) -> None:
    """ValueError naming the first id of ``ids`` (where ``real``) outside ``[0, vocab)`` and its flat position."""
    lo, hi = int(ids.min(initial=0)), int(ids.max(initial=0))
    if lo >= 0 and hi < vocab:
        return
    bad = (ids < 0) | (ids >= vocab)
    if real is not None:
        bad &= real
    r, c = np.unravel_index(int(np.argmax(bad)), ids.shape)
    got = int(ids[r, c])
    raise ValueError(f"{name} must hold token ids in [0, vocab_size={vocab}), got {got} at {name}[{pos[r, c]}]")


def target_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[target]`` ``(B, T)`` float32, computed in float32 (as ``F.cross_entropy`` on
    ``logits.float()`` does in the trainer)."""
    logits = logits.float()
    return logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


class BaseChain:
    """What ``chain_log_probs`` needs of a k-mer tokenizer (k > 1): ``codes`` ``(V,)`` int64, the base-4 number of
    each id that stands for k of A/C/G/T (A=0, C=1, G=2, T=3, first base most significant), -1 for every other id;
    ``ids`` ``(4^k,)`` int64, the id of each code; ``k``."""

    def __init__(self, codes: torch.Tensor, ids: torch.Tensor, k: int) -> None:
        self.codes, self.ids, self.k = codes, ids, k

    def to(self, dev: torch.device) -> BaseChain:
        return BaseChain(self.codes.to(dev), self.ids.to(dev), self.k)


def chain_log_probs(logits: torch.Tensor, targets: torch.Tensor, chain: BaseChain) -> torch.Tensor:
    """Per-base chain-rule log-probabilities ``(B, T, 1 + k)`` float32 of k-mer targets ``(B, T)`` under
    ``logits`` ``(B, T, V)``: column 0 is ``log p(target)`` (``target_log_probs``), column j (1..k) the log-probability
    of the target's base j given the context and its bases 1..j-1, read off the whole distribution:

        P_j(b_1..b_j) = sum of p(t) over the k-mer tokens t whose first j bases are b_1..b_j     (P_0 = 1)
        column j      = log P_j(b_1..b_j) - log P_{j-1}(b_1..b_{j-1})

    so columns 1..k sum to column 0 (the mass of special tokens is charged to base 1). Targets that are not a
    k-mer of A/C/G/T get NaN in columns 1..k."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    lp = logits - lse
    k = chain.k
    levels = [lp.index_select(-1, chain.ids)]  # (B, T, 4^k): log P_k of every k-mer
    for _ in range(k - 1):
        m = levels[0]
        levels.insert(0, torch.logsumexp(m.unflatten(-1, (m.shape[-1] // 4, 4)), dim=-1))  # log P_j, j = k-1 .. 1
    code = chain.codes[targets]  # (B, T)
    valid = code >= 0
    c = code.clamp(min=0)
    out = torch.empty((*targets.shape, 1 + k), dtype=torch.float32, device=logits.device)
    out[..., 0] = lp.gather(-1, targets[..., None]).squeeze(-1)
    prev = torch.zeros_like(out[..., 0])
    for j in range(1, k + 1):
        cur = levels[j - 1].gather(-1, (c // 4 ** (k - j))[..., None]).squeeze(-1)
        out[..., j] = torch.where(valid, cur - prev, float("nan"))
        prev = cur
    return out


def _trimmable(model: Any) -> bool:
    """Whether ``enbert_tail_logits`` may drive ``model``'s blocks directly: a plain (not compiled or wrapped)
    EnBERT whose blocks have no cross-attention."""
    from enigma_fast.models.enbert import EnBERT

    return type(model) is EnBERT and all(blk.cross is None for blk in model.blocks)


def enbert_tail_logits(model: Any, x: torch.Tensor, keep: int) -> torch.Tensor:
    """EnBERT logits ``(B, keep, V)`` of the last ``keep`` positions of ``x`` ``(B, T)`` (eval mode).

    The same arithmetic as ``model(x)[0][:, -keep:]`` up to float rounding: blocks ``0 .. L-2`` on all T
    positions, then the last block with its queries (and everything after its attention) on the last ``keep``::

        y, h = norm1(f, h);  a = attn(q = y[:, -keep:], kv = y);  h = h[:, -keep:]
        y, h = norm2(a, h);  y, _ = norm_f(ffn(y), h);  logits = lm_head(y)
    """
    blocks = model.blocks
    h = model.tok_emb(x)  # (B, T, d); dropout is the identity in eval mode
    f = None
    for blk in blocks[:-1]:
        f, h = blk(f, h)
    last = blocks[-1]
    y, h = (last.norm1(h), h) if f is None else last.norm1(f, h)
    if keep < x.shape[1]:
        a = last.attn(y[:, -keep:], y)  # queries at positions T-keep .. T-1 of the T keys, causal
        h = h[:, -keep:].contiguous()  # add_rms_norm reads evenly spaced rows
    else:
        a = last.attn(y)
    y, h = last.norm2(a, h)
    y, _ = model.norm_f(last.ffn(y), h)
    return model.lm_head(y)


def run_windows(
    model: Any,
    flat: np.ndarray,
    wins: EvalWindowArrays,
    kind: str,
    context: int,
    batch_size: int,
    dev: torch.device,
    autocast: Callable[[], Any],
    progress: Any,
    name: str = "tokens",
    chain: BaseChain | None = None,
) -> np.ndarray:
    """Per-token natural-log probabilities ``(len(flat),)`` float64 of the ids ``flat`` scored by ``wins`` (NaN
    where no window scores a token); the module doc describes the batching. Ids outside the model's vocabulary
    raise a ValueError naming ``name`` and the position. With ``chain`` (a k-mer tokenizer's): ``(len(flat), 1 + k)``,
    the columns of ``chain_log_probs``."""
    cols = () if chain is None else (1 + chain.k,)
    out = np.full((len(flat), *cols), np.nan, dtype=np.float64)
    if not len(wins.starts):
        return out
    order = np.argsort(-wins.lengths, kind="stable")
    starts, lengths, score_from = wins.starts[order], wins.lengths[order], wins.score_from[order]
    enbert = kind == "enbert"
    src = None if enbert else np.minimum(context, lengths - 1)  # Enigma: source ids per window (as the trainer)
    first = np.maximum(score_from, 1 if enbert else src)  # window position of each window's first scored target
    n_scored = np.maximum(lengths - first, 0)
    bos_id = int(getattr(model.config, "bos_id", 0))
    vocab = int(model.config.vocab_size)
    trim = enbert and _trimmable(model)
    batch_size = per_call(model, dev, batch_size, int(lengths[0]))
    reporter = Reporter(progress, int(n_scored.sum()) or len(flat), "score")
    was_training = model.training
    if chain is not None:
        chain = chain.to(dev)

    def values(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return target_log_probs(logits, targets) if chain is None else chain_log_probs(logits, targets, chain)

    model.eval()
    try:
        with torch.inference_mode():
            for g0, g1 in _groups(lengths, batch_size, _GROUP_IDS):
                width = int(lengths[g0])  # the longest window of the group (sorted longest first)
                ids = _gather(flat, starts[g0:g1], lengths[g0:g1], width, right=False)
                col = np.arange(width, dtype=np.int64)[None, :]
                _check_ids(ids, col < lengths[g0:g1, None], starts[g0:g1, None] + col, vocab, name)
                ids_t = torch.from_numpy(ids).to(dev, non_blocking=True)
                buf = torch.full((g1 - g0, width, *cols), float("nan"), dtype=torch.float32, device=dev)  # (n, width)
                for b0 in range(g0, g1, batch_size):
                    b1 = min(b0 + batch_size, g1)
                    r0, r1 = b0 - g0, b1 - g0
                    L = int(lengths[b0])
                    with autocast():
                        if enbert:
                            keep = L - int(first[b0:b1].min())  # targets at window positions L-keep .. L-1
                            x = ids_t[r0:r1, : L - 1]
                            logits = enbert_tail_logits(model, x, keep) if trim else model(x)[0][:, -keep:]
                            buf[r0:r1, L - keep : L] = values(logits, ids_t[r0:r1, L - keep : L])
                        else:
                            rows, dst = ids_t[r0:r1, :L], buf[r0:r1, :L]
                            _enigma_batch(model, rows, lengths[b0:b1], src[b0:b1], bos_id, dst, dev, values)
                    reporter.update(int(n_scored[b0:b1].sum()))
                lp = buf.cpu().numpy()
                scored = (col >= first[g0:g1, None]) & (col < lengths[g0:g1, None])
                out[(starts[g0:g1, None] + col)[scored]] = lp[scored]
    finally:
        model.train(was_training)
        reporter.close()
    return out


def _enigma_batch(
    model: Any,
    rows: torch.Tensor,
    lengths: np.ndarray,
    src: np.ndarray,
    bos_id: int,
    dst: torch.Tensor,
    dev: torch.device,
    values: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = target_log_probs,
) -> None:
    """One batch of Enigma windows ``rows`` ``(B, L)`` (right-padded with 0 past ``lengths``): source = the first
    ``src[r]`` ids of row r (left-padded, ``src_start``), target = the rest (right-padded); writes ``log p`` of
    target t of row r at ``dst[r, src[r] + t]`` (padding positions get values that are never read)."""
    S, T = int(src.max()), int((lengths - src).max())  # src[r] + T <= L for every row: no index leaves the row
    sl = torch.from_numpy(src).to(dev, non_blocking=True)  # (B,)
    cs = torch.arange(S, device=dev)[None, :] - (S - sl)[:, None]  # source column c holds window position cs
    src_ids = rows.gather(1, cs.clamp(min=0)).masked_fill(cs < 0, 0)
    pt = sl[:, None] + torch.arange(T, device=dev)[None, :]  # target column t holds window position pt
    tgt = rows.gather(1, pt)  # 0 past a row's length (the rows are padded with 0)
    tgt_in = torch.cat([torch.full_like(tgt[:, :1], bos_id), tgt[:, :-1]], dim=1)
    src_start = None if (src == S).all() else (S - sl)
    logits, _ = model(src_ids, tgt_in, src_start=src_start)
    lp = values(logits, tgt)  # (B, T) or (B, T, C)
    if (src == S).all():
        dst[:, S : S + T] = lp
    elif lp.dim() == 2:
        dst.scatter_(1, pt, lp)
    else:
        dst.scatter_(1, pt[..., None].expand(-1, -1, lp.shape[-1]), lp)


def embed_chunks(
    ids: list[np.ndarray],
    block: int,
    states: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    left_pad: bool,
    d: int,
    batch_size: int,
    dev: torch.device,
    per_token: bool,
) -> tuple[np.ndarray, list[np.ndarray] | None, np.ndarray]:
    """Hidden states of N id sequences read in non-overlapping chunks of ``block`` tokens (the module doc).

    ``states(x, start)`` returns the wanted layer's states ``(B, L, d)`` of the ids ``x`` ``(B, L)`` (right-padded;
    or left-padded from ``start`` ``(B,)`` when ``left_pad``; None when no row is padded). Returns the means
    ``(N, d)`` float32 (``numpy.mean`` over each sequence's tokens; NaN for an empty one), the per-token states
    (N views ``(T_i, d)`` of one float32 array) when ``per_token``, and the token counts ``(N,)``."""
    N = len(ids)
    T = np.array([len(x) for x in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(T)]).astype(np.int64)
    flat = np.concatenate(ids).astype(np.int64, copy=False) if N else np.zeros(0, dtype=np.int64)
    n_ch = -(-T // block)  # chunks per sequence
    seq = np.repeat(np.arange(N, dtype=np.int64), n_ch)  # the sequence of each chunk
    k = np.arange(len(seq), dtype=np.int64) - np.repeat(np.cumsum(n_ch) - n_ch, n_ch)  # chunk number in it
    size = np.minimum(block, T[seq] - k * block)
    start = offsets[seq] + k * block  # flat position of each chunk's first token
    order = np.argsort(-size, kind="stable")  # a sequence's chunks stay in order: full ones first, its tail last
    seq, size, start = seq[order], size[order], start[order]
    tokens = np.empty((int(offsets[-1]), d), dtype=np.float32) if per_token else None
    sums = np.zeros((N, d), dtype=np.float32)
    begun = np.zeros(N, dtype=bool)
    single = n_ch == 1
    with torch.inference_mode():
        for g0, g1 in _groups(size, batch_size, _GROUP_IDS):
            width = int(size[g0])
            ids_t = torch.from_numpy(_gather(flat, start[g0:g1], size[g0:g1], width, right=left_pad)).to(dev)
            for b0 in range(g0, g1, batch_size):
                b1 = min(b0 + batch_size, g1)
                L, n = int(size[b0]), size[b0:b1]
                col = np.arange(L, dtype=np.int64)[None, :]
                if left_pad:
                    pad = L - n  # (B,) left padding of each row within the batch's L columns
                    x = ids_t[b0 - g0 : b1 - g0, width - L :]
                    real = col >= pad[:, None]
                    st = torch.from_numpy(pad).to(dev) if pad.any() else None
                else:
                    x, real, st = ids_t[b0 - g0 : b1 - g0, :L], col < n[:, None], None
                h = states(x, st).float().cpu().numpy()  # (B, L, d)
                h[~real] = 0.0  # padding adds +0.0 to the sums below: the same float32 sums as without it
                if tokens is not None:
                    pos = start[b0:b1, None] + col - (pad[:, None] if left_pad else 0)
                    tokens[pos[real]] = h[real]
                _accumulate(sums, begun, single, seq[b0:b1], h, real)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.true_divide(sums, T.astype(np.intp)[:, None], out=sums, casting="unsafe")  # as numpy.mean
    mean[T == 0] = np.nan
    per = [tokens[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)] if per_token else None
    return mean, per, T


def _accumulate(
    sums: np.ndarray, begun: np.ndarray, single: np.ndarray, seq: np.ndarray, h: np.ndarray, real: np.ndarray
) -> None:
    """Add the states ``h`` ``(B, L, d)`` (zero where not ``real``) of chunks of sequences ``seq`` ``(B,)`` to their
    float32 sums, token after token as ``numpy.add.reduce`` over a sequence's tokens does. Single-chunk sequences:
    one reduction over the batch; a longer sequence continues its sum over its chunks' tokens (in order), one
    reduction per run of its chunks in the batch."""
    one = single[seq]
    if one.any():
        sums[seq[one]] = h[one].sum(axis=1)
    rows = np.flatnonzero(~one)
    if not len(rows):
        return
    cut = np.flatnonzero(np.diff(seq[rows])) + 1
    for run in np.split(rows, cut):  # runs of consecutive chunks of one sequence
        s = int(seq[run[0]])
        parts = [h[r][real[r]] for r in run.tolist()]
        if begun[s]:
            parts.insert(0, sums[s][None])
        sums[s] = np.add.reduce(np.concatenate(parts), axis=0)
        begun[s] = True
