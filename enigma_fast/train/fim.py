"""The fill-in-the-middle objective of EnBERT (``--objective fim``): training rows and loss, and the held-out infill
score of the same masked spans the Enigma and the left-to-right EnBERT are scored on.

Training: each window of step s is reordered prefix-suffix-middle with probability ``fim_rate``
(``enigma_fast.data.fim``); the loss is the mean next-token cross-entropy over every target but the markers.

Held-out infill score (``fim_span_score``): for span j of held-out window k (``SpanEval``: start s, masks drawn from the
seed), with the span at window tokens ``[a, b)`` and the next span (or the window's end) at ``c``::

    prefix = tokens[max(segment start, s - context) : s + a]     all left context, as the EnBERT sees it
    middle = tokens[s + a : s + b]                                the masked tokens, scored
    suffix = tokens[s + b : s + c]                                the right flank up to the next masked span

The model reads ``<pre> prefix <suf> suffix <mid>`` (SPM, ``config.fim_spm``: ``<pre> <suf> suffix <mid>
prefix``) and predicts the middle token by token, its probabilities
restricted to the non-special tokens (as ``span.py``'s figures), so ``bits/base = sum -log2 p / bases``. Its right
flank stops at the next masked span: it sees no more than the Enigma (which reads the whole window with every span
masked) to the right, and the same as the left-to-right EnBERT to the left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from enigma_fast.data.fim import FimMarkers, fim_markers, fim_mode, fim_rows, fim_sequence, train_fim_cuts
from enigma_fast.models.base import IGNORE_INDEX
from enigma_fast.train.span import SpanEval, marked_figures, score_marked, special_mask

__all__ = ["FimObjective", "fim_loss", "fim_span_items", "fim_span_score"]


@dataclass
class FimObjective:
    """The FIM rows of a run: ``rows(step, n, rows)`` reorders the global batch's rows of step ``step``."""

    seed: int
    rate: float
    markers: FimMarkers
    mode: str = "psm"

    def rows(self, step: int, rows: np.ndarray, n: int, mine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model rows ``(len(mine), L)`` and loss mask ``(len(mine), L - 1)`` of this rank's ``rows`` (its ``mine``
        of the ``n`` global rows of step ``step``)."""
        cuts = train_fim_cuts(self.seed, step, n, rows.shape[1] - 4, self.rate)[mine]
        return fim_rows(rows, cuts, self.markers, self.mode)

    @staticmethod
    def counts(rows: np.ndarray, loss: np.ndarray, bases_per_token: np.ndarray) -> tuple[int, float]:
        """Target tokens in the loss and the bases they stand for."""
        t = rows[:, 1:]
        return int(loss.sum()), float(bases_per_token[t][loss].sum())


def fim_loss(model: Any, rows: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(B, L-1, V)`` and mean cross-entropy of model rows ``(B, L)`` over the targets ``rows[:, 1:]`` where
    ``loss_mask`` ``(B, L-1)`` holds."""
    targets = rows[:, 1:].masked_fill(~loss_mask, IGNORE_INDEX)
    return model(rows[:, :-1], targets)


def fim_span_items(
    ev: SpanEval, context: int, markers: FimMarkers, mode: str = "psm"
) -> list[tuple[np.ndarray, int, int]]:
    """One ``(sequence, middle_start, middle_len)`` per masked span of ``ev`` (module doc): the ``mode`` (PSM or SPM)
    ids ``(T,)`` without the closing ``<eot>``, and where the middle lies in it."""
    out = []
    for k, (s, n, seg) in enumerate(ev.windows.tolist()):
        mask = ev.masks[k]
        d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        nxt = np.append(starts[1:], n)
        for a, b, c in zip(starts.tolist(), ends.tolist(), nxt.tolist(), strict=True):
            prefix = np.asarray(ev.tokens[max(seg, s - context) : s + a], dtype=np.int64)
            middle = np.asarray(ev.tokens[s + a : s + b], dtype=np.int64)
            suffix = np.asarray(ev.tokens[s + b : s + c], dtype=np.int64)
            seq = fim_sequence(prefix, middle, suffix, markers, mode)[:-1]
            out.append((seq, len(prefix) + len(suffix) + 3, len(middle)))
    return out


@torch.no_grad()
def fim_span_score(
    model: Any,
    tok: Any,
    ev: SpanEval,
    bases_per_token: torch.Tensor,
    context: int = 128,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Score the masked tokens of ``ev`` with a FIM-trained EnBERT from both flanks (module doc): ``bpb``,
    ``accuracy``, ``tokens``, ``bases``, ``spans``."""
    was_training = model.training
    model.eval()
    special = special_mask(tok, model.config.vocab_size, device)
    items = fim_span_items(ev, context, fim_markers(tok), fim_mode(model))
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    sums = np.zeros(4)
    for i in range(0, len(order), batch_size):
        group = [items[j] for j in order[i : i + batch_size]]
        T = max(len(g[0]) for g in group)
        rows = np.full((len(group), T), tok.pad_id, dtype=np.int64)
        scored = np.zeros((len(group), T), dtype=bool)  # target positions (index into the sequence)
        for r, (seq, m0, m) in enumerate(group):
            rows[r, : len(seq)] = seq
            scored[r, m0 : m0 + m] = True
        # position t predicts token t + 1 (right padding changes nothing before it)
        sums += score_marked(model, rows, scored, special, bases_per_token, device)
    model.train(was_training)
    return {**marked_figures(sums), "spans": float(len(items))}
