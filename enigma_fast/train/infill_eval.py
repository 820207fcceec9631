"""``python -m enigma_fast.train.infill_eval``: score the same masked held-out spans with an Enigma (both flanks), an
EnBERT trained fill-in-the-middle (both flanks) and an EnBERT (left context only), in bits per base.

    python -m enigma_fast.train.infill_eval --enigma RUN_A/final --enbert RUN_B/final --fim RUN_C/final
    python -m enigma_fast.train.infill_eval --enigma RUN_A/final --noise-density 0.15 --mean-span 3 --seed 0 genome.fa

The data (default: the genome shipped with the package) is tokenized as the trainer does (upper case, N runs cut
out) and split as the trainer does (the last ``--val-fraction`` of every record held out). The held-out part is cut
into windows of ``--window`` tokens, and each window gets spans drawn from ``(--seed, window index)`` alone (see
``enigma_fast.data.spans``), so every run of this command, and a span run of the trainer with the same options,
scores the same bases. Figures are defined in ``enigma_fast.train.span`` (Enigma, EnBERT) and ``enigma_fast.train.fim``
(the fill-in-the-middle EnBERT: the left context as the EnBERT's, the right flank up to the next masked span).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

__all__ = ["main"]

log = logging.getLogger("enigma_fast.train.infill_eval")
PROG = "python -m enigma_fast.train.infill_eval"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="*", help="FASTA/FASTQ files (plain or gzip); none = the shipped genome")
    p.add_argument("--enigma", help="Enigma model folder (trained with --objective span)")
    p.add_argument("--enbert", help="EnBERT model folder (scored from the left context only)")
    p.add_argument("--fim", help="EnBERT model folder trained with --objective fim (scored from both flanks)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out tail of every record (default 0.1)")
    p.add_argument("--window", type=int, default=128, help="tokens per masked window (default 128)")
    p.add_argument("--noise-density", type=float, default=0.15, help="masked fraction of each window (default 0.15)")
    p.add_argument("--mean-span", type=float, default=3.0, help="mean span length in tokens (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the span choice (default 0)")
    p.add_argument(
        "--context",
        type=int,
        default=128,
        help="EnBERT and FIM: tokens of left context before each window, within its segment (default 128)",
    )
    p.add_argument(
        "--max-windows", type=int, default=0, help="score at most this many windows, evenly spread (default 0 = all)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object instead")
    return p


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


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, score, print; returns the exit code (2 with a one-line message for a bad argument)."""
    a = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        res = evaluate_pair(
            a.enigma,
            a.enbert,
            a.data,
            val_fraction=a.val_fraction,
            window=a.window,
            noise_density=a.noise_density,
            mean_span=a.mean_span,
            seed=a.seed,
            context=a.context,
            max_windows=a.max_windows,
            batch_size=a.batch_size,
            device=a.device,
            fim=a.fim,
        )
    except (OSError, ValueError) as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    sp = res["spans"]
    print(
        f"held-out spans: {sp['windows']} windows of up to {sp['window']} tokens, noise density "
        f"{sp['noise_density']}, mean span {sp['mean_span']}, seed {sp['seed']}: {int(sp['bases'])} bases"
        + (f" in {int(sp['spans'])} spans" if "spans" in sp else "")
    )
    if "enigma" in res:
        e = res["enigma"]
        print(
            f"Enigma, both flanks      {e['model']}: {e['bpb']:.4f} bits/base (accuracy {e['accuracy']:.3f}; "
            f"{e['bpb_with_ends']:.4f} counting where each span ends)"
        )
    if "fim" in res:
        e = res["fim"]
        print(
            f"EnBERT-FIM, both flanks   {e['model']}: {e['bpb']:.4f} bits/base (accuracy {e['accuracy']:.3f}; "
            f"up to {e['context']} tokens before each window, the right flank to the next masked span)"
        )
    if "enbert" in res:
        e = res["enbert"]
        print(
            f"EnBERT, left context only {e['model']}: {e['bpb']:.4f} bits/base (accuracy {e['accuracy']:.3f}; "
            f"up to {e['context']} tokens before each window)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
