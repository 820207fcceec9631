"""The span-corruption objective of Enigma: training batches, held-out infill bits per base, and the left-context
score of the same bases by an EnBERT.

Training (``--objective span``): each window of step s is corrupted by its mask from
``enigma_fast.data.spans.train_span_masks(seed, s, ...)`` (``Enigma.span_corrupt``) and the loss is the mean
cross-entropy of every target token (sentinels, span tokens, ``<eos>``).

Held-out score: the held-out segments are tiled into windows (``span_eval_windows``), each masked by its own
deterministic mask (``eval_span_masks``). For a masked token x at target position t::

    bits(x) = -log2 softmax(logits_t restricted to the non-special tokens)[x]

i.e. the probability that x is the token given that a base comes here (the span length known, as in infilling with
an exact length), and

    infill bits/base = sum over masked tokens of bits(x) / bases those tokens stand for.

``bpb_with_ends`` adds the unrestricted cost of each target token (sentinels and ``<eos>``: where each span ends)
over the same bases. An EnBERT scores the same tokens from their left context alone (up to ``context`` tokens before
the window, within the segment), with the same restriction to non-special tokens, so the two figures differ only in
the context each model sees.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from enigma_fast.data.spans import (
    check_span_options,
    eval_span_masks,
    span_counts,
    span_eval_windows,
    train_span_masks,
)
from enigma_fast.models.base import IGNORE_INDEX
from enigma_fast.train.eval_share import ONE_PROCESS, EvalShare

__all__ = [
    "SpanEval",
    "SpanObjective",
    "bases_per_token",
    "check_same_tokens",
    "check_span_fit",
    "enbert_span_score",
    "load_enbert",
    "marked_figures",
    "parse_span_mix",
    "score_marked",
    "special_mask",
    "span_loss",
    "span_summary",
]

logger = logging.getLogger(__name__)


def special_mask(tok: Any, vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(vocab_size,)`` bool: True at the ids of the tokenizer's special tokens (pad, unk, bos, eos, mask,
    sentinels)."""
    out = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    ids = [i for i in tok.special_ids.values() if i < vocab_size]
    out[torch.tensor(ids, dtype=torch.long, device=device)] = True
    return out


def check_span_fit(window: int, noise_density: float, mean_span: float, num_sentinels: int, block_size: int) -> None:
    """ValueError unless a window of ``window`` tokens has at most ``num_sentinels`` spans and its source
    (``window - n + m`` tokens: n masked in m spans) fits the model's ``block_size`` (decoder tokens sit at the
    positions of their sentinels, inside the source)."""
    n, m = span_counts(window, noise_density, mean_span)
    if m > num_sentinels:
        raise ValueError(
            f"a window of {window} tokens gets {m} spans at noise_density {noise_density} and mean_span "
            f"{mean_span}, but the tokenizer has {num_sentinels} sentinels; use a smaller --window, a "
            "larger --mean-span or a tokenizer with more sentinels"
        )
    if window - n + m > block_size:
        raise ValueError(
            f"span corruption of a {window}-token window makes a source of {window - n + m} tokens, "
            f"more than the model's block_size {block_size}; use a smaller --window"
        )


