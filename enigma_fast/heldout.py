"""The held-out data of a training run and its score, exactly as the trainer's final evaluation makes them.

    from enigma_fast.heldout import heldout_stretches, score_heldout

    stretches = heldout_stretches(model.tokenizer)          # the shipped genome's last 10%, as the trainer holds out
    res = score_heldout(model, stretches, window=256, context=65)
    res.bits_per_base                                         # the trainer's held-out figure

``heldout_stretches`` tokenizes sequence files as a token store does (``enigma_fast.data.tokens.dna_stretches`` and
``encode_ids``: the same case and N policies, stretches of fewer than 2 bases dropped) and splits them with the
trainer's ``split_segments``; ``score_heldout`` scores them with ``enigma_fast.scoring.token_log_probs`` in the
windows of the trainer's final evaluation (``run_windows`` reads them from a run's ``train_config.json``, which
``run_config`` finds next to a run's ``final/`` model folder). ``python -m enigma_fast.score --heldout`` is this
module on the command line.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from enigma_fast import scoring
from enigma_fast.data.fasta import iter_records, shipped_genome_path
from enigma_fast.data.tokens import dna_stretches, encode_ids
from enigma_fast.data.windows import split_segments

__all__ = ["HeldOut", "Stretch", "heldout_stretches", "run_config", "run_windows", "score_heldout"]


@dataclass
class Stretch:
    """A held-out stretch of one record: bases ``[start, end)`` of record ``name`` (its header's first word) and
    their token ids ``(T,)``."""

    name: str
    start: int
    end: int
    ids: np.ndarray


def heldout_stretches(
    tokenizer: Any,
    files: Sequence[str | os.PathLike] | None = None,
    val_fraction: float = 0.1,
    split: str = "position",
    case: str = "upper",
    n_policy: str = "split",
) -> list[Stretch]:
    """The held-out stretches of ``files`` (default: the shipped genome) exactly as the trainer makes them: the
    records tokenized as ``enigma_fast.data.prepare_tokens`` does (``case``, ``n_policy``, stretches of fewer than
    2 bases dropped), split by ``enigma_fast.data.windows.split_segments(val_fraction, split)``; with each
    stretch's base coordinates in its record."""
    bpt = tokenizer.bases_per_token()
    paths = [os.fspath(p) for p in files] if files else [str(shipped_genome_path())]
    flat: list[np.ndarray] = []
    segments: list[tuple[int, int, int]] = []
    where: list[tuple[str, int]] = []  # per segment: record name, base start in the record
    offset = 0
    records = ((path, rec) for path in paths for rec in iter_records(path))
    for rid, (file, rec) in enumerate(records):
        raw = rec.sequence.encode("ascii", "replace")
        bases, starts, stops = dna_stretches(raw, file, rec.name, fold_case=case == "upper", n_policy=n_policy)
        for a, b in zip(starts, stops, strict=True):
            if b - a < 2:
                continue
            ids = encode_ids(tokenizer, bases[a:b])
            flat.append(ids)
            segments.append((rid, offset, len(ids)))
            where.append((rec.id, a))
            offset += len(ids)
    if not segments:
        raise ValueError(f"no usable bases in {', '.join(paths)}")
    tokens = np.concatenate(flat)
    segs = np.asarray(segments, dtype=np.int64)
    _, val = split_segments(segs, val_fraction, split)
    out = []
    for off, n in val.tolist():
        j = int(np.searchsorted(segs[:, 1], off, side="right")) - 1
        name, base0 = where[j]
        start = base0 + int(bpt[tokens[segs[j, 1] : off]].sum())
        ids = tokens[off : off + n]
        out.append(Stretch(name, start, start + int(bpt[ids].sum()), ids))
    return out


@dataclass
class HeldOut:
    """Result of ``score_heldout``: ``bits_per_base`` and ``log_likelihood`` (nats) over ``scored_bases`` as the
    trainer's final evaluation counts them; per stretch its ``SequenceScore`` (with ``per_base`` when asked)."""

    stretches: list[Stretch]
    scores: list[scoring.SequenceScore]
    bits_per_base: float
    log_likelihood: float
    scored_bases: int
    window: int
    context: int


def run_config(model_dir: str | os.PathLike) -> tuple[dict[str, Any] | None, Path | None]:
    """``(train_config.json content, run folder)`` of the training run whose ``final/`` folder ``model_dir`` is;
    ``(None, None)`` for any other folder. ValueError naming the file when it is not a JSON object."""
    run = Path(model_dir).resolve().parent
    cfg = run / "train_config.json"
    if Path(model_dir).resolve().name != "final" or not cfg.is_file():
        return None, None
    try:
        d = json.loads(cfg.read_text())
    except ValueError as err:
        raise ValueError(f"{cfg}: not a JSON file ({err})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{cfg} must hold a JSON object")
    return d, run


def run_windows(run_config: dict[str, Any], kind: str) -> tuple[int, int]:
    """``(window, context)`` of a run's final evaluation from its ``train_config.json`` content: EnBERT
    ``context = window + 1 - eval_stride`` (eval stride default 3/4 of the window), Enigma ``context = src_len``
    (default half the window)."""
    window = int(run_config.get("window", 256))
    if kind == "enigma":
        return window, int(run_config.get("src_len") or window // 2)
    stride = int(run_config.get("eval_stride") or max(1, 3 * window // 4))
    return window, window + 1 - min(stride, window)


def score_heldout(
    model: Any,
    stretches: Sequence[Stretch],
    *,
    window: int | None = None,
    context: int | None = None,
    per_base: bool = False,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    progress: Any = False,
) -> HeldOut:
    """Score held-out stretches with the windows of ``scoring.token_log_probs``; the totals count every scored
    token (as the trainer does: ``bits_per_base = -sum log p / sum bases / ln 2``)."""
    tok = model.tokenizer
    window, context = scoring.resolve_window(model, window, context)
    bpt = tok.bases_per_token()
    lps = scoring.token_log_probs(
        model,
        [s.ids for s in stretches],
        window=window,
        context=context,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        progress=progress,
    )
    scores = []
    ll_all, bases_all = 0.0, 0
    for s, lp in zip(stretches, lps, strict=True):
        keep = ~np.isnan(lp)
        ll, nb = float(lp[keep].sum()), int(bpt[s.ids[keep]].sum())
        ll_all += ll
        bases_all += nb
        track = scoring.per_base_track(lp, s.ids, tok) if per_base else None
        bpb = -ll / nb / math.log(2) if nb else math.nan
        scores.append(scoring.SequenceScore(s.end - s.start, ll, nb, bpb, 0, track))
    bpb_all = -ll_all / bases_all / math.log(2) if bases_all else math.nan
    return HeldOut(list(stretches), scores, bpb_all, ll_all, bases_all, window, context)
