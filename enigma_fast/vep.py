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
import contextlib
import gzip
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import torch

from enigma_fast.tokenizers import reverse_complement

__all__ = [
    "ALLELE_REASONS",
    "DEFAULT_WINDOW",
    "RECORD_REASONS",
    "AlleleScore",
    "VepResult",
    "flank_sizes",
    "TSV_COLUMNS",
    "main",
    "summary_lines",
    "variant_scores",
]

log = logging.getLogger("enigma_fast.vep")
PROG = "python -m enigma_fast.vep"
DEFAULT_WINDOW = 128  # bases; capped by what the model can score in one piece
INSTALL_HINT = "pip install enigma_fast[reading]"

# Record-level reasons: the record is written with FILTER <info_name>_<SUFFIX> added.
RECORD_REASONS: dict[str, tuple[str, str]] = {
    "no_alt": ("NO_ALT", "no ALT allele (ALT is '.'): nothing to score"),
    "no_contig": ("NO_CONTIG", "CHROM is not a sequence of the reference FASTA: not scored"),
    "past_end": ("PAST_END", "POS + len(REF) - 1 lies past the end of the reference sequence: not scored"),
    "ref_mismatch": ("REF_MISMATCH", "REF differs from the reference FASTA at POS (case ignored): not scored"),
}
# ALT-level reasons, written per ALT into the INFO field <info_name>_SKIP (Number=A).
ALLELE_REASONS: dict[str, str] = {
    "symbolic": "symbolic allele such as <DEL> or <*>",
    "breakend": "breakend (t[p[, ]p]t, .t, t.)",
    "star": "'*': allele missing due to an upstream deletion",
    "not_dna": "allele holds letters other than A, C, G, T, N",
    "too_long": "longer allele of REF/ALT over half the window",
}
_DNA = re.compile(r"[ACGTNacgtn]+")
_INFO_NAME = re.compile(r"[A-Za-z_][0-9A-Za-z_.]*")


class UsageError(Exception):
    """A bad argument or input: reported as one line on stderr, exit code 2."""


def _pysam() -> Any:
    try:
        import pysam
    except ImportError:
        raise ImportError(f"enigma_fast.vep needs pysam: {INSTALL_HINT}") from None
    return pysam


# ---------------------------------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------------------------------
def flank_sizes(window: int, start: int, ref_len: int, alt_len: int, contig_length: int) -> tuple[int, int]:
    """Bases of context ``(left, right)`` on each side of a variant, the same for its REF and ALT windows.

    ``span = max(ref_len, alt_len)``, ``left = (window - span) // 2``, ``right = window - span - left``, then
    ``left = min(left, start)`` and ``right = min(right, contig_length - start - ref_len)`` (clipped at the
    contig ends, never shifted). ``start`` is the 0-based offset of the first REF base; ``span <= window``.
    """
    span = max(ref_len, alt_len)
    if span > window:
        raise ValueError(f"alleles of {span} bases do not fit a window of {window} bases")
    left = (window - span) // 2
    right = window - span - left
    return min(left, start), max(0, min(right, contig_length - start - ref_len))


def _allele_reason(alt: str, window: int, ref_len: int) -> str | None:
    """Why an ALT allele cannot be scored, or None."""
    if alt == "*":
        return "star"
    if alt.startswith("<") and alt.endswith(">"):
        return "symbolic"
    if "[" in alt or "]" in alt or alt.startswith(".") or alt.endswith("."):
        return "breakend"
    if not _DNA.fullmatch(alt):
        return "not_dna"
    if max(len(alt), ref_len) > window // 2:
        return "too_long"
    return None


# ---------------------------------------------------------------------------------------------------------------
# the reference FASTA
# ---------------------------------------------------------------------------------------------------------------
class _Reference:
    """Random access to a FASTA: ``lengths`` (name -> bases) and ``fetch(name, start, end)`` (upper case)."""

    lengths: dict[str, int]
    how: str

    def fetch(self, name: str, start: int, end: int) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _FaidxReference(_Reference):
    def __init__(self, fasta: Any, how: str) -> None:
        self._fa = fasta
        self.lengths = dict(zip(fasta.references, fasta.lengths, strict=True))
        self.how = how

    def fetch(self, name: str, start: int, end: int) -> str:
        return self._fa.fetch(name, start, end).upper()

    def close(self) -> None:
        self._fa.close()


