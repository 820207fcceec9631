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
from collections.abc import Sequence

from enigma_fast.cli import _common as common
from enigma_fast.train.infill_eval import evaluate_pair

__all__ = ["main"]

PROG = "python -m enigma_fast.train.infill_eval"
# the options passed on to evaluate_pair under their own names
OPTIONS = "val_fraction window noise_density mean_span seed context max_windows batch_size device fim".split()


def _parser() -> argparse.ArgumentParser:
    p = common.ArgumentParser(prog=PROG, description=__doc__)
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


def _run(a: argparse.Namespace) -> int:
    res = evaluate_pair(a.enigma, a.enbert, a.data, **{name: getattr(a, name) for name in OPTIONS})
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


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, score, print; returns the exit code (2 with a one-line message for a bad argument)."""
    return common.run_main(_parser(), _run, argv, level=logging.WARNING)
