"""The same masked held-out spans scored by an Enigma (both flanks), an EnBERT trained fill-in-the-middle (both
flanks) and an EnBERT (left context only), in bits per base: ``evaluate_pair``, on the command line ``python -m
enigma_fast.train.infill_eval`` (``enigma_fast.cli``).

The data (default: the genome shipped with the package) is tokenized and split as the trainer does (upper case, N
runs cut out, the last ``val_fraction`` of every record held out); the held-out part is cut into windows of
``window`` tokens whose spans are drawn from ``(seed, window index)`` alone (``enigma_fast.data.spans``), so every
evaluation with the same options, and a span run of the trainer, scores the same bases. Figures are defined in
``enigma_fast.train.span`` (Enigma, EnBERT) and ``enigma_fast.train.fim`` (the fill-in-the-middle EnBERT: the left
context as the EnBERT's, the right flank up to the next masked span).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["evaluate_pair"]


def evaluate_pair(
    enigma: str | None,
    enbert: str | None,
    data: Sequence[str] = (),
    *,
    val_fraction: float = 0.1,
    window: int = 128,
    noise_density: float = 0.15,
    mean_span: float = 3.0,
    seed: int = 0,
    context: int = 128,
    max_windows: int = 0,
    batch_size: int = 32,
    device: str = "cpu",
    fim: str | None = None,
) -> dict:
    """Score the held-out spans with the given model folders; returns ``{"spans": {...}, "enigma": {...},
    "enbert": {...}, "fim": {...}}`` (a model's entry only when its folder is given). See the module doc."""
    import torch

    from enigma_fast.data.fasta import shipped_genome_path
    from enigma_fast.data.spans import check_span_options
    from enigma_fast.data.tokens import prepare_tokens
    from enigma_fast.data.windows import split_segments
    from enigma_fast.models import load_model
    from enigma_fast.train.span import SpanEval, bases_per_token, check_same_tokens

    if not enigma and not enbert and not fim:
        raise ValueError("give --enigma, --enbert, --fim or several")
    check_span_options(noise_density, mean_span)
    for name, value, ok in (
        ("--window", window, window >= 2),
        ("--context", context, context >= 0),
        ("--max-windows", max_windows, max_windows >= 0),
        ("--batch-size", batch_size, batch_size >= 1),
        ("--val-fraction", val_fraction, 0.0 < val_fraction < 1.0),
    ):
        if not ok:
            raise ValueError(f"{name} out of range, got {value}")
    models = {}
    for flag, path in (("enigma", enigma), ("enbert", enbert), ("fim", fim)):
        if path:
            kind = "enigma" if flag == "enigma" else "enbert"
            m = load_model(path, device=device)
            if m.config.model_type != kind:
                got = m.config.model_type
                raise ValueError(f"--{flag} {path}: an {kind} model folder is needed, got a {got} model")
            if flag == "fim" and not m.config.fim:
                raise ValueError(f"--fim {path}: an EnBERT trained with --objective fim is needed (config fim false)")
            if m.tokenizer is None:
                raise ValueError(f"--{flag} {path}: the model folder has no tokenizer.json")
            models[flag] = (path, m)
    first = next(iter(models))
    tok = models[first][1].tokenizer
    for flag, (path, m) in models.items():
        if flag != first:
            check_same_tokens(m.tokenizer, tok, f"--{flag} {path}")
    if "enigma" in models and tok.num_sentinels == 0:
        raise ValueError(f"--enigma {enigma}: its tokenizer has no sentinel tokens; train it with --objective span")
    inputs = list(data) or [str(shipped_genome_path())]
    with tempfile.TemporaryDirectory(prefix="infill-eval-") as tmp:
        store = prepare_tokens(inputs, Path(tmp) / "data", tok, case="upper", n_policy="split")
        _, val = split_segments(store.segments, val_fraction, "position")
        tokens = store.tokens
        ev = SpanEval(tokens, val, window, noise_density, mean_span, seed, max_windows)
        out: dict = {
            "spans": {
                "windows": len(ev),
                "window": window,
                "noise_density": noise_density,
                "mean_span": mean_span,
                "seed": seed,
                "val_fraction": val_fraction,
                "data": inputs,
            }
        }
        dev = torch.device(device)
        if "enigma" in models:
            path, m = models["enigma"]
            bpt = torch.from_numpy(bases_per_token(m.tokenizer)).to(dev)
            out["enigma"] = {"model": path, **ev.score_enigma(m, m.tokenizer, bpt, batch_size, dev)}
            out["spans"].update(spans=out["enigma"]["spans"], bases=out["enigma"]["bases"])
        if "enbert" in models:
            path, m = models["enbert"]
            bpt = torch.from_numpy(bases_per_token(m.tokenizer)).to(dev)
            out["enbert"] = {
                "model": path,
                "context": context,
                **ev.score_left_to_right(m, m.tokenizer, bpt, context, batch_size, dev),
            }
            out["spans"].setdefault("bases", out["enbert"]["bases"])
        if "fim" in models:
            from enigma_fast.train.fim import fim_span_score

            path, m = models["fim"]
            bpt = torch.from_numpy(bases_per_token(m.tokenizer)).to(dev)
            out["fim"] = {
                "model": path,
                "context": context,
                **fim_span_score(m, m.tokenizer, ev, bpt, context, batch_size, dev),
            }
            out["spans"].setdefault("bases", out["fim"]["bases"])
            out["spans"].setdefault("spans", out["fim"]["spans"])
        del tokens, store, ev  # the memory map, before the folder goes
    return out


if __name__ == "__main__":  # the program python -m enigma_fast.train.infill_eval
    from enigma_fast.cli._common import launch
    from enigma_fast.cli.infill_eval import main

    launch("enigma_fast.train.infill_eval", main)