def span_loss(
    model: Any, rows: torch.Tensor, masks: torch.Tensor, tok: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits ``(B, T, V)``, mean loss and targets ``(B, T)`` of windows ``rows`` ``(B, L)`` corrupted by ``masks``
    ``(B, L)`` bool."""
    from enigma_fast.models import Enigma

    sb = Enigma.span_corrupt(rows, masks, tok.sentinel_ids, tok.bos_id, tok.eos_id, tok.pad_id)
    logits, loss = model(sb.src, sb.tgt_in, sb.targets, src_start=sb.src_start, tgt_pos=sb.tgt_pos)
    return logits, loss, sb.targets


MIX_STREAM = 0x4D495800  # "MIX": the third seed word of a mixture's choice of denoiser per step


def parse_span_mix(spec: str, noise_density: float, mean_span: float) -> list[tuple[float, float] | None]:
    """The denoisers of ``--span-mix``: ``"0.15:3,0.5:1.5,continuation"`` -> ``[(0.15, 3.0), (0.5, 1.5), None]``
    (None: the continuation task); ``""`` -> ``[(noise_density, mean_span)]``. ValueError naming a bad item."""
    if not spec.strip():
        return [(noise_density, mean_span)]
    out: list[tuple[float, float] | None] = []
    for item in spec.split(","):
        item = item.strip()
        if item == "continuation":
            out.append(None)
            continue
        try:
            d, m = (float(x) for x in item.split(":"))
        except ValueError:
            raise ValueError(
                f"span_mix items must be 'noise_density:mean_span' or 'continuation', got {item!r}"
            ) from None
        check_span_options(d, m)
        out.append((d, m))
    if all(x is None for x in out):
        raise ValueError(f"span_mix must hold at least one span denoiser, got {spec!r}")
    return out


@dataclass
class SpanObjective:
    """Span corruption with the run's options; ``masks(step, n)`` are the masks of the global batch of a step.

    With several ``denoisers`` (``parse_span_mix``), step s uses the one drawn from ``default_rng([seed, s,
    MIX_STREAM])``: span corruption with its density and mean span, or (None) the continuation task, for which
    ``masks`` returns None. One denoiser: every step, no draw (the masks of a run without a mixture)."""

    seed: int
    window: int
    noise_density: float
    mean_span: float
    denoisers: list[tuple[float, float] | None] | None = None

    def denoiser(self, step: int) -> tuple[float, float] | None:
        """The denoiser of step ``step``: ``(noise_density, mean_span)`` or None (continuation)."""
        mix = self.denoisers or [(self.noise_density, self.mean_span)]
        if len(mix) == 1:
            return mix[0]
        return mix[int(np.random.default_rng([self.seed, step, MIX_STREAM]).integers(len(mix)))]

    def masks(self, step: int, n: int) -> np.ndarray | None:
        """``(n, window)`` bool masks of step ``step`` (None: a continuation step); a pure function of the step."""
        d = self.denoiser(step)
        return None if d is None else train_span_masks(self.seed, step, n, self.window, d[0], d[1])

    @staticmethod
    def counts(rows: np.ndarray, masks: np.ndarray, bases_per_token: np.ndarray) -> tuple[int, float]:
        """Target tokens (spans' tokens, one sentinel per span, one ``<eos>`` per row) and the bases they stand for."""
        m = int((masks[0] & ~np.concatenate([[False], masks[0, :-1]])).sum())  # spans per row (equal in every row)
        return int(masks.sum()) + rows.shape[0] * (m + 1), float(bases_per_token[rows[masks]].sum())


class SpanEval:
    """The held-out windows and masks of one (segments, window, noise_density, mean_span, seed): the same spans for
    the trainer's figure, an EnBERT's figure and ``python -m enigma_fast.train.infill_eval``."""

    def __init__(
        self,
        tokens: np.ndarray,
        segments: np.ndarray,
        window: int,
        noise_density: float,
        mean_span: float,
        seed: int = 0,
        max_windows: int = 0,
    ) -> None:
        self.tokens = tokens
        wins = span_eval_windows(segments, window)
        if max_windows and len(wins) > max_windows:  # evenly spread, always the same ones
            wins = wins[np.unique(np.linspace(0, len(wins) - 1, max_windows).round().astype(np.int64))]
        if not len(wins):
            raise ValueError(f"the held-out part holds no window of {min(window, 16)} tokens or more to mask")
        self.windows = wins  # (N, 3): start, length, segment start
        self.masks = eval_span_masks(seed, [int(n) for n in wins[:, 1]], noise_density, mean_span)

    def __len__(self) -> int:
        return len(self.windows)

    def subset(self, count: int) -> SpanEval:
        """The same evaluation on ``count`` windows spread over the held-out part (periodic evaluations)."""
        pick = np.unique(np.linspace(0, len(self.windows) - 1, min(count, len(self.windows))).round().astype(int))
        out = SpanEval.__new__(SpanEval)
        out.tokens, out.windows, out.masks = self.tokens, self.windows[pick], [self.masks[i] for i in pick]
        return out

    def _groups(self, batch_size: int):
        """Batches of window indices of equal length (equal lengths give equal mask counts)."""
        i, n = 0, len(self.windows)
        while i < n:
            j = i
            while j < n and j - i < batch_size and self.windows[j, 1] == self.windows[i, 1]:
                j += 1
            yield list(range(i, j))
            i = j

    def _rows(self, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.stack([np.asarray(self.tokens[s : s + n], dtype=np.int64) for s, n, _ in self.windows[idx].tolist()])
        return rows, np.stack([self.masks[i] for i in idx])

    @torch.no_grad()
    def score_enigma(
        self,
        model: Any,
        tok: Any,
        bases_per_token: torch.Tensor,
        batch_size: int = 32,
        device: torch.device | str = "cpu",
        autocast: Any = contextlib.nullcontext,
        share: EvalShare = ONE_PROCESS,
    ) -> dict[str, float]:
        """Infill figures of an Enigma (see the module doc): ``bpb`` (span length known), ``bpb_with_ends``,
        ``loss`` (nats per target token, the training loss), ``accuracy`` (argmax over non-special tokens),
        ``tokens`` and ``bases`` scored, ``spans``. ``share``: this rank's share of the batches under FSDP2, with
        the figures of one process scoring all of them (``train/eval_share.py``)."""
        was_training = model.training
        model.eval()
        special = special_mask(tok, model.config.vocab_size, device)
        keys = ("nll", "nll_all", "tok_all", "bases", "correct", "tokens", "spans")
        groups = list(self._groups(batch_size))
        sums = torch.zeros((len(groups), len(keys)), dtype=torch.float64)
        for b, counted in share.batches(len(groups)):
            rows, masks = self._rows(groups[b])
            x = torch.from_numpy(rows).to(device)
            m = torch.from_numpy(masks).to(device)
            with autocast():
                logits, _, targets = span_loss(model, x, m, tok)
            if not counted:  # a pass that keeps this rank in step with the others' (FSDP2 collectives)
                continue
            logits = logits.float()
            valid = targets != IGNORE_INDEX
            t = targets.clamp_min(0)
            is_base = valid & ~special[t]
            ce_all = F.cross_entropy(logits.transpose(1, 2), t, reduction="none")  # (B, T)
            restricted = logits.masked_fill(special, float("-inf"))
            ce_base = F.cross_entropy(restricted.transpose(1, 2), t, reduction="none")
            sums[b] = torch.tensor(
                [
                    float(torch.where(is_base, ce_base, 0.0).sum()),  # (inf at special targets, left out)
                    float((ce_all * valid).sum()),
                    float(valid.sum()),
                    float((bases_per_token[t] * is_base).sum()),
                    float(((restricted.argmax(-1) == t) & is_base).sum()),
                    float(is_base.sum()),
                    float((m & ~torch.cat([torch.zeros_like(m[:, :1]), m[:, :-1]], 1)).sum()),
                ],
                dtype=torch.float64,
            )
        model.train(was_training)
        if share.world > 1:
            sums = sums.to(device)  # the collective runs on the backend's device (NCCL: the GPU)
        acc = dict(zip(keys, share.totals(sums), strict=True))
        bases = max(acc["bases"], 1.0)
        return {
            "loss": acc["nll_all"] / max(acc["tok_all"], 1.0),
            "bpb": acc["nll"] / bases / math.log(2),
            "bpb_with_ends": acc["nll_all"] / bases / math.log(2),
            "accuracy": acc["correct"] / max(acc["tokens"], 1.0),
            "tokens": acc["tokens"],
            "bases": acc["bases"],
            "spans": acc["spans"],
        }

    @torch.no_grad()
    def score_left_to_right(
        self,
        model: Any,
        tok: Any,
        bases_per_token: torch.Tensor,
        context: int = 128,
        batch_size: int = 32,
        device: torch.device | str = "cpu",
    ) -> dict[str, float]:
        """The same masked tokens scored by a left-to-right model (EnBERT) from up to ``context`` tokens before the
        window plus the window's own tokens before each one (never from the right): ``bpb``, ``accuracy``,
        ``tokens``, ``bases``. See ``enbert_span_score``."""
        return enbert_span_score(model, tok, self, bases_per_token, context, batch_size, device)


@torch.no_grad()
def enbert_span_score(
    model: Any,
    tok: Any,
    ev: SpanEval,
    bases_per_token: torch.Tensor,
    context: int = 128,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Score the masked tokens of ``ev`` with a left-to-right model: input ``tokens[c : start + length]`` with
    ``c = max(segment_start, start - context)``; the logits at input position i - 1 give token i's probability,
    restricted to the non-special tokens of ``tok`` (as the Enigma's figure). Returns ``bpb`` (bits per base),
    ``accuracy``, ``tokens``, ``bases``."""
    was_training = model.training
    model.eval()
    special = special_mask(tok, model.config.vocab_size, device)
    items = []
    for k, (s, n, seg) in enumerate(ev.windows.tolist()):
        c = max(seg, s - context)
        items.append((s + n - c, k, c))
    items.sort()
    sums = np.zeros(4)
    i = 0
    while i < len(items):
        j = i
        while j < len(items) and j - i < batch_size and items[j][0] == items[i][0]:
            j += 1
        group = items[i:j]
        i = j
        length = group[0][0]
        rows = np.stack([np.asarray(ev.tokens[c : c + length], dtype=np.int64) for _, _, c in group])
        # positions of the masked tokens within each input row
        scored = np.zeros(rows.shape, dtype=bool)
        for r, (_, k, c) in enumerate(group):
            s, n, _ = ev.windows[k].tolist()
            scored[r, s - c : s - c + n] = ev.masks[k]
        sums += score_marked(model, rows, scored, special, bases_per_token, device)
    model.train(was_training)
    return marked_figures(sums)


def score_marked(
    model: Any,
    rows: np.ndarray,
    scored: np.ndarray,
    special: torch.Tensor,
    bases_per_token: torch.Tensor,
    device: torch.device | str,
) -> np.ndarray:
    """Left-to-right scores of the marked tokens of ``rows`` ``(B, T)`` (ids): ``scored`` ``(B, T)`` bool marks
    the targets (column 0 never counts: nothing precedes it); the logits at position i - 1 give token i's
    probability, restricted to the ids not in ``special`` ``(V,)``. Returns the sums ``[nll (nats), bases,
    correct, tokens]`` ``(4,)`` float64."""
    x = torch.from_numpy(rows).to(device)
    logits, _ = model(x[:, :-1])
    logits = logits.float().masked_fill(special, float("-inf"))
    t = x[:, 1:]
    sc = torch.from_numpy(scored[:, 1:]).to(device)
    ce = F.cross_entropy(logits.transpose(1, 2), t, reduction="none")
    return np.array(
        [
            float(torch.where(sc, ce, 0.0).sum()),
            float((bases_per_token[t] * sc).sum()),
            float(((logits.argmax(-1) == t) & sc).sum()),
            float(sc.sum()),
        ]
    )


def marked_figures(sums: np.ndarray) -> dict[str, float]:
    """``bpb`` (bits per base), ``accuracy``, ``tokens`` and ``bases`` of the sums of :func:`score_marked`."""
    nll, bases, correct, count = (float(v) for v in sums)
    return {
        "bpb": nll / max(bases, 1.0) / math.log(2),
        "accuracy": correct / max(count, 1.0),
        "tokens": count,
        "bases": bases,
    }


def bases_per_token(tok: Any) -> np.ndarray:
    """``(vocab,)`` float64: bases each id stands for (a k-mer min(k, stride), a tail piece or byte its length, a
    special 0), as ``TokenStore.bases_per_token`` (``DNATokenizer.bases_per_token``)."""
    return tok.bases_per_token().astype(np.float64)


def check_same_tokens(a: Any, b: Any, what: str) -> None:
    """ValueError naming ``what`` unless tokenizers ``a`` and ``b`` give DNA the same ids (same k, stride, pieces
    and fallback ids; their special tokens may differ)."""
    if (a.k, a.stride, a.pieces, a.fallback_ids) != (b.k, b.stride, b.pieces, b.fallback_ids):
        raise ValueError(
            f"{what}: its tokenizer ({a!r}) does not give DNA the same ids as the Enigma's ({b!r}); "
            "the two models must score the same tokens"
        )


def load_enbert(path: str, tok: Any, device: torch.device | str) -> Any:
    """The EnBERT model folder ``path`` (checked: an EnBERT, with a tokenizer giving DNA ``tok``'s ids)."""
    from enigma_fast.models import load_model

    model = load_model(path, device=str(device))
    if model.config.model_type != "enbert":
        raise ValueError(f"{path}: an EnBERT model folder is needed here, got a {model.config.model_type} model")
    if model.tokenizer is None:
        raise ValueError(f"{path}: the model folder has no tokenizer.json")
    check_same_tokens(model.tokenizer, tok, path)
    return model


def span_summary(
    cfg: Any,
    model: Any,
    tok: Any,
    tokens: np.ndarray,
    val_segs: np.ndarray,
    ev: SpanEval,
    bpt: torch.Tensor,
    device: torch.device,
) -> dict[str, Any]:
    """End of a span or fim run: the objective's options (a fim run adds its own infill score of ``ev``, the
    trainer's ``fim_span_score``), the EnBERT's left-context score of the same held-out spans
    (``cfg.compare_enbert``), and a filled held-out gap (``cfg.sample_tokens`` > 0: a gap of min(sample_tokens, 50)
    tokens between two flanks of ``sample_prompt`` tokens)."""
    out: dict[str, Any] = {
        "objective": {
            "name": cfg.objective,
            "noise_density": cfg.noise_density,
            "mean_span": cfg.mean_span,
            "windows": len(ev.windows),
            **({"span_mix": cfg.span_mix} if cfg.span_mix else {}),
            **({"fim_rate": cfg.fim_rate, "fim_mode": cfg.fim_mode} if cfg.objective == "fim" else {}),
        }
    }
    if cfg.compare_enbert:
        enbert = load_enbert(cfg.compare_enbert, tok, device)
        ebpt = torch.from_numpy(bases_per_token(enbert.tokenizer)).to(device)
        res = ev.score_left_to_right(enbert, enbert.tokenizer, ebpt, context=cfg.window, device=device)
        out["infill_compare"] = {"enbert": cfg.compare_enbert, **res}
        logger.info(
            "same held-out spans: EnBERT (left context only) %.4f bits/base over %d bases",
            res["bpb"],
            int(res["bases"]),
        )
    if cfg.sample_tokens:
        seg = val_segs[int(np.argmax(val_segs[:, 1]))]
        flank = min(cfg.sample_prompt, int(seg[1]) // 3)
        gap = min(cfg.sample_tokens, 50, max(1, int(seg[1]) - 2 * flank))
        a = int(seg[0])
        piece = lambda i, j: tok.decode(torch.from_numpy(np.asarray(tokens[a + i : a + j], dtype=np.int64)))  # noqa: E731
        left, truth, right = piece(0, flank), piece(flank, flank + gap), piece(flank + gap, 2 * flank + gap)
        try:
            from enigma_fast.generation import fill_gaps

            fill = fill_gaps(model, tok, (left, len(truth), right), seed=cfg.seed)[0][0][0]
        except ValueError as err:  # e.g. a model too small for the flanks and the gap
            logger.warning("no infill sample: %s", err)
        else:
            out["sample"] = {"kind": "infill", "left": left, "right": right, "fill": fill, "truth": truth}
    return out