class _MemoryReference(_Reference):
    def __init__(self, path: str, keep: set[str] | None, how: str) -> None:
        from enigma_fast.data.fasta import iter_records

        self.lengths, self._seqs = {}, {}
        for rec in iter_records(path):
            name = rec.name.split(maxsplit=1)[0] if rec.name.strip() else rec.name
            if name in self.lengths:
                raise ValueError(f"{path}: sequence name {name!r} appears twice")
            self.lengths[name] = len(rec.sequence)
            if keep is None or name in keep:
                self._seqs[name] = rec.sequence
        self.how = how

    def fetch(self, name: str, start: int, end: int) -> str:
        return self._seqs[name][start:end].upper()


def _compression(path: str) -> str:
    """'bgzf', 'gzip' or 'plain' from the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(18)
    if head[:2] != b"\x1f\x8b":
        return "plain"
    return "bgzf" if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC" else "gzip"


def _open_reference(path: str, contigs: set[str], write_index: bool) -> _Reference:
    """The FASTA through pysam's faidx when its index exists or may be written next to it, otherwise read into
    memory (only the sequences of ``contigs`` kept). Writing an index is logged."""
    pysam = _pysam()
    kind = _compression(path)
    needed = [path + ".fai"] + ([path + ".gzi"] if kind == "bgzf" else [])
    have_index = all(os.path.isfile(p) for p in needed)
    folder = os.path.dirname(os.path.abspath(path))
    if kind != "gzip" and (have_index or (write_index and os.access(folder, os.W_OK))):
        if not have_index:
            log.info(
                "indexing %s: writing %s next to it (--no-write-index reads it into memory instead)",
                path,
                " and ".join(p for p in needed if not os.path.isfile(p)),
            )
        try:
            return _FaidxReference(pysam.FastaFile(path), "faidx index" + ("" if have_index else " (written)"))
        except (OSError, ValueError) as err:
            if have_index:
                raise ValueError(f"{path}: cannot open the FASTA with its index: {err}") from None
            log.warning("%s: cannot index (%s); reading it into memory", path, err)
    why = (
        "plain gzip, not bgzip: no random access"
        if kind == "gzip"
        else "no index and --no-write-index"
        if not write_index
        else f"no index and {folder} is not writable"
    )
    log.info("reading %s into memory (%s)", path, why)
    return _MemoryReference(path, contigs, f"in memory ({why})")


# ---------------------------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------------------------
class AlleleScore(NamedTuple):
    """One ALT of one record (``alt`` None and ``status`` 'no_alt' for a record without ALT).

    ``pos`` is the VCF's 1-based POS; ``llr`` = log P(alt window) - log P(ref window) in nats, None when not
    scored; ``status`` is 'scored' or a key of ``RECORD_REASONS`` / ``ALLELE_REASONS``; ``left``/``right`` are
    the flanks used (0 when not scored).
    """

    chrom: str
    pos: int
    id: str | None
    ref: str
    alt: str | None
    llr: float | None
    status: str
    left: int = 0
    right: int = 0


@dataclass
class VepResult:
    """What ``variant_scores`` returns: the per-ALT results (empty when ``keep=False``) and the summary counts."""

    alleles: list[AlleleScore] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Planned:
    rec: Any
    reason: str | None  # record-level
    alleles: list[AlleleScore]
    windows: list[tuple[str, str] | None]  # (ref_window, alt_window) per ALT when it is to be scored


def _plan(rec: Any, ref: _Reference, window: int) -> _Planned:
    """Record-level checks, then per-ALT reasons and windows."""
    chrom, pos, ident, refa = rec.chrom, rec.pos, rec.id, rec.ref or ""
    alts = rec.alts or ()
    reason = None
    if not alts:
        reason = "no_alt"
    elif chrom not in ref.lengths:
        reason = "no_contig"
    elif rec.start + len(refa) > ref.lengths[chrom] or rec.start < 0:
        reason = "past_end"
    elif ref.fetch(chrom, rec.start, rec.start + len(refa)) != refa.upper():
        reason = "ref_mismatch"
    if reason is not None:
        alleles = [AlleleScore(chrom, pos, ident, refa, a, None, reason) for a in alts] or [
            AlleleScore(chrom, pos, ident, refa, None, None, reason)
        ]
        return _Planned(rec, reason, alleles, [None] * len(alts))
    alleles, windows = [], []
    length, up = ref.lengths[chrom], refa.upper()
    for alt in alts:
        why = _allele_reason(alt, window, len(refa))
        if why is not None:
            alleles.append(AlleleScore(chrom, pos, ident, refa, alt, None, why))
            windows.append(None)
            continue
        left, right = flank_sizes(window, rec.start, len(refa), len(alt), length)
        before = ref.fetch(chrom, rec.start - left, rec.start)
        after = ref.fetch(chrom, rec.start + len(refa), rec.start + len(refa) + right)
        windows.append((before + up + after, before + alt.upper() + after))
        alleles.append(AlleleScore(chrom, pos, ident, refa, alt, None, "scored", left, right))
    return _Planned(rec, None, alleles, windows)


def _context_tokens(tok: Any, flank: int) -> int:
    """Enigma source length for a window whose first ``flank`` bases come before the allele: the most tokens that
    lie wholly inside that flank (token i covers bases ``[i*stride, i*stride + k)``), at least 1."""
    return max(1, (flank - tok.k + tok.stride) // tok.stride)


def _log_likelihoods(model: torch.nn.Module, requests: Sequence[tuple[str, int | None]], **kw: Any) -> list[float]:
    """Natural-log likelihood of each ``(sequence, context)`` (summed over its scored bases) from
    ``enigma_fast.scoring.score``, one call per distinct ``context`` (None: the API's default)."""
    from enigma_fast.scoring import score

    groups: dict[int | None, list[int]] = {}
    for i, (_, ctx) in enumerate(requests):
        groups.setdefault(ctx, []).append(i)
    out = [math.nan] * len(requests)
    for ctx, members in groups.items():
        seqs = [requests[i][0] for i in members]
        for i, s in zip(members, score(model, seqs, context=ctx, **kw), strict=True):
            out[i] = s.log_likelihood
    return out


def _model_limit_bases(model: torch.nn.Module, tokenizer: Any) -> int | None:
    """Bases the model can score in one piece (block_size tokens of ``stride`` bases), None if unknown."""
    block = getattr(getattr(model, "config", None), "block_size", None)
    if block is None:
        return None
    stride = getattr(tokenizer, "stride", 1) or 1
    return int(block) * int(stride)


# ---------------------------------------------------------------------------------------------------------------
# the VCF
# ---------------------------------------------------------------------------------------------------------------
def _scan(pysam: Any, path: str) -> tuple[Any, int, list[str], bool]:
    """Read every record once: the header as htslib completed it (lines for undeclared contigs, INFO, FILTER,
    FORMAT tags), the record count, the contigs used, and whether any ALT is symbolic."""
    n, contigs, symbolic = 0, {}, False
    vf = pysam.VariantFile(path)
    try:
        for rec in vf:
            n += 1
            contigs.setdefault(rec.chrom, None)
            if not symbolic and rec.alts and any(a.startswith("<") and a.endswith(">") for a in rec.alts):
                symbolic = True
        return vf.header.copy(), n, list(contigs), symbolic
    finally:
        vf.close()


def _records(reader: Any, path: str) -> Iterator[Any]:
    """The reader's records; a parse error becomes a ValueError naming the file and the record number."""
    n = 0
    it = iter(reader)
    while True:
        try:
            rec = next(it)
        except StopIteration:
            return
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read record {n + 1}: {err}") from None
        n += 1
        yield rec


def _header_key(r: Any) -> tuple[str, str | None]:
    return (r.type, r.get("ID"))


def _prepare_header(header: Any, scanned: Any, ref: _Reference, info_name: str, symbolic: bool) -> list[str]:
    """Complete ``header`` (the reader's, before any record is read) in place: the lines htslib would add on the
    fly for undeclared tags (so record ids stay consistent), contig lengths from the FASTA for undeclared
    contigs, INFO/END when symbolic ALTs need it (htslib writes END for them), and the LLR fields and filters.
    Returns the names of the undeclared tags (for the log)."""
    have = {_header_key(r) for r in header.records}
    added = []
    for r in scanned.records:
        if _header_key(r) in have:
            continue
        rtype, ident = _header_key(r)
        if rtype == "CONTIG" and ident in ref.lengths:
            header.contigs.add(ident, length=ref.lengths[ident])
        else:
            header.add_line(str(r).strip())
        added.append(f"{rtype.lower() if rtype == 'CONTIG' else rtype} {ident}")
    if symbolic and "END" not in header.info:
        header.info.add("END", number=1, type="Integer", description="Stop position of the interval")
    skip = info_name + "_SKIP"
    reasons = {**ALLELE_REASONS, **{k: v[1] for k, v in RECORD_REASONS.items()}}
    wanted = {
        info_name: (
            "A",
            "Float",
            "Log-likelihood ratio log P(window with ALT) - log P(window with REF) (natural log, "
            "enigma_fast.vep); missing when the ALT was not scored",
        ),
        skip: ("A", "String", f"Why an ALT has no {info_name}: " + "; ".join(f"{k} = {v}" for k, v in reasons.items())),
    }
    for tag, (number, typ, desc) in wanted.items():
        if tag in header.info:
            old = header.info[tag]
            if (str(old.number), old.type) != (number, typ):
                raise ValueError(
                    f"the VCF already declares INFO/{tag} as Number={old.number},Type={old.type}; "
                    f"choose another info name (--info-name)"
                )
            log.warning("the VCF already has INFO/%s: its values are replaced", tag)
        else:
            header.info.add(tag, number=number, type=typ, description=desc)
    for _, (suffix, desc) in RECORD_REASONS.items():
        name = f"{info_name}_{suffix}"
        if name not in header.filters:
            header.filters.add(name, None, None, desc)
    return added


# ---------------------------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _atomic(path: str | None) -> Iterator[str | None]:
    """A temporary sibling of ``path`` to write into, renamed over ``path`` when the block succeeds."""
    if path is None:
        yield None
        return
    target = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _vcf_mode(path: str) -> str:
    """pysam write mode from the output name: bgzip for .gz/.bgz, BCF for .bcf, plain VCF otherwise."""
    if path.endswith((".gz", ".bgz")):
        return "wz"
    return "wb" if path.endswith(".bcf") else "w"


TSV_COLUMNS = ("chrom", "pos", "id", "ref", "alt", "llr", "status", "left", "right")


def _tsv_row(a: AlleleScore) -> str:
    llr = "" if a.llr is None else f"{a.llr:.6g}"
    cells = (a.chrom, a.pos, a.id or ".", a.ref, a.alt or ".", llr, a.status, a.left, a.right)
    return "\t".join(map(str, cells)) + "\n"


def _annotate(rec: Any, plan: _Planned, info_name: str) -> None:
    """FILTER for a record-level reason; INFO LLR and LLR_SKIP (Number=A) for the ALTs."""
    skip = info_name + "_SKIP"
    for tag in (info_name, skip):
        if tag in rec.info:
            del rec.info[tag]
    if plan.reason is not None:
        rec.filter.add(f"{info_name}_{RECORD_REASONS[plan.reason][0]}")
    if not plan.alleles or plan.alleles[0].alt is None:
        return
    llrs = tuple(a.llr for a in plan.alleles)
    if any(v is not None for v in llrs):
        rec.info[info_name] = llrs
    if any(v is None for v in llrs):
        rec.info[skip] = tuple("." if a.status == "scored" else a.status for a in plan.alleles)


# ---------------------------------------------------------------------------------------------------------------
# the public function
# ---------------------------------------------------------------------------------------------------------------
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
    pysam = _pysam()
    fasta, vcf = os.fspath(fasta), os.fspath(vcf)
    out = None if out is None else os.fspath(out)
    tsv = None if tsv is None else os.fspath(tsv)
    for flag, path in (("fasta", fasta), ("vcf", vcf)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{flag} file not found: {path}")
    if not isinstance(info_name, str) or not _INFO_NAME.fullmatch(info_name):
        raise ValueError(f"info_name must be a VCF key ([A-Za-z_][0-9A-Za-z_.]*), got {info_name!r}")
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("the model has no tokenizer; pass tokenizer=")
    limit = _model_limit_bases(model, tok)
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
    with _quiet(pysam):  # htslib's per-record warnings on undeclared tags: summarised below
        try:
            scanned, n_records, contigs, symbolic = _scan(pysam, vcf)
        except (OSError, ValueError) as err:
            raise ValueError(f"{vcf}: cannot read the VCF: {err}") from None
    enigma = getattr(model.config, "model_type", None) == "enigma"
    scorer = _Scorer(
        model, tok, enigma, both_strands, dict(tokenizer=tok, batch_size=batch_size, device=device, dtype=dtype)
    )
    tally = _Tally(keep)
    with contextlib.ExitStack() as stack:
        ref = _open_reference(fasta, set(contigs), write_index)
        stack.callback(ref.close)
        with _quiet(pysam):  # "could not retrieve index file": none is needed
            reader = stack.enter_context(pysam.VariantFile(vcf))
        added = _prepare_header(reader.header, scanned, ref, info_name, symbolic)
        if added:
            log.warning("%s: the header does not declare %s; declared in the output", vcf, ", ".join(added))
        _check_contig_lengths(reader.header, contigs, ref, fasta)
        out_tmp = stack.enter_context(_atomic(out))
        tsv_tmp = stack.enter_context(_atomic(tsv))
        writer = (
            stack.enter_context(pysam.VariantFile(out_tmp, _vcf_mode(out), header=reader.header)) if out_tmp else None
        )
        table = stack.enter_context((gzip.open if tsv.endswith(".gz") else open)(tsv_tmp, "wt")) if tsv_tmp else None
        if table is not None:
            table.write("\t".join(TSV_COLUMNS) + "\n")
        bar = _progress(progress, n_records)
        stack.callback(bar.close)
        pending: list[_Planned] = []
        for rec in _records(reader, vcf):
            pending.append(_plan(rec, ref, window))
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


@contextlib.contextmanager
def _quiet(pysam: Any) -> Iterator[None]:
    """htslib's log silenced for the block."""
    level = pysam.set_verbosity(0)
    try:
        yield
    finally:
        pysam.set_verbosity(level)


def _check_contig_lengths(header: Any, contigs: Sequence[str], ref: _Reference, fasta: str) -> None:
    """A warning for each contig whose length in the VCF header differs from the FASTA's."""
    for name in contigs:
        declared = header.contigs.get(name)
        length = None if declared is None else declared.length
        if length is not None and name in ref.lengths and length != ref.lengths[name]:
            log.warning(
                "contig %s: %d bases in the VCF header, %d in %s (another assembly?)",
                name,
                declared.length,
                ref.lengths[name],
                fasta,
            )


class _Scorer:
    """LLRs of the planned ALTs of a chunk of records: every window (and with ``both_strands`` its reverse
    complement) scored once, an Enigma window with its left flank as the source."""

    def __init__(self, model: torch.nn.Module, tok: Any, enigma: bool, both_strands: bool, kw: dict) -> None:
        self.model, self.tok, self.enigma, self.both, self.kw = model, tok, enigma, both_strands, kw
        self.windows = 0

    def __call__(self, pending: Sequence[_Planned]) -> None:
        requests: dict[tuple[str, int | None], int] = {}  # (window, Enigma source tokens) -> index
        slots: list[tuple[_Planned, int, list[int]]] = []
        for p in pending:
            for j, pair in enumerate(p.windows):
                if pair is None:
                    continue
                a = p.alleles[j]
                views = [(w, self._context(a.left)) for w in pair]
                if self.both:
                    views += [(reverse_complement(w), self._context(a.right)) for w in pair]
                slots.append((p, j, [requests.setdefault(v, len(requests)) for v in views]))
        ll = _log_likelihoods(self.model, list(requests), **self.kw) if requests else []
        self.windows += len(requests)
        for p, j, ids in slots:
            llr = ll[ids[1]] - ll[ids[0]]
            if self.both:
                llr = 0.5 * (llr + ll[ids[3]] - ll[ids[2]])
            p.alleles[j] = p.alleles[j]._replace(llr=llr)

    def _context(self, flank: int) -> int | None:
        return _context_tokens(self.tok, flank) if self.enigma else None


class _Tally:
    """Counts per reason, and the per-ALT results when kept."""

    def __init__(self, keep: bool) -> None:
        self.keep, self.alleles = keep, []
        self.counts: Counter[str] = Counter()
        self.records_not_scored: Counter[str] = Counter()
        self.alleles_not_scored: Counter[str] = Counter()

    def add(self, p: _Planned) -> None:
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


def _flush(pending: list[_Planned], scorer: _Scorer, writer: Any, table: Any, tally: _Tally, info_name: str) -> None:
    """Score a chunk of records, then write and count them in input order."""
    scorer(pending)
    for p in pending:
        _annotate(p.rec, p, info_name)
        if writer is not None:
            writer.write(p.rec)
        if table is not None:
            table.writelines(map(_tsv_row, p.alleles))
        tally.add(p)


def _progress(enabled: bool | None, total: int) -> Any:
    """A tqdm bar over records on stderr (``enabled`` None: only on a terminal), or a no-op."""

    class _Null:
        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    if enabled is False:
        return _Null()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Null()
    return tqdm(
        total=total,
        unit="rec",
        desc="vep",
        file=sys.stderr,
        disable=None if enabled is None else False,
        dynamic_ncols=True,
    )


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


# ---------------------------------------------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit code 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default=None, help="model dtype (default: as saved)")
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
        raise UsageError("give --out (VCF) and/or --tsv (table)")
    if args.window is not None and args.window < 2:
        raise UsageError(f"--window must be >= 2 (bases), got {args.window}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not _INFO_NAME.fullmatch(args.info_name):
        raise UsageError(f"--info-name must be a VCF key ([A-Za-z_][0-9A-Za-z_.]*), got {args.info_name!r}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device must be 'cpu' or 'cuda[:N]', got {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available")
    if not os.path.isdir(args.model):
        raise UsageError(f"--model folder not found: {args.model}")
    for flag, path in (("--fasta", args.fasta), ("--vcf", args.vcf)):
        if not os.path.isfile(path):
            raise UsageError(f"{flag} file not found: {path}")
    outs = [(flag, path) for flag, path in (("--out", args.out), ("--tsv", args.tsv)) if path is not None]
    for flag, path in outs:
        target = Path(path)
        if not target.parent.is_dir():
            raise UsageError(f"{flag} {path}: the folder {target.parent} does not exist")
        if target.is_dir():
            raise UsageError(f"{flag} {path} is a folder; give a file name")
        if not os.access(target.parent, os.W_OK):
            raise UsageError(f"{flag} {path}: the folder {target.parent} is not writable")
        for src_flag, src in (("--fasta", args.fasta), ("--vcf", args.vcf)):
            if target.exists() and os.path.samefile(target, src):
                raise UsageError(f"{flag} {path} is the {src_flag} file; it would be overwritten")
    if len(outs) == 2 and os.path.realpath(args.out) == os.path.realpath(args.tsv):
        raise UsageError("--out and --tsv name the same file")


def _run(args: argparse.Namespace) -> int:
    _check_options(args)
    _pysam()
    from enigma_fast.models import load_model

    model = load_model(args.model, device=args.device)
    if model.tokenizer is None:
        raise UsageError(f"{args.model} has no tokenizer.json")
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
        dtype=_DTYPES.get(args.dtype),
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
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return _run(args)
    except (UsageError, ImportError, OSError, ValueError) as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
