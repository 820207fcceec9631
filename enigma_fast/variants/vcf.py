"""The VCF side of variant effect scores: reading records (one pass to complete the header, then the records),
the output header (the INFO fields and FILTERs the scores add, lines for undeclared tags and contigs), the
annotation of each record, the TSV table, and the output format from the file name. pysam does the reading and
writing.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

from enigma_fast.variants.reference import Reference
from enigma_fast.variants.windows import ALLELE_REASONS, RECORD_REASONS, AlleleScore, Planned

__all__ = [
    "INFO_NAME",
    "TSV_COLUMNS",
    "annotate",
    "check_contig_lengths",
    "prepare_header",
    "quiet",
    "records",
    "scan",
    "tsv_row",
    "vcf_mode",
]

log = logging.getLogger("enigma_fast.vep")  # the name the VEP messages have always had
INFO_NAME = re.compile(r"[A-Za-z_][0-9A-Za-z_.]*")


def scan(pysam: Any, path: str) -> tuple[Any, int, list[str], bool]:
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


def records(reader: Any, path: str) -> Iterator[Any]:
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


def prepare_header(header: Any, scanned: Any, ref: Reference, info_name: str, symbolic: bool) -> list[str]:
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


def vcf_mode(path: str) -> str:
    """pysam write mode from the output name: bgzip for .gz/.bgz, BCF for .bcf, plain VCF otherwise."""
    if path.endswith((".gz", ".bgz")):
        return "wz"
    return "wb" if path.endswith(".bcf") else "w"


TSV_COLUMNS = ("chrom", "pos", "id", "ref", "alt", "llr", "status", "left", "right")


def tsv_row(a: AlleleScore) -> str:
    llr = "" if a.llr is None else f"{a.llr:.6g}"
    cells = (a.chrom, a.pos, a.id or ".", a.ref, a.alt or ".", llr, a.status, a.left, a.right)
    return "\t".join(map(str, cells)) + "\n"


def annotate(rec: Any, plan: Planned, info_name: str) -> None:
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


@contextlib.contextmanager
def quiet(pysam: Any) -> Iterator[None]:
    """htslib's log silenced for the block."""
    level = pysam.set_verbosity(0)
    try:
        yield
    finally:
        pysam.set_verbosity(level)


def check_contig_lengths(header: Any, contigs: Sequence[str], ref: Reference, fasta: str) -> None:
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
