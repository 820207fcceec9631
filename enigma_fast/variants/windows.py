"""The windows a variant is scored in, and why a record or an ALT is not scored.

For an ALT starting at 0-based offset ``s`` of its contig ``X``, ``e = s + len(ref)``, flanks ``(left, right) =
flank_sizes(...)`` and ``d = |len(alt) - len(ref)|``, each strand reads a pair of windows that start at the same
base and hold the same number of bases (``equal_windows``)::

    forward  ref_window = (X[s - left : s] + ref + X[e : e + right + d])[:n]      n = left + max(len(ref), len(alt))
             alt_window = (X[s - left : s] + alt + X[e : e + right + d])[:n]          + right, less where the contig
    reverse  the same read from X[e + right - 1] leftwards: X[s - left - d : s] + ref/alt + X[e : e + right],     ends
             the last n bases of each (then reverse-complemented by the scorer)

So the shorter allele's window continues past its far flank by the ``d`` bases the other allele's window spends on
the longer allele, and both windows of a strand pay for the same number of bases; an SNV's pair is the same on both
strands, ``X[s - left : s] + ref/alt + X[e : e + right]``. ``plan_record`` checks a VCF record against the reference
(``RECORD_REASONS``), each ALT on its own (``ALLELE_REASONS``), and builds the window pairs of every ALT that is to
be scored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from enigma_fast.variants.reference import Reference

__all__ = [
    "ALLELE_REASONS",
    "DEFAULT_WINDOW",
    "RECORD_REASONS",
    "AlleleScore",
    "Planned",
    "WindowPair",
    "context_tokens",
    "equal_windows",
    "flank_sizes",
    "model_limit_bases",
    "plan_record",
]

DEFAULT_WINDOW = 128  # bases; capped by what the model can score in one piece

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


def allele_reason(alt: str, window: int, ref_len: int) -> str | None:
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


class WindowPair(NamedTuple):
    """The windows of one ALT: ``forward`` and ``reverse`` are ``(ref_window, alt_window)`` of equal length, both
    written on the forward strand (the scorer reverse-complements ``reverse``); the two pairs are equal for an
    SNV."""

    forward: tuple[str, str]
    reverse: tuple[str, str]


def equal_windows(before: str, ref: str, alt: str, after: str, left: int, right: int) -> WindowPair:
    """The REF and ALT windows of both strands, each pair paying for the same number of bases.

    ``before`` holds the ``left`` bases before the variant and up to ``d = |len(alt) - len(ref)|`` more before them
    (fewer at the contig start), ``after`` the ``right`` bases after the REF allele and up to ``d`` more (fewer at
    the contig end). With ``n = left + max(len(ref), len(alt)) + right``, the forward pair is the first ``m`` bases
    of ``before[-left:] + ref + after`` and of ``before[-left:] + alt + after``, ``m = min(n, both lengths)``: the
    same start, the shorter allele's window filled up with the next ``d`` bases after the right flank, and both cut
    to the shorter haplotype where the contig ends. The reverse pair mirrors it: the last bases of ``before + ref +
    after[:right]`` and ``before + alt + after[:right]``. For an SNV (``d = 0``) both pairs are ``(before + ref +
    after, before + alt + after)``.
    """
    n = left + max(len(ref), len(alt)) + right
    near = before[len(before) - left :]
    r, a = near + ref + after, near + alt + after
    m = min(n, len(r), len(a))
    forward = (r[:m], a[:m])
    near = after[:right]
    r, a = before + ref + near, before + alt + near
    m = min(n, len(r), len(a))
    return WindowPair(forward, (r[len(r) - m :], a[len(a) - m :]))


@dataclass
class Planned:
    """A VCF record checked and laid out: its record-level reason (None when it is scored), one ``AlleleScore``
    per ALT, and per ALT its ``WindowPair`` when it is to be scored."""

    rec: Any
    reason: str | None  # record-level
    alleles: list[AlleleScore]
    windows: list[WindowPair | None]  # per ALT, when it is to be scored


def plan_record(rec: Any, ref: Reference, window: int) -> Planned:
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
        return Planned(rec, reason, alleles, [None] * len(alts))
    alleles, windows = [], []
    length, up = ref.lengths[chrom], refa.upper()
    for alt in alts:
        why = allele_reason(alt, window, len(refa))
        if why is not None:
            alleles.append(AlleleScore(chrom, pos, ident, refa, alt, None, why))
            windows.append(None)
            continue
        left, right = flank_sizes(window, rec.start, len(refa), len(alt), length)
        d, end = abs(len(alt) - len(refa)), rec.start + len(refa)
        before = ref.fetch(chrom, max(0, rec.start - left - d), rec.start)
        after = ref.fetch(chrom, end, min(length, end + right + d))
        windows.append(equal_windows(before, up, alt.upper(), after, left, right))
        alleles.append(AlleleScore(chrom, pos, ident, refa, alt, None, "scored", left, right))
    return Planned(rec, None, alleles, windows)


def context_tokens(tok: Any, flank: int) -> int:
    """Enigma source length for a window whose first ``flank`` bases come before the allele: the most tokens that
    lie wholly inside that flank (token i covers bases ``[i*stride, i*stride + k)``), at least 1."""
    return max(1, (flank - tok.k + tok.stride) // tok.stride)


def model_limit_bases(model: torch.nn.Module, tokenizer: Any) -> int | None:
    """Bases the model can score in one piece (block_size tokens of ``stride`` bases), None if unknown."""
    block = getattr(getattr(model, "config", None), "block_size", None)
    if block is None:
        return None
    stride = getattr(tokenizer, "stride", 1) or 1
    return int(block) * int(stride)
