"""The reading engine as it was before the batched one (``enigma_fast/_reading.py``), kept only as the benchmark's
peer: ``score_before`` and ``embed_before`` are ``scoring.score`` (one strand) and ``scoring.embed`` with the old
inner loops: windows planned one by one in Python, each batch gathered on the host and run through the whole
model (every position's logits), values copied back batch by batch; embeddings kept per chunk and concatenated.
The argument checks and the token-to-base arithmetic are the library's own (unchanged)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from enigma_fast import scoring
from enigma_fast.data.windows import EvalWindow

__all__ = ["embed_before", "score_before"]


def _eval_windows(segments: np.ndarray, window: int, stride: int) -> list[EvalWindow]:
    out: list[EvalWindow] = []
    for off, n in segments.tolist():
        if n < 2:
            continue
        if n <= window:
            out.append(EvalWindow(off, n, 1))
            continue
        out.append(EvalWindow(off, window, 1))
        scored = window
        while scored < n:
            end = min(scored + stride, n)
            start = end - window
            out.append(EvalWindow(off + start, window, scored - start))
            scored = end
    return out


def _target_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _enbert_batch(model, flat, starts, lengths, score_from, dev):
    L = int(lengths.max())
    ar = np.arange(L)
    idx = starts[:, None] + ar[None, :]
    real = ar[None, :] < lengths[:, None]
    rows = np.where(real, flat[np.minimum(idx, len(flat) - 1)], 0).astype(np.int64)
    rows_t = torch.from_numpy(rows).to(dev, non_blocking=True)
    logits, _ = model(rows_t[:, :-1])
    lp = _target_log_probs(logits, rows_t[:, 1:])
    scored = real[:, 1:] & (ar[None, 1:] >= score_from[:, None])
    return idx[:, 1:][scored], lp, scored


def _enigma_batch(model, flat, starts, lengths, score_from, context, bos_id, dev):
    sl = np.minimum(context, lengths - 1)
    tl = lengths - sl
    S, T = int(sl.max()), int(tl.max())
    cs = np.arange(S)[None, :] - (S - sl)[:, None]
    src = np.where(cs >= 0, flat[np.clip(starts[:, None] + cs, 0, len(flat) - 1)], 0).astype(np.int64)
    pt = sl[:, None] + np.arange(T)[None, :]
    real = np.arange(T)[None, :] < tl[:, None]
    idx = starts[:, None] + pt
    tgt = np.where(real, flat[np.minimum(idx, len(flat) - 1)], 0).astype(np.int64)
    tgt_t = torch.from_numpy(tgt).to(dev, non_blocking=True)
    src_t = torch.from_numpy(src).to(dev, non_blocking=True)
    tgt_in = torch.cat([torch.full_like(tgt_t[:, :1], bos_id), tgt_t[:, :-1]], dim=1)
    src_start = None if (sl == S).all() else torch.from_numpy(S - sl).to(dev)
    logits, _ = model(src_t, tgt_in, src_start=src_start)
    lp = _target_log_probs(logits, tgt_t)
    scored = real & (pt >= np.maximum(score_from, sl)[:, None])
    return idx[scored], lp, scored


def _run_windows(model, flat, windows, kind, context, batch_size, dev) -> np.ndarray:
    out = np.full(len(flat), np.nan, dtype=np.float64)
    if not windows:
        return out
    starts = np.fromiter((w.start for w in windows), dtype=np.int64, count=len(windows))
    lengths = np.fromiter((w.length for w in windows), dtype=np.int64, count=len(windows))
    score_from = np.fromiter((w.score_from for w in windows), dtype=np.int64, count=len(windows))
    order = np.argsort(-lengths, kind="stable")
    bos_id = int(getattr(model.config, "bos_id", 0))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(order), batch_size):
                sel = order[i : i + batch_size]
                if kind == "enbert":
                    pos, lp, scored = _enbert_batch(model, flat, starts[sel], lengths[sel], score_from[sel], dev)
                else:
                    pos, lp, scored = _enigma_batch(
                        model, flat, starts[sel], lengths[sel], score_from[sel], context, bos_id, dev
                    )
                out[pos] = lp.double().cpu().numpy()[scored]
    finally:
        model.train(was_training)
    return out


def score_before(
    model: Any, seqs: list[str], window: int | None = None, context: int | None = None, batch_size: int = 32
) -> list[scoring.SequenceScore]:
    """``scoring.score(model, seqs, window=, context=, batch_size=)`` (one strand, no per-base track) through the
    old engine, on the model's device."""
    kind = scoring._model_kind(model)
    tok = scoring._tokenizer(model, None)
    window, context = scoring.resolve_window(model, window, context)
    dev = next(model.parameters()).device
    ids = scoring._encode(tok, seqs, "seqs")
    lengths = np.array([len(a) for a in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(ids).astype(np.int64)
    segments = np.stack([offsets[:-1], lengths], axis=1)
    span, stride = (window + 1, window + 1 - context) if kind == "enbert" else (window, window - context)
    lp_all = _run_windows(model, flat, _eval_windows(segments, span, stride), kind, context, batch_size, dev)
    bpt, acgt = scoring.bases_per_token(tok), scoring._acgt_tokens(tok)
    out = []
    for i, s in enumerate(seqs):
        lp = lp_all[offsets[i] : offsets[i + 1]]
        n_count = int(np.count_nonzero(scoring._AMBIGUOUS[np.frombuffer(s.encode("latin-1"), dtype=np.uint8)]))
        keep = acgt[ids[i]] & ~np.isnan(lp)
        track = scoring._per_base(lp, ids[i], bpt, acgt)
        out.append(scoring._finish(len(s), n_count, track, False, float(lp[keep].sum())))
    return out


def embed_before(model: Any, seqs: list[str], layer: int = -1, per_token: bool = False, batch_size: int = 32):
    """``scoring.embed(model, seqs, layer=, per_token=, batch_size=)`` through the old loop."""
    kind = scoring._model_kind(model)
    tok = scoring._tokenizer(model, None)
    n_layers = len(model.blocks if kind == "enbert" else model.encoder)
    layer = int(layer) % (n_layers + 1)
    dev = next(model.parameters()).device
    ids = scoring._encode(tok, seqs, "seqs")
    block = int(model.config.block_size)
    chunks = [(i, a, min(a + block, len(x))) for i, x in enumerate(ids) for a in range(0, len(x), block)]
    order = sorted(range(len(chunks)), key=lambda c: -(chunks[c][2] - chunks[c][1]))
    d = int(model.config.d_model)
    states: list[np.ndarray | None] = [None] * len(chunks)
    module, which, _ = scoring._layer_hook(model, kind, layer)

    def hook(mod, args, output):
        raise scoring._Captured(output[which] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                sel = [chunks[c] for c in order[b : b + batch_size]]
                T = max(e - a for _, a, e in sel)
                rows = np.zeros((len(sel), T), dtype=np.int64)
                start = np.zeros(len(sel), dtype=np.int64)
                for r, (i, a, e) in enumerate(sel):
                    if kind == "enbert":
                        rows[r, : e - a] = ids[i][a:e]
                    else:
                        start[r] = T - (e - a)
                        rows[r, start[r] :] = ids[i][a:e]
                x = torch.from_numpy(rows).to(dev)
                try:
                    if kind == "enbert":
                        model(x)
                    else:
                        model.encode(x, torch.from_numpy(start).to(dev) if start.any() else None)
                    raise RuntimeError("the hidden-state hook did not run")
                except scoring._Captured as got:
                    h = got.value.float().cpu().numpy()
                for r, (c, (_, a, e)) in enumerate(zip(order[b : b + batch_size], sel, strict=True)):
                    states[c] = h[r, : e - a] if kind == "enbert" else h[r, start[r] :]
    finally:
        handle.remove()
        model.train(was_training)
    per_seq: list[list[np.ndarray]] = [[] for _ in seqs]
    for c, (i, _, _) in enumerate(chunks):
        per_seq[i].append(states[c])
    tokens = [np.concatenate(p) if p else np.zeros((0, d), dtype=np.float32) for p in per_seq]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.stack([t.mean(axis=0) if len(t) else np.full(d, np.nan, np.float32) for t in tokens])
    return scoring.Embeddings(
        mean.astype(np.float32), tokens if per_token else None, np.array([len(t) for t in tokens]), layer
    )
