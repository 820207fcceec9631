"""Held-out evaluation (loss, bits per base, next-token accuracy) and the sampled continuation of a run.

Bits per base are counted per base, not per token: the summed cross-entropy of the scored targets (nats) over
the bases those targets stand for, divided by ln 2, so a k-mer model and a single-base model compare directly.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from enigma_fast.data.windows import EvalWindow
from enigma_fast.train.eval_share import ONE_PROCESS, EvalShare

__all__ = ["evaluate", "forward_loss", "sample_continuation"]


def forward_loss(model: Any, rows: torch.Tensor, kind: str, src_len: int, bos_id: int):
    """Logits, mean loss and targets of token windows ``rows`` ``(B, L)``.

    EnBERT: inputs ``rows[:, :-1]``, targets ``rows[:, 1:]`` (``(B, L-1)``). Enigma: the window split by
    ``Enigma.split_window`` into source ``rows[:, :src_len]`` and the continuation as targets (``(B, L-src_len)``).
    """
    if kind == "enbert":
        targets = rows[:, 1:]
        logits, loss = model(rows[:, :-1], targets)
    else:
        from enigma_fast.models import Enigma

        src, tgt_in, targets = Enigma.split_window(rows, src_len, bos_id)
        logits, loss = model(src, tgt_in, targets)
    return logits, loss, targets


def _groups(windows: list[EvalWindow], batch_size: int) -> list[list[EvalWindow]]:
    """The evaluation's batches: consecutive windows of equal length, at most ``batch_size`` each."""
    out, i = [], 0
    while i < len(windows):
        j = i
        while j < len(windows) and j - i < batch_size and windows[j].length == windows[i].length:
            j += 1
        out.append(windows[i:j])
        i = j
    return out


@torch.no_grad()
def evaluate(
    model: Any,
    tokens: np.ndarray,
    windows: list[EvalWindow],
    bases_per_token: torch.Tensor,
    kind: str,
    src_len: int,
    bos_id: int,
    batch_size: int,
    device: torch.device,
    autocast: Any = contextlib.nullcontext,
    share: EvalShare = ONE_PROCESS,
    tracks: dict[int, np.ndarray] | None = None,
) -> dict[str, float]:
    """Score held-out ``windows`` of ``tokens``; returns loss (nats/token), bpb (bits/base), accuracy
    (next-token argmax), and the counts ``tokens`` and ``bases`` scored.

    ``share``: under FSDP2 every rank calls this with its ``EvalShare(rank, world)`` and scores only its share of
    the batches; the figures are those of one process scoring all of them, bit for bit (see ``eval_share``).

    ``tracks`` ``{offset: (n,) float64}``: for a stretch of ``n`` tokens starting at ``offset`` in ``tokens``, the
    natural-log probability of every token a window scores is written at its place in the array (the per-token
    track ``enigma_fast.scoring.score_segments`` gives with the same windows); other stretches are not kept. Only
    one process keeps tracks (``share`` must be the whole)."""
    if tracks and share.world > 1:
        raise ValueError("evaluate: per-token tracks are kept by one process scoring every batch (share.world 1)")
    starts = np.asarray(sorted(tracks), dtype=np.int64) if tracks else None
    was_training = model.training
    model.eval()
    groups = _groups(windows, batch_size)
    rows_out = torch.zeros((len(groups), 4), dtype=torch.float64, device=device)  # nll, tokens, bases, correct
    for b, counted in share.batches(len(groups)):
        group = groups[b]
        length = group[0].length
        sl = min(src_len, length - 1) if kind == "enigma" else 0
        rows = torch.from_numpy(
            np.stack([np.asarray(tokens[w.start : w.start + length], dtype=np.int64) for w in group])
        ).to(device)
        with autocast():
            logits, _, targets = forward_loss(model, rows, kind, sl, bos_id)
        if not counted:  # a pass that keeps this rank in step with the others' (FSDP2 collectives)
            continue
        first = 1 if kind == "enbert" else sl  # window position of targets[:, 0]
        pos = torch.arange(targets.shape[1], device=device) + first
        score_from = torch.tensor([max(w.score_from, sl) for w in group], device=device)
        mask = pos[None, :] >= score_from[:, None]  # (B, T)
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        ce = ce.view(targets.shape)
        rows_out[b, 0] = (ce.double() * mask).sum()
        rows_out[b, 1] = mask.sum()
        rows_out[b, 2] = (bases_per_token[targets] * mask).sum()
        rows_out[b, 3] = ((logits.argmax(-1) == targets) & mask).sum()
        if starts is not None:
            _keep(tracks, starts, group, first, (-ce).double().cpu().numpy(), mask.cpu().numpy())
    model.train(was_training)
    nll_, tok_, bases_, correct = share.totals(rows_out)
    return {
        "loss": nll_ / max(tok_, 1.0),
        "bpb": nll_ / max(bases_, 1.0) / math.log(2),
        "accuracy": correct / max(tok_, 1.0),
        "tokens": tok_,
        "bases": bases_,
    }


def _keep(
    tracks: dict[int, np.ndarray],
    starts: np.ndarray,
    group: list[EvalWindow],
    first: int,
    lp: np.ndarray,
    m: np.ndarray,
) -> None:
    """Write the scored log-probabilities ``lp`` ``(B, T)`` (``m``: scored) of the windows ``group`` into ``tracks``
    (target t of a window is its token ``first + t``)."""
    for r, w in enumerate(group):
        j = int(np.searchsorted(starts, w.start, side="right")) - 1
        if j < 0:
            continue
        arr = tracks[int(starts[j])]
        pos = w.start - int(starts[j]) + first + np.flatnonzero(m[r])
        if len(pos) and pos[-1] < len(arr):
            arr[pos] = lp[r][m[r]]


@torch.no_grad()
def sample_continuation(
    model: Any, tokenizer: Any, prompt_ids: np.ndarray, new_tokens: int, seed: int, device: torch.device
) -> tuple[str, str]:
    """Sample ``new_tokens`` after ``prompt_ids`` (temperature 1); returns (prompt text, continuation text)."""
    idx = torch.as_tensor(np.asarray(prompt_ids, dtype=np.int64), device=device)[None]
    new_tokens = max(1, min(new_tokens, model.max_new_tokens_for(idx.shape[1])))
    out = model.generate(idx, new_tokens, temperature=1.0, seed=seed)
    return tokenizer.decode(idx[0].cpu()), tokenizer.decode(out[0, idx.shape[1] :].cpu())
