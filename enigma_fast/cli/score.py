"""``python -m enigma_fast.score``: log-likelihood and bits per base of every record of FASTA/FASTQ files, or of a
training run's held-out data, as TSV; optionally the per-base track (bedGraph or npz).

    python -m enigma_fast.score --model runs/tiny/final reads.fa.gz --out scores.tsv --per-base track.bedgraph
    python -m enigma_fast.score --model runs/tiny/final --heldout

One TSV row per record (``id length bits_per_base log_likelihood n_count scored_bases``; id = the header's first
word), to stdout or ``--out``. ``--heldout`` scores the held-out part of the data a run was trained on (the shipped
genome by default: the last ``val_fraction`` of its chromosome) with the windows of the trainer's final evaluation
(window, eval stride and split read from ``RUN/train_config.json`` when ``--model`` is a run's ``final/`` folder);
its bits/base is the trainer's held-out figure. A progress bar goes to stderr. Existing output files are replaced
only with ``--force``, an input file never.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import IO, Any

import torch

from enigma_fast import scoring
from enigma_fast.cli import _common as common
from enigma_fast.data.fasta import iter_records
from enigma_fast.data.tokens import is_token_store
from enigma_fast.data.tracks import TrackWriter
from enigma_fast.heldout import heldout_stretches, run_config, run_windows, score_heldout

__all__ = ["main"]

log = logging.getLogger("enigma_fast.score")
PROG = "python -m enigma_fast.score"
CHUNK_BASES = 1 << 23  # bases scored per call when reading files (bounds memory, keeps the bar moving)
TSV_HEADER = "id\tlength\tbits_per_base\tlog_likelihood\tn_count\tscored_bases\n"


def _parser() -> argparse.ArgumentParser:
    p = common.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("files", nargs="*", metavar="SEQS", help="FASTA/FASTQ files (plain or gzip)")
    p.add_argument("--model", required=True, help="checkpoint folder (config.json, model.safetensors, tokenizer.json)")
    p.add_argument(
        "--heldout",
        action="store_true",
        help="score the held-out part of the run's data (default: the shipped genome) as the trainer does",
    )
    p.add_argument("--out", default=None, help="TSV output file (default: stdout)")
    p.add_argument(
        "--per-base",
        default=None,
        metavar="FILE",
        help="per-base natural-log probabilities: FILE.bedgraph (or .bedGraph/.bg) or FILE.npz",
    )
    window_help = "tokens per model call (default: the model's block_size; --heldout: the run's window)"
    p.add_argument("--window", type=int, default=None, help=window_help)
    context_help = "least left context of a scored token (default: window // 2; --heldout: the run's)"
    p.add_argument("--context", type=int, default=None, help=context_help)
    p.add_argument("--val-fraction", type=float, default=None, help="--heldout without a run: default 0.1")
    p.add_argument("--both-strands", action="store_true", help="mean of the sequence and its reverse complement")
    p.add_argument("--batch-size", type=int, default=32, help="windows per model call")
    common.add_device_argument(p)
    common.add_dtype_argument(p, help=common.AUTOCAST_HELP + " (as the trainer)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    return p


def _check_options(args: argparse.Namespace) -> torch.device:
    """Every option checked before any file is read or any model loaded (UsageError naming the option)."""
    if not args.heldout and not args.files:
        raise common.UsageError("give FASTA/FASTQ files to score, or --heldout")
    if args.heldout and args.both_strands:
        raise common.UsageError("--both-strands scores files; --heldout reproduces the trainer's (forward) evaluation")
    for flag, value, lo in (("--window", args.window, 2), ("--context", args.context, 1)):
        common.require(value is None or value >= lo, flag, f">= {lo}", value)
    common.require(args.batch_size >= 1, "--batch-size", ">= 1", args.batch_size)
    vf = args.val_fraction
    common.require(vf is None or 0.0 < vf < 1.0, "--val-fraction", "in (0, 1)", vf)
    if args.per_base is not None and not args.per_base.lower().endswith((".bedgraph", ".bg", ".npz")):
        raise common.UsageError(f"--per-base must end in .bedgraph, .bg or .npz, got {args.per_base}")
    device = common.parse_device(args.device)
    common.require_path(args.model, "--model folder", folder=True)
    for f in args.files:
        common.require_path(f, "sequence file")
    inputs = [(f"input file {f}", f) for f in args.files]
    args.out = common.output_path(args.out)  # '-': stdout
    common.check_outputs([("--out", args.out), ("--per-base", args.per_base)], inputs, force=args.force)
    return device


def _tsv_row(name: str, s: scoring.SequenceScore) -> str:
    return f"{name}\t{s.length}\t{s.bits_per_base:.6f}\t{s.log_likelihood:.6f}\t{s.n_count}\t{s.scored_bases}\n"


def _heldout(args: argparse.Namespace, model: Any, dtype: Any, out: IO[str], tracks: TrackWriter) -> None:
    cfg, run = run_config(args.model)
    cfg = cfg or {}
    data = cfg.get("data") or []
    if len(data) == 1 and is_token_store(data[0]):
        raise common.UsageError(
            f"the run was trained on the prepared token folder {data[0]}; give the FASTA files it "
            "was made from (--heldout FILES ...)"
        )
    files = args.files or data or None
    kind = model.config.model_type
    window, context = run_windows(cfg, kind) if cfg and args.window is None else (args.window, args.context)
    if args.context is not None:
        context = args.context
    if cfg and (args.window is not None or args.context is not None):
        log.info("--window/--context given: these are not the windows of the trainer's evaluation of this run")
    val_fraction = args.val_fraction if args.val_fraction is not None else float(cfg.get("val_fraction", 0.1))
    policies = (cfg.get("split", "position"), cfg.get("case", "upper"), cfg.get("n_policy", "split"))
    stretches = heldout_stretches(model.tokenizer, files, val_fraction, *policies)
    t0 = time.perf_counter()
    res = score_heldout(
        args.fwd,
        stretches,
        window=window,
        context=context,
        per_base=args.per_base is not None,
        batch_size=args.batch_size,
        device=args.device,
        dtype=dtype,
        progress=True,
    )
    dt = time.perf_counter() - t0
    out.write(TSV_HEADER)
    for s, sc in zip(res.stretches, res.scores, strict=True):
        out.write(_tsv_row(f"{s.name}:{s.start + 1}-{s.end}", sc))
        tracks.add(s.name, s.start, sc.per_base)
    log.info(
        "held-out: %d bases (%d tokens, %d stretches, last %.0f%% of %s) scored in %.2f s (%.0f bases/s), "
        "window %d, context %d: %.4f bits/base",
        res.scored_bases,
        sum(len(s.ids) for s in stretches),
        len(stretches),
        100 * val_fraction,
        ", ".join(map(str, files)) if files else "the shipped genome",
        dt,
        res.scored_bases / max(dt, 1e-9),
        res.window,
        res.context,
        res.bits_per_base,
    )
    summary = run / "summary.json" if run is not None else None
    if summary is not None and summary.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            trainer = float(json.loads(summary.read_text())["val"]["bpb"])
            log.info(
                "the trainer's final evaluation of this run: %.4f bits/base (difference %.2e)",
                trainer,
                res.bits_per_base - trainer,
            )


def _files(args: argparse.Namespace, dtype: Any, out: IO[str], tracks: TrackWriter) -> None:
    bar = common.progress_bar(desc="score", unit="tok", unit_scale=True)
    out.write(TSV_HEADER)
    t0, bases, chunk, size = time.perf_counter(), 0, [], 0

    def flush() -> None:
        res = scoring.score(
            args.fwd,
            [s for _, s in chunk],
            tokenizer=args.fwd_tokenizer,
            window=args.window,
            context=args.context,
            both_strands=args.both_strands,
            per_base=args.per_base is not None,
            batch_size=args.batch_size,
            device=args.device,
            dtype=dtype,
            progress=bar,
        )
        for (name, _), sc in zip(chunk, res, strict=True):
            out.write(_tsv_row(name, sc))
            tracks.add(name, 0, sc.per_base)
        chunk.clear()

    try:
        for rec in (rec for path in args.files for rec in iter_records(path)):
            chunk.append((rec.id, rec.sequence))
            size += len(rec.sequence)
            bases += len(rec.sequence)
            if size >= CHUNK_BASES:
                flush()
                size = 0
        if chunk:
            flush()
    finally:
        bar.close()
    dt = time.perf_counter() - t0
    log.info("%d bases scored in %.2f s (%.0f bases/s)", bases, dt, bases / max(dt, 1e-9))


def _run(args: argparse.Namespace) -> int:
    device = _check_options(args)
    model = common.load_checkpoint(args.model, device)
    dtype = common.autocast_dtype(args.dtype, device)
    args.fwd, args.fwd_tokenizer = model, model.tokenizer
    if not args.heldout:  # window and context against the model, before any output is started
        args.window, args.context = scoring.resolve_window(model, args.window, args.context)
    if args.compile:
        args.fwd = torch.compile(model, dynamic=True)
    with contextlib.ExitStack() as stack:
        tracks = TrackWriter(args.per_base, stack)
        out = stack.enter_context(common.open_output(args.out))
        if args.heldout:
            _heldout(args, model, dtype, out, tracks)
        else:
            _files(args, dtype, out, tracks)
        tracks.close()
        out.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, score, write TSV (and the per-base track); returns the process exit code (2 with a one-line
    message on stderr for a bad argument or input file)."""
    return common.run_main(_parser(), _run, argv)
