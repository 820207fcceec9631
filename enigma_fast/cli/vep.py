"""Variant effect scores: the log-likelihood ratio of a window holding the ALT allele against the same window
holding the REF allele, for every ALT of every record of a VCF, written back as an INFO field.

    python -m enigma_fast.vep --model runs/tiny/final --fasta ref.fa.gz --vcf in.vcf.gz --out out.vcf.gz
    python -m enigma_fast.vep --model DIR --fasta ref.fa --vcf in.vcf --tsv out.tsv --both-strands

For a variant starting at 0-based offset ``s`` of its contig ``X``, with alleles ``ref`` and ``alt``,
``span = max(len(ref), len(alt))``, ``left = (W - span) // 2`` and ``right = W - span - left`` (``W`` the
window in bases), both clipped at the contig ends::

    ref_window = X[s - left : s] + ref + X[s + len(ref) : s + len(ref) + right]
    alt_window = X[s - left : s] + alt + X[s + len(ref) : s + len(ref) + right]
    LLR        = log P(alt_window) - log P(ref_window)           natural log, summed over the scored bases

Both windows have the same left and right flanks, so for an SNV they differ in one base and for an indel the
longer window is ``W`` bases. With ``both_strands`` each log-probability is the mean of the window's and its
reverse complement's. Records that cannot be scored are written unchanged but for a FILTER (contig missing
from the FASTA, position past its end, REF not matching the FASTA, no ALT) or a per-ALT reason in
``LLR_SKIP`` (symbolic, breakend, ``*``, non-DNA or too long alleles); every record of the input is written,
in order, and every reason is counted in the summary.

Needs pysam (``pip install enigma_fast[reading]``); it is imported only when a function here runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

import torch

from enigma_fast.cli import _common as common
from enigma_fast.variants import DEFAULT_WINDOW, summary_lines, variant_scores
from enigma_fast.variants.reference import require_pysam
from enigma_fast.variants.vcf import INFO_NAME

__all__ = ["main"]

log = logging.getLogger("enigma_fast.vep")
PROG = "python -m enigma_fast.vep"


def _parser() -> argparse.ArgumentParser:
    p = common.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("--model", required=True, help="checkpoint folder (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--fasta", required=True, help="reference FASTA (plain, bgzip or gzip)")
    p.add_argument("--vcf", required=True, help="variants (VCF, VCF.gz or BCF)")
    p.add_argument("--out", default=None, help="annotated VCF (.vcf, .vcf.gz bgzipped, .bcf)")
    p.add_argument("--tsv", default=None, help="table, one row per ALT (.tsv or .tsv.gz)")
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help=f"window in bases (default: {DEFAULT_WINDOW}, or the model's block if smaller)",
    )
    p.add_argument("--both-strands", action="store_true", help="average each window with its reverse complement")
    p.add_argument("--batch-size", type=int, default=32, help="windows per model call (default 32)")
    common.add_device_argument(p)
    common.add_dtype_argument(p, help="model dtype (default: as saved)", auto=False)
    p.add_argument("--info-name", default="LLR", help="INFO key of the scores (default LLR)")
    p.add_argument(
        "--no-write-index",
        action="store_true",
        help="never write a .fai/.gzi next to the FASTA; read it into memory when it has none",
    )
    p.add_argument("--summary", choices=("text", "json"), default="text", help="summary format on stderr")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_options(args: argparse.Namespace) -> None:
    """Every option checked before any file is read or any model loaded (UsageError naming the option)."""
    if args.out is None and args.tsv is None:
        raise common.UsageError("give --out (VCF) and/or --tsv (table)")
    common.require(args.window is None or args.window >= 2, "--window", ">= 2 (bases)", args.window)
    common.require(args.batch_size >= 1, "--batch-size", ">= 1", args.batch_size)
    common.require(
        INFO_NAME.fullmatch(args.info_name) is not None,
        "--info-name",
        "a VCF key ([A-Za-z_][0-9A-Za-z_.]*)",
        repr(args.info_name),
    )
    common.parse_device(args.device)
    common.require_path(args.model, "--model folder", folder=True)
    inputs = [("--fasta file", args.fasta), ("--vcf file", args.vcf)]
    for what, path in inputs:
        common.require_path(path, what)
    outputs = [("--out", args.out), ("--tsv", args.tsv)]
    common.check_outputs(outputs, inputs, force=None, same="{other} and {flag} name the same file")


def _run(args: argparse.Namespace) -> int:
    _check_options(args)
    require_pysam()
    model = common.load_checkpoint(args.model, args.device)
    res = variant_scores(
        model,
        args.fasta,
        args.vcf,
        out=args.out,
        tsv=args.tsv,
        window=args.window,
        both_strands=args.both_strands,
        batch_size=args.batch_size,
        device=args.device,
        dtype=None if args.dtype is None else getattr(torch, args.dtype),
        info_name=args.info_name,
        write_index=not args.no_write_index,
        keep=False,
        progress=False if args.no_progress else None,
    )
    if args.summary == "json":
        print(json.dumps(res.summary), file=sys.stderr)
    else:
        for line in summary_lines(res.summary):
            log.info("%s", line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, score the variants, write the outputs; returns the exit code (2 with a one-line message
    on stderr for a bad argument or input file, or without pysam)."""
    return common.run_main(_parser(), _run, argv, errors=(ImportError,))
