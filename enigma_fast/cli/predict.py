"""``python -m enigma_fast.predict``: apply a fine-tuned model (``python -m enigma_fast.finetune``) to sequences.

    python -m enigma_fast.predict --model ft/promoters seqs.fa --out preds.tsv
    python -m enigma_fast.predict --model ft/coding-per-base reads.fa --out coding.bedgraph

Input: FASTA/FASTQ (plain or gzip) or CSV/TSV with a ``sequence`` column (labels, if any, are ignored).

Output by task: classification, a TSV row per record ``id prediction p_<class> ...`` (the class probabilities);
regression, ``id value``; token classification, per-base class probabilities as a bedGraph (``chrom`` = the record
id, 0-based half-open runs of equal values, as ``score --per-base`` writes tracks: for two classes the probability
of the second, for more one track per class in the same file, or the one ``--class`` names) or ``.npz`` (``probs``
``(sum L_i, C)`` float32, ``offsets`` ``(N+1,)``, ``ids``, ``classes``). Outputs are written atomically and
replaced only with ``--force``; an input file never.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

import numpy as np

from enigma_fast.cli._common import (
    ArgumentParser,
    UsageError,
    add_device_argument,
    check_outputs,
    int_at_least,
    open_output,
    parse_device,
    progress_bar,
    require_path,
    run_main,
)

__all__ = ["main"]

PROG = "python -m enigma_fast.predict"
TRACKS = (".bedgraph", ".bg", ".npz")


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("file", metavar="SEQS", help="FASTA/FASTQ or CSV/TSV (a 'sequence' column) of the records")
    p.add_argument("--model", required=True, help="fine-tuned model folder")
    p.add_argument("--out", default=None, help="output: .tsv (default stdout); token tasks .bedgraph/.bg or .npz")
    p.add_argument("--class", dest="cls", default=None, help="token tasks, bedGraph: the one class to write")
    p.add_argument("--batch-size", type=int_at_least(1), default=64, help="records per model call")
    add_device_argument(p)
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="auto: bfloat16 autocast on CUDA and on CPUs with bfloat16 matrix units, else float32",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--no-progress", action="store_true")
    return p


def _bedgraph(sink, chrom: str, values: np.ndarray) -> None:
    """Runs of equal values (printed to 6 significant digits) as ``chrom start end value`` lines."""
    text = np.char.mod("%.6g", values)
    change = np.flatnonzero(np.r_[True, text[1:] != text[:-1]])
    ends = np.r_[change[1:], len(values)]
    sink.write("".join(f"{chrom}\t{a}\t{b}\t{text[a]}\n" for a, b in zip(change.tolist(), ends.tolist(), strict=True)))


def _run(args: argparse.Namespace) -> int:
    from enigma_fast.finetune import load_finetuned, predict
    from enigma_fast.finetune.data import read_sequences_file
    from enigma_fast.finetune.folder import read_spec

    device = parse_device(args.device)
    require_path(args.model, "--model folder", folder=True)
    require_path(args.file, "sequence file")
    _, spec = read_spec(args.model)
    token = spec.task == "token-classification"
    low = (args.out or "").lower()
    if token and not low.endswith(TRACKS):
        raise UsageError(f"--out must end in .bedgraph, .bg or .npz for token-classification, got {args.out}")
    if not token and low.endswith(TRACKS):
        raise UsageError(f"--out {args.out}: tracks are for token-classification models; this one is {spec.task}")
    if args.cls is not None and (not token or args.cls not in spec.labels):
        raise UsageError(f"--class must be one of the token classes {spec.labels}, got {args.cls!r}")
    check_outputs([("--out", args.out)], [("input file", args.file)], force=args.force)
    data = read_sequences_file(args.file)
    model = load_finetuned(args.model, device=device)
    total = None if token else len(data)  # token tasks count chunks of block_size tokens
    bar = progress_bar(total, desc="predict", unit="seq", enabled=None if not args.no_progress else False)
    t0 = time.perf_counter()
    try:
        res = predict(model, data.seqs, batch_size=args.batch_size, dtype=args.dtype, progress=bar)
    finally:
        bar.close()
    dt = time.perf_counter() - t0
    classes = spec.labels
    if spec.task == "classification":
        with open_output(args.out) as f:
            f.write("id\tprediction\t" + "\t".join(f"p_{c}" for c in classes) + "\n")
            for name, p in zip(data.names, res.probs, strict=True):
                f.write(f"{name}\t{classes[int(p.argmax())]}\t" + "\t".join(f"{x:.6g}" for x in p) + "\n")
    elif spec.task == "regression":
        with open_output(args.out) as f:
            f.write("id\tvalue\n")
            f.writelines(f"{name}\t{v:.6g}\n" for name, v in zip(data.names, res.values, strict=True))
    elif low.endswith(".npz"):
        with open_output(args.out, "wb") as f:
            np.savez(
                f,
                probs=np.concatenate(res.per_base).astype(np.float32),
                offsets=np.r_[0, np.cumsum([len(p) for p in res.per_base])].astype(np.int64),
                ids=np.array(data.names, dtype=str),
                classes=np.array(classes, dtype=str),
            )
    else:
        show = [classes.index(args.cls)] if args.cls else [1] if len(classes) == 2 else list(range(len(classes)))
        with open_output(args.out) as f:
            for k in show:
                f.write(f'track type=bedGraph name="p_{classes[k]}" description="probability of class {classes[k]}"\n')
                for name, p in zip(data.names, res.per_base, strict=True):
                    _bedgraph(f, name, p[:, k])
    bases = sum(len(s) for s in data.seqs)
    logging.getLogger("enigma_fast.predict").info("%d records (%d bases) predicted in %.2f s", len(data), bases, dt)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, predict, write; returns the exit code (2 with one line on stderr for a user error)."""
    return run_main(_parser(), _run, argv, errors=(ImportError,))
