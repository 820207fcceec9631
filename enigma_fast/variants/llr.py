"""Variant effect scores: ``variant_scores`` reads a VCF against its reference FASTA, scores the REF and ALT
windows of every ALT with a model (``enigma_fast.scoring.score``; identical windows once, an Enigma window with its
left flank as the source) and writes the annotated VCF and/or the TSV table atomically, with a summary of what was
and was not scored.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from enigma_fast.files import atomic_path
from enigma_fast.progress import progress_bar
from enigma_fast.scoring import score
from enigma_fast.tokenizers import reverse_complement
from enigma_fast.variants import vcf as _vcf
from enigma_fast.variants.reference import open_reference, require_pysam
from enigma_fast.variants.windows import (
    DEFAULT_WINDOW,
    RECORD_REASONS,
    AlleleScore,
    Planned,
    context_tokens,
    model_limit_bases,
    plan_record,
)

__all__ = ["VepResult", "summary_lines", "variant_scores"]

log = logging.getLogger("enigma_fast.vep")  # the name the VEP messages have always had


@dataclass
class VepResult:
    """What ``variant_scores`` returns: the per-ALT results (empty when ``keep=False``) and the summary counts."""

    alleles: list[AlleleScore] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _log_likelihoods(model: torch.nn.Module, requests: Sequence[tuple[str, int | None]], **kw: Any) -> list[float]:
    """Natural-log likelihood of each ``(sequence, context)`` (summed over its scored bases) from
    ``enigma_fast.scoring.score``, one call per distinct ``context`` (None: the API's default)."""
    groups: dict[int | None, list[int]] = {}
    for i, (_, ctx) in enumerate(requests):
        groups.setdefault(ctx, []).append(i)
    out = [math.nan] * len(requests)
    for ctx, members in groups.items():
        seqs = [requests[i][0] for i in members]
        for i, s in zip(members, score(model, seqs, context=ctx, **kw), strict=True):
            out[i] = s.log_likelihood
    return out


def variant_scores(
    model: torch.nn.Module,
    fasta: str | os.PathLike,
    vcf: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    tsv: str | os.PathLike | None = None,
    window: int | None = None,
    both_strands: bool = False,
    tokenizer: Any = None,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    info_name: str = "LLR",
    write_index: bool = True,
    keep: bool = True,
    progress: bool | None = False,
    chunk_records: int = 1024,
) -> VepResult:
    """Score every ALT of every record of ``vcf`` against the reference ``fasta`` with ``model``.

    For an ALT at 0-based start ``s`` with flanks ``(left, right) = flank_sizes(window, s, len(ref), len(alt),
    contig_length)``::

        LLR = log P(X[s-left:s] + alt + X[e:e+right]) - log P(X[s-left:s] + ref + X[e:e+right]),  e = s + len(ref)

    natural logs summed over the scored bases of each window (the first token of a window is not scored by a
    decoder-only model), from ``enigma_fast.scoring.score``; with ``both_strands`` each log P is the mean over the
    window and its reverse complement. Windows are scored in batches of ``batch_size`` (``chunk_records``
    records gathered per round; identical windows scored once).

    ``window``: bases (default ``min(DEFAULT_WINDOW, the model's block in bases)``). ``out``: annotated VCF
    (``.vcf``, ``.vcf.gz``/``.bgz`` bgzipped so tabix can index it, or ``.bcf``) holding every input record in
    order, INFO ``<info_name>`` and ``<info_name>_SKIP`` (Number=A) and FILTERs ``<info_name>_NO_ALT``,
    ``_NO_CONTIG``, ``_PAST_END``, ``_REF_MISMATCH`` declared in its header. ``tsv``: one row per ALT
    (``TSV_COLUMNS``; gzip when it ends in .gz). Both are written atomically. The FASTA is read through its faidx
    index, written next to it when missing unless ``write_index=False`` (logged), or into memory when that is
    impossible (plain gzip, read-only folder). Returns a ``VepResult``: ``alleles`` (one ``AlleleScore`` per ALT,
    or per record without ALT, in file order; empty when ``keep=False``) and ``summary`` (counts per reason).

    Raises ImportError (one line, the install command) without pysam, FileNotFoundError for a missing input and
    ValueError for unreadable files or bad options; a record that cannot be scored never raises.
    """
    pysam = require_pysam()
    fasta, vcf = os.fspath(fasta), os.fspath(vcf)
    out = None if out is None else os.fspath(out)
    tsv = None if tsv is None else os.fspath(tsv)
    for flag, path in (("fasta", fasta), ("vcf", vcf)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{flag} file not found: {path}")
    if not isinstance(info_name, str) or not _vcf.INFO_NAME.fullmatch(info_name):
        raise ValueError(f"info_name must be a VCF key ([A-Za-z_][0-9A-Za-z_.]*), got {info_name!r}")
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("the model has no tokenizer; pass tokenizer=")
    limit = model_limit_bases(model, tok)
    if window is None:
        window = DEFAULT_WINDOW if limit is None else min(DEFAULT_WINDOW, limit)
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an int >= 2 (bases), got {window!r}")
    if limit is not None and window > limit:
        raise ValueError(
            f"window must be <= {limit} bases (block_size {model.config.block_size} tokens x stride {tok.stride}), "
            f"got {window}"
        )
    for name, value in (("batch_size", batch_size), ("chunk_records", chunk_records)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    t0 = time.perf_counter()
    with _vcf.quiet(pysam):  # htslib's per-record warnings on undeclared tags: summarised below
        try:
            scanned, n_records, contigs, symbolic = _vcf.scan(pysam, vcf)
        except (OSError, ValueError) as err:
            raise ValueError(f"{vcf}: cannot read the VCF: {err}") from None
    enigma = getattr(model.config, "model_type", None) == "enigma"
    scorer = _Scorer(
        model, tok, enigma, both_strands, dict(tokenizer=tok, batch_size=batch_size, device=device, dtype=dtype)
    )
    tally = _Tally(keep)
    with contextlib.ExitStack() as stack:
        ref = open_reference(fasta, set(contigs), write_index)
        stack.callback(ref.close)
        with _vcf.quiet(pysam):  # "could not retrieve index file": none is needed
            reader = stack.enter_context(pysam.VariantFile(vcf))
        added = _vcf.prepare_header(reader.header, scanned, ref, info_name, symbolic)
        if added:
            log.warning("%s: the header does not declare %s; declared in the output", vcf, ", ".join(added))
        _vcf.check_contig_lengths(reader.header, contigs, ref, fasta)
        out_tmp = stack.enter_context(atomic_path(out)) if out is not None else None
        tsv_tmp = stack.enter_context(atomic_path(tsv)) if tsv is not None else None
        writer = (
            stack.enter_context(pysam.VariantFile(out_tmp, _vcf.vcf_mode(out), header=reader.header))
            if out_tmp
            else None
        )
        table = stack.enter_context((gzip.open if tsv.endswith(".gz") else open)(tsv_tmp, "wt")) if tsv_tmp else None
        if table is not None:
            table.write("\t".join(_vcf.TSV_COLUMNS) + "\n")
        bar = progress_bar(n_records, desc="vep", unit="rec", enabled=progress, dynamic_ncols=True)
        stack.callback(bar.close)
        pending: list[Planned] = []
        for rec in _vcf.records(reader, vcf):
            pending.append(plan_record(rec, ref, window))
            if len(pending) >= chunk_records:
                _flush(pending, scorer, writer, table, tally, info_name)
                bar.update(len(pending))
                pending.clear()
        _flush(pending, scorer, writer, table, tally, info_name)
        bar.update(len(pending))
        reference = ref.how
    return VepResult(
        tally.alleles,
        tally.summary(scorer.windows, window, both_strands, info_name, reference, time.perf_counter() - t0),
    )


class _Scorer:
    """LLRs of the planned ALTs of a chunk of records: every window (and with ``both_strands`` its reverse
    complement) scored once, an Enigma window with its left flank as the source."""

    def __init__(self, model: torch.nn.Module, tok: Any, enigma: bool, both_strands: bool, kw: dict) -> None:
        self.model, self.tok, self.enigma, self.both, self.kw = model, tok, enigma, both_strands, kw
        self.windows = 0

    def __call__(self, pending: Sequence[Planned]) -> None:
        requests: dict[tuple[str, int | None], int] = {}  # (window, Enigma source tokens) -> index
        slots: list[tuple[Planned, int, list[int]]] = []
        for p in pending:
            for j, pair in enumerate(p.windows):
                if pair is None:
                    continue
                a = p.alleles[j]
                views = [(w, self._context(a.left)) for w in pair.forward]
                if self.both:
                    views += [(reverse_complement(w), self._context(a.right)) for w in pair.reverse]
                slots.append((p, j, [requests.setdefault(v, len(requests)) for v in views]))
        ll = _log_likelihoods(self.model, list(requests), **self.kw) if requests else []
        self.windows += len(requests)
        for p, j, ids in slots:
            llr = ll[ids[1]] - ll[ids[0]]
            if self.both:
                llr = 0.5 * (llr + ll[ids[3]] - ll[ids[2]])
            p.alleles[j] = p.alleles[j]._replace(llr=llr)

    def _context(self, flank: int) -> int | None:
        return context_tokens(self.tok, flank) if self.enigma else None


class _Tally:
    """Counts per reason, and the per-ALT results when kept."""

    def __init__(self, keep: bool) -> None:
        self.keep, self.alleles = keep, []
        self.counts: Counter[str] = Counter()
        self.records_not_scored: Counter[str] = Counter()
        self.alleles_not_scored: Counter[str] = Counter()

    def add(self, p: Planned) -> None:
        self.counts["records"] += 1
        if p.reason is not None:
            self.records_not_scored[p.reason] += 1
        for a in p.alleles:
            if a.alt is None:
                continue
            self.counts["alleles"] += 1
            if a.status == "scored":
                self.counts["alleles_scored"] += 1
            elif p.reason is None:
                self.alleles_not_scored[a.status] += 1
        self.counts["records_scored"] += any(a.status == "scored" for a in p.alleles)
        if self.keep:
            self.alleles.extend(p.alleles)

    def summary(
        self, windows: int, window: int, both: bool, info_name: str, reference: str, seconds: float
    ) -> dict[str, Any]:
        c = self.counts
        return {
            "records": c["records"],
            "records_scored": c["records_scored"],
            "records_not_scored": dict(sorted(self.records_not_scored.items())),
            "alleles": c["alleles"],
            "alleles_scored": c["alleles_scored"],
            "alleles_not_scored": dict(sorted(self.alleles_not_scored.items())),
            "windows_scored": windows,
            "window": window,
            "both_strands": both,
            "info_name": info_name,
            "reference": reference,
            "seconds": round(seconds, 3),
        }


def _flush(pending: list[Planned], scorer: _Scorer, writer: Any, table: Any, tally: _Tally, info_name: str) -> None:
    """Score a chunk of records, then write and count them in input order."""
    scorer(pending)
    for p in pending:
        _vcf.annotate(p.rec, p, info_name)
        if writer is not None:
            writer.write(p.rec)
        if table is not None:
            table.writelines(map(_vcf.tsv_row, p.alleles))
        tally.add(p)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as short text lines (what the CLI prints on stderr)."""
    s = summary
    lines = [
        f"records: {s['records']} read and written, {s['records_scored']} with at least one ALT scored",
        f"ALT alleles: {s['alleles']}, scored {s['alleles_scored']}",
    ]
    for reason, n in s["records_not_scored"].items():
        lines.append(f"  records not scored, {reason}: {n} (FILTER {s['info_name']}_{RECORD_REASONS[reason][0]})")
    for reason, n in s["alleles_not_scored"].items():
        lines.append(f"  ALTs not scored, {reason}: {n}")
    lines.append(
        f"{s['windows_scored']} windows of up to {s['window']} bases scored"
        f"{' on both strands' if s['both_strands'] else ''} in {s['seconds']:.1f} s; reference "
        f"{s['reference']}"
    )
    return lines
