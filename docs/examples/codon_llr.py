"""Variant effects by codon position on the shipped genome (the worked example of docs/reading.md, "Variant effects").

    python docs/examples/codon_llr.py --model runs/tiny/final --variants 3000 --seed 0 --out-dir codon_llr

1. Genes of the shipped *C. diphtheriae* chromosome are predicted by pyrodigal (single-genome mode, trained on
   the whole chromosome); those lying wholly in its last 10% (the part `python -m enigma_fast.train` holds out),
   at least half a window past the cut, are kept.
2. ``--variants`` coding positions are drawn uniformly without replacement (first and last codon of each gene
   and bases covered by two genes left out), each with a random different base, and written as a VCF.
3. ``enigma_fast.variants.variant_scores`` scores them (window 128 bases, the trainer's window) into a TSV.
4. The mean |LLR| per codon position 1/2/3 with its count and standard error (sd / sqrt(n)) is printed, written
   to ``results.json`` and drawn in ``codon_llr.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from pathlib import Path

from enigma_fast.data import read_sequences, shipped_genome_path
from enigma_fast.data.fasta import iter_records
from enigma_fast.models import load_model
from enigma_fast.variants import variant_scores

WINDOW = 128


_BASES = "TCAG"
_AMINO = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"  # translation table 11 (= 1)
CODE = {
    a + b + c: _AMINO[16 * i + 4 * j + k]
    for i, a in enumerate(_BASES)
    for j, b in enumerate(_BASES)
    for k, c in enumerate(_BASES)
}


def coding_positions(seq: str, cut: int, margin: int) -> tuple[dict[int, tuple[int, int, int]], int]:
    """0-based genome offset -> (codon position 1/2/3, strand +1/-1, offset of the codon's first genome base) for
    bases of genes wholly inside ``[cut + margin, len)``, and the number of such genes."""
    import pyrodigal

    finder = pyrodigal.GeneFinder()
    finder.train(seq)
    genes = [
        g
        for g in finder.find_genes(seq)
        if g.begin - 1 >= cut + margin and g.end <= len(seq) and not g.partial_begin and not g.partial_end
    ]
    frame: dict[int, tuple[int, int, int]] = {}
    seen: dict[int, int] = {}
    for g in genes:
        for x in range(g.begin + 3, g.end - 2):  # 1-based, first and last codon left out
            k = (x - g.begin) % 3 if g.strand == 1 else (g.end - x) % 3
            first = x - 1 - k if g.strand == 1 else x - 1 + k - 2  # lowest genome offset of the codon
            frame[x - 1] = (k + 1, g.strand, first)
            seen[x - 1] = seen.get(x - 1, 0) + 1
    return {p: v for p, v in frame.items() if seen[p] == 1}, len(genes)


def effect(seq: str, x: int, alt: str, strand: int, first: int) -> str:
    """'synonymous', 'missense' or 'nonsense' for base ``alt`` at genome offset ``x`` of the codon at ``first``."""
    codon = seq[first : first + 3]
    mutated = codon[: x - first] + alt + codon[x - first + 1 :]
    if strand == -1:
        codon, mutated = (c[::-1].translate(str.maketrans("ACGT", "TGCA")) for c in (codon, mutated))
    before, after = CODE[codon], CODE[mutated]
    return "synonymous" if before == after else "nonsense" if after == "*" else "missense"


def stats(values: list[float]) -> dict[str, float]:
    """n, mean |v|, its standard error (sd / sqrt(n)) and the mean of v."""
    n = len(values)
    a = [abs(v) for v in values]
    mean = sum(a) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in a) / (n - 1)) if n > 1 else math.nan
    return {"n": n, "mean_abs_llr": mean, "se": sd / math.sqrt(n), "mean_llr": sum(values) / n}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder of a model trained on the shipped genome")
    p.add_argument("--variants", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out-dir", default="codon_llr")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    fasta = shipped_genome_path()
    (name,) = [r.name.split()[0] for r in iter_records(fasta)]
    seq = "".join(read_sequences(fasta))
    cut = len(seq) - round(0.1 * len(seq))  # the trainer's held-out split (val_fraction 0.1, by position)
    frame, n_genes = coding_positions(seq, cut, WINDOW // 2)
    rng = random.Random(args.seed)
    chosen = sorted(rng.sample(sorted(frame), min(args.variants, len(frame))))
    vcf = out / "variants.vcf"
    kinds = {}
    with open(vcf, "w") as f:
        f.write(f"##fileformat=VCFv4.2\n##contig=<ID={name},length={len(seq)}>\n")
        f.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for x in chosen:
            ref = seq[x]
            alt = rng.choice([b for b in "ACGT" if b != ref])
            k, strand, first = frame[x]
            kinds[x + 1] = (k, effect(seq, x, alt, strand, first), ref in "GC")
            f.write(f"{name}\t{x + 1}\tcodon{k}\t{ref}\t{alt}\t.\t.\t.\n")
    t1 = time.perf_counter()

    model = load_model(args.model)
    res = variant_scores(
        model,
        fasta,
        vcf,
        out=out / "variants.llr.vcf.gz",
        tsv=out / "variants.llr.tsv",
        window=WINDOW,
        batch_size=args.batch_size,
        progress=True,
    )
    t2 = time.perf_counter()

    scored = [(kinds[a.pos], a.llr) for a in res.alleles if a.llr is not None]
    rows = []
    for k in (1, 2, 3):
        at = [(kind, llr) for kind, llr in scored if kind[0] == k]
        rows.append(
            {
                "codon_position": k,
                **stats([llr for _, llr in at]),
                "ref_gc": sum(kind[2] for kind, _ in at) / len(at),
                "synonymous": sum(kind[1] == "synonymous" for kind, _ in at) / len(at),
            }
        )
    by_effect = [
        {"effect": e, **stats([llr for kind, llr in scored if kind[1] == e])}
        for e in ("synonymous", "missense", "nonsense")
        if any(kind[1] == e for kind, _ in scored)
    ]
    by_gc = [
        {"ref": g, "codon_position": k, **stats([llr for kind, llr in scored if kind[0] == k and kind[2] == gc])}
        for k in (1, 2, 3)
        for g, gc in (("G/C", True), ("A/T", False))
    ]
    summary = {
        "model": args.model,
        "genes": n_genes,
        "held_out_from": cut + 1,
        "coding_positions": len(frame),
        "variants": len(chosen),
        "window": WINDOW,
        "seed": args.seed,
        "by_codon_position": rows,
        "by_effect": by_effect,
        "by_codon_position_and_ref": by_gc,
        "seconds_genes_and_vcf": round(t1 - t0, 1),
        "seconds_scoring": round(t2 - t1, 1),
        "seconds_total": round(time.perf_counter() - t0, 1),
        "vep_summary": res.summary,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{n_genes} genes in the held-out {len(seq) - cut} bases, {len(chosen)} substitutions, window {WINDOW}")
    print("codon position      n   mean |LLR| (nats)      SE   mean LLR   REF G/C   synonymous")
    for r in rows:
        print(
            f"{r['codon_position']:>14} {r['n']:>6} {r['mean_abs_llr']:>19.4f} {r['se']:>7.4f} "
            f"{r['mean_llr']:>10.4f} {r['ref_gc']:>9.2f} {r['synonymous']:>12.2f}"
        )
    print("effect              n   mean |LLR| (nats)      SE   mean LLR")
    for r in by_effect:
        print(f"{r['effect']:>14} {r['n']:>6} {r['mean_abs_llr']:>19.4f} {r['se']:>7.4f} {r['mean_llr']:>10.4f}")
    print("codon position, REF      n   mean |LLR| (nats)      SE   mean LLR")
    for r in by_gc:
        print(
            f"{r['codon_position']:>14}, {r['ref']:>3} {r['n']:>6} {r['mean_abs_llr']:>19.4f} {r['se']:>7.4f} "
            f"{r['mean_llr']:>10.4f}"
        )
    print(f"time: {summary['seconds_genes_and_vcf']} s genes + VCF, {summary['seconds_scoring']} s scoring")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
        ax.bar(
            [1, 2, 3],
            [r["mean_abs_llr"] for r in rows],
            yerr=[r["se"] for r in rows],
            capsize=4,
            color="#4c72b0",
            tick_label=["1", "2", "3"],
        )
        ax.set_xlabel("codon position of the substitution")
        ax.set_ylabel("mean |LLR| (nats)")
        ax.set_title(f"{len(chosen)} random substitutions in held-out genes", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "codon_llr.png")
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
