"""Variant effect scores: for every ALT of every record of a VCF, the log-likelihood ratio of a window holding the
ALT allele against the same window holding the REF allele (natural log, summed over the scored bases)::

    LLR = log P(X[s - left : s] + alt + X[e : e + right]) - log P(X[s - left : s] + ref + X[e : e + right])

for a variant at 0-based offset ``s`` of contig ``X``, ``e = s + len(ref)``, flanks ``(left, right)`` from
``flank_sizes`` (half the rest of the window on each side, clipped at the contig ends), written back as INFO fields
of the VCF and/or as a table; records and ALTs that cannot be scored are written with the reason. ``python -m
enigma_fast.vep`` (``enigma_fast.cli.vep``) documents the outputs.

    from enigma_fast.variants import variant_scores
    res = variant_scores(model, "ref.fa.gz", "in.vcf.gz", out="out.vcf.gz")

The modules, one job each: ``reference`` (random access to the FASTA), ``windows`` (the windows of a variant and
the reasons not to score it), ``vcf`` (reading, the output header, annotation, the TSV table), ``llr`` (scoring and
``variant_scores``). Needs pysam (``pip install enigma_fast[reading]``); it is imported only when a function here
runs. Log messages go to the logger ``enigma_fast.vep``.
"""

from enigma_fast.variants.llr import VepResult, summary_lines, variant_scores
from enigma_fast.variants.vcf import TSV_COLUMNS
from enigma_fast.variants.windows import ALLELE_REASONS, DEFAULT_WINDOW, RECORD_REASONS, AlleleScore, flank_sizes

__all__ = [
    "ALLELE_REASONS",
    "DEFAULT_WINDOW",
    "RECORD_REASONS",
    "TSV_COLUMNS",
    "AlleleScore",
    "VepResult",
    "flank_sizes",
    "summary_lines",
    "variant_scores",
]
