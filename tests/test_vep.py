"""Variant effect scores (enigma_fast.vep): LLRs against an independent computation with the model's forward,
windows of SNVs, indels and variants at contig ends, records that cannot be scored, compressed inputs and
outputs, the summary, and the CLI's exit codes and one-line errors."""

from __future__ import annotations

import gzip
import importlib
import json
import logging
import os
import random
import subprocess
import sys

import pytest
import torch

from enigma_fast.models import EnBERT, EnBERTConfig, Enigma, EnigmaConfig
from enigma_fast.tokenizers import CharTokenizer, KMerTokenizer, reverse_complement

pysam = pytest.importorskip("pysam")
from enigma_fast import vep  # noqa: E402
from enigma_fast.variants import reference  # noqa: E402

W = 32  # window of the tests, in bases
PROG = "python -m enigma_fast.vep: error:"


def _random_dna(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("ACGT") for _ in range(n))


GENOME = {"chr1": _random_dna(300, 1), "chr2": _random_dna(120, 2)}


# ------------------------------------------------------------------------------------------------------------
# models and the independent log-likelihood
# ------------------------------------------------------------------------------------------------------------
def _enbert(tok) -> EnBERT:
    torch.manual_seed(3)
    cfg = EnBERTConfig.from_preset(
        "tiny", vocab_size=tok.vocab_size, d_model=32, n_head=2, n_layer=2, max_rel_pos=16, block_size=128
    )
    model = EnBERT(cfg).eval()
    with torch.no_grad():  # larger weights than the default init, so that LLRs are far from 0
        model.tok_emb.weight.normal_(0, 1.0)
    model.tokenizer = tok
    return model


@pytest.fixture(scope="module")
def enbert() -> EnBERT:
    return _enbert(CharTokenizer())


@pytest.fixture(scope="module")
def enigma() -> Enigma:
    tok = CharTokenizer()
    torch.manual_seed(4)
    cfg = EnigmaConfig.from_preset(
        "tiny",
        vocab_size=tok.vocab_size,
        d_model=32,
        n_head=2,
        n_encoder_layer=1,
        n_decoder_layer=1,
        max_rel_pos=16,
        block_size=64,
        bos_id=tok.bos_id,
    )
    model = Enigma(cfg).eval()
    with torch.no_grad():
        model.tok_emb.weight.normal_(0, 1.0)
    model.tokenizer = tok
    return model


def _ids(model, seq: str) -> torch.Tensor:
    tok = model.tokenizer
    if isinstance(tok, CharTokenizer):  # the char tokenizer's fixed ids, read from its table
        return torch.tensor([tok.fallback_ids[c] for c in seq])
    return torch.tensor(tok.encode(seq))


@torch.no_grad()
def direct_ll(model, seq: str, context: int | None = None) -> float:
    """log P(seq) from one forward pass and log_softmax: EnBERT sums log p(x_t | x_<t) for t >= 1; Enigma reads
    the first ``context`` ids as the source and sums the log-probabilities of the rest."""
    ids = _ids(model, seq)
    if isinstance(model, EnBERT):
        logits, _ = model(ids[None, :-1])
        targets = ids[1:]
    else:
        src, targets = ids[:context], ids[context:]
        tgt_in = torch.cat([torch.tensor([model.config.bos_id]), targets[:-1]])
        logits, _ = model(src[None], tgt_in[None])
    lp = torch.log_softmax(logits[0].double(), dim=-1)
    return float(lp.gather(-1, targets[:, None]).sum())


def windows(contig: str, pos: int, ref: str, alt: str, window: int = W, strand: str = "+") -> tuple[str, str, int, int]:
    """The documented windows, cut from the two haplotypes: the flanks ``left``/``right`` around the longer allele
    centred and clipped; on each strand both windows start at the same base (the outer end of the flank read first)
    and hold the same number of bases, ``left + max(len(ref), len(alt)) + right`` or what the shorter haplotype
    has from there. Returned on the forward strand, with the flanks."""
    seq, s = GENOME[contig], pos - 1
    e, span = s + len(ref), max(len(ref), len(alt))
    left = min((window - span) // 2, s)
    right = min(window - span - (window - span) // 2, len(seq) - e)
    hap_ref, hap_alt = seq[:s] + ref + seq[e:], seq[:s] + alt + seq[e:]
    n = left + span + right
    if strand == "+":
        start = s - left
        n = min(n, len(hap_ref) - start, len(hap_alt) - start)
        return hap_ref[start : start + n], hap_alt[start : start + n], left, right
    end_ref = e + right  # the last base read, in each haplotype's coordinates
    end_alt = end_ref + len(alt) - len(ref)
    n = min(n, end_ref, end_alt)
    return hap_ref[end_ref - n : end_ref], hap_alt[end_alt - n : end_alt], left, right


def direct_llr(model, contig: str, pos: int, ref: str, alt: str, both: bool = False) -> float:
    r, a, left, right = windows(contig, pos, ref, alt)
    ctx = max(1, left) if isinstance(model, Enigma) else None
    llr = direct_ll(model, a, ctx) - direct_ll(model, r, ctx)
    if both:
        r, a, _, _ = windows(contig, pos, ref, alt, strand="-")
        ctx = max(1, right) if isinstance(model, Enigma) else None
        llr = 0.5 * (llr + direct_ll(model, reverse_complement(a), ctx) - direct_ll(model, reverse_complement(r), ctx))
    return llr


# ------------------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------------------
def write_fasta(path, genome=GENOME) -> str:
    with open(path, "w") as f:
        for name, seq in genome.items():
            f.write(f">{name} test sequence\n")
            f.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    return str(path)


HEADER = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"


def write_vcf(path, rows, contigs=("chr1", "chr2"), extra=(), samples=()) -> str:
    """A VCF with ``##contig`` lines for ``contigs``; rows are (chrom, pos, id, ref, alt[, filter[, info[,
    format and sample columns]]])."""
    lines = ["##fileformat=VCFv4.2"] + [f"##contig=<ID={c},length={len(GENOME[c])}>" for c in contigs]
    lines += list(extra) + [HEADER + ("\tFORMAT\t" + "\t".join(samples) if samples else "")]
    for row in rows:
        chrom, pos, ident, ref, alt, *rest = row
        filt, info, *fmt = (list(rest) + ["PASS", "."])[: max(2, len(rest))]
        lines.append("\t".join([chrom, str(pos), ident, ref, alt, ".", filt, info, *fmt]))
    text = "\n".join(lines) + "\n"
    plain = str(path)[:-3] if str(path).endswith(".gz") else str(path)
    with open(plain, "w") as f:
        f.write(text)
    if str(path).endswith(".gz"):
        pysam.tabix_compress(plain, str(path), force=True)
        os.unlink(plain)
    return str(path)


def read_vcf(path):
    with pysam.VariantFile(str(path)) as vf:
        header = vf.header
        recs = [(r.chrom, r.pos, r.id, r.ref, r.alts, list(r.filter), dict(r.info), r) for r in vf]
        info = {k: (v.number, v.type) for k, v in header.info.items()}
        return recs, info, set(header.filters), header


def base(contig: str, pos: int) -> str:
    return GENOME[contig][pos - 1]


def other(b: str, shift: int = 1) -> str:
    return "ACGT"[("ACGT".index(b) + shift) % 4]


def snv(contig: str, pos: int, ident: str = ".", shift: int = 1) -> tuple:
    b = base(contig, pos)
    return (contig, pos, ident, b, other(b, shift))


# ------------------------------------------------------------------------------------------------------------
# windows and LLRs
# ------------------------------------------------------------------------------------------------------------
def test_flank_sizes_rule():
    assert vep.flank_sizes(32, 100, 1, 1, 300) == (15, 16)  # SNV: 15 + 1 + 16 = 32
    assert vep.flank_sizes(32, 100, 3, 1, 300) == (14, 15)  # deletion: the REF window is 32 bases
    assert vep.flank_sizes(32, 100, 1, 4, 300) == (14, 14)  # insertion: the ALT window is 32 bases
    assert vep.flank_sizes(32, 0, 1, 1, 300) == (0, 16)  # clipped at the start, not shifted
    assert vep.flank_sizes(32, 299, 1, 1, 300) == (15, 0)  # and at the end


def test_snv_llr_equals_direct_forward_difference(enbert, tmp_path):
    rows = [snv("chr1", p, f"v{p}", s) for p, s in ((40, 1), (41, 2), (150, 3), (151, 1))] + [snv("chr2", 60)]
    b = base("chr1", 200)
    rows.append(("chr1", 200, "multi", b, ",".join(other(b, s) for s in (1, 2, 3))))
    fa, vcf = write_fasta(tmp_path / "ref.fa"), write_vcf(tmp_path / "in.vcf", rows)
    res = vep.variant_scores(
        enbert, fa, vcf, out=tmp_path / "out.vcf", tsv=tmp_path / "out.tsv", window=W, batch_size=3, chunk_records=2
    )
    got = [a for a in res.alleles]
    expect = [(r[0], r[1], r[3], alt) for r in rows for alt in r[4].split(",")]
    assert [(a.chrom, a.pos, a.ref, a.alt) for a in got] == expect
    for a in got:
        assert a.status == "scored" and (a.left, a.right) == (15, 16)
        assert a.llr == pytest.approx(direct_llr(enbert, a.chrom, a.pos, a.ref, a.alt), abs=2e-4)
    assert max(abs(a.llr) for a in got) > 0.05  # the check is not vacuous
    recs, info, _, _ = read_vcf(tmp_path / "out.vcf")
    values = [v for r in recs for v in r[6]["LLR"]]
    assert values == pytest.approx([a.llr for a in got], rel=1e-5, abs=1e-5)
    table = (tmp_path / "out.tsv").read_text().splitlines()
    assert table[0].split("\t") == list(vep.TSV_COLUMNS)
    assert [float(line.split("\t")[5]) for line in table[1:]] == pytest.approx([a.llr for a in got], rel=1e-5)
    assert res.summary["alleles_scored"] == len(expect) and res.summary["records_scored"] == len(rows)


def test_both_strands_is_the_mean_of_the_two_strands(enbert, tmp_path):
    rows = [snv("chr1", 60), ("chr1", 100, ".", GENOME["chr1"][99:102], base("chr1", 100))]
    fa, vcf = write_fasta(tmp_path / "ref.fa"), write_vcf(tmp_path / "in.vcf", rows)
    res = vep.variant_scores(enbert, fa, vcf, window=W, both_strands=True)
    for a in res.alleles:
        assert a.llr == pytest.approx(direct_llr(enbert, a.chrom, a.pos, a.ref, a.alt, both=True), abs=2e-4)
        assert a.llr != pytest.approx(direct_llr(enbert, a.chrom, a.pos, a.ref, a.alt), abs=1e-3)


@torch.no_grad()
def per_base_lp(model, seq: str, context: int | None = None) -> list[float]:
    """The log-probability of every scored base of ``seq`` (char tokens: one a base) from one forward pass."""
    ids = _ids(model, seq)
    if isinstance(model, EnBERT):
        logits, _ = model(ids[None, :-1])
        targets = ids[1:]
    else:
        src, targets = ids[:context], ids[context:]
        logits, _ = model(src[None], torch.cat([torch.tensor([model.config.bos_id]), targets[:-1]])[None])
    return torch.log_softmax(logits[0].double(), -1).gather(-1, targets[:, None])[:, 0].tolist()


@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_indel_windows_pay_for_the_same_number_of_bases(kind, enbert, enigma, tmp_path):
    """A deletion's ALT window and an insertion's REF window are filled up with the bases after the right flank
    (before the left flank on the reverse strand), so both windows hold W bases and the LLR sums as many per-base
    log-probabilities on each side; checked against windows cut by hand and one forward pass each."""
    model = enbert if kind == "enbert" else enigma
    seq = GENOME["chr1"]
    deletion = ("chr1", 120, "del", seq[119:123], seq[119])  # 3 bases deleted: span 4, flanks 14 + 14
    insertion = ("chr1", 180, "ins", seq[179], seq[179] + "GATTA")  # 5 bases inserted: span 6, flanks 13 + 13
    fa, vcf = write_fasta(tmp_path / "ref.fa"), write_vcf(tmp_path / "in.vcf", [deletion, insertion])
    fwd = vep.variant_scores(model, fa, vcf, window=W).alleles
    both = vep.variant_scores(model, fa, vcf, window=W, both_strands=True).alleles
    by_hand = {  # (forward REF, forward ALT, reverse REF, reverse ALT), all on the forward strand
        "del": (
            seq[105:119] + seq[119:123] + seq[123:137],
            seq[105:119] + seq[119] + seq[123:140],  # + the 3 bases after the right flank
            seq[105:119] + seq[119:123] + seq[123:137],
            seq[102:119] + seq[119] + seq[123:137],  # + the 3 bases before the left flank
        ),
        "ins": (
            seq[166:179] + seq[179] + seq[180:198],  # + 5 bases after the right flank
            seq[166:179] + seq[179] + "GATTA" + seq[180:193],
            seq[161:179] + seq[179] + seq[180:193],  # + 5 bases before the left flank
            seq[166:179] + seq[179] + "GATTA" + seq[180:193],
        ),
    }
    unequal = {
        "del": (by_hand["del"][0], seq[105:119] + seq[119] + seq[123:137]),
        "ins": (seq[166:179] + seq[179] + seq[180:193], by_hand["ins"][1]),
    }
    for f, b in zip(fwd, both, strict=True):
        assert (f.left, f.right) == {"del": (14, 14), "ins": (13, 13)}[f.id]
        windows_ = by_hand[f.id]
        assert all(len(w) == W for w in windows_)
        ctx_f, ctx_r = (f.left, f.right) if kind == "enigma" else (None, None)
        ref_f, alt_f = per_base_lp(model, windows_[0], ctx_f), per_base_lp(model, windows_[1], ctx_f)
        ref_r, alt_r = (per_base_lp(model, reverse_complement(w), ctx_r) for w in windows_[2:])
        scored = W - 1 if kind == "enbert" else W - f.left
        assert len(ref_f) == len(alt_f) == scored and len(ref_r) == len(alt_r) == W - (ctx_r or 1)
        llr_f = sum(alt_f) - sum(ref_f)
        assert f.llr == pytest.approx(llr_f, abs=2e-4), f.id
        assert b.llr == pytest.approx(0.5 * (llr_f + sum(alt_r) - sum(ref_r)), abs=2e-4), f.id
        # and not what the windows of unequal length (the shorter one not filled up) gave before
        old_ref, old_alt = unequal[f.id]
        assert abs(f.llr - (direct_ll(model, old_alt, ctx_f) - direct_ll(model, old_ref, ctx_f))) > 0.1


def test_equal_windows_rule():
    """SNVs keep their windows (the same pair on both strands); indels fill the shorter window up from the far side
    of the strand, and where the contig ends there both windows stop at the end of the shorter haplotype."""
    from enigma_fast.variants.windows import equal_windows

    snv_pair = ("LLLLCRRRR", "LLLLGRRRR")
    assert equal_windows("LLLL", "C", "G", "RRRR", 4, 4) == (snv_pair, snv_pair)
    # a 2-base deletion with room on both sides: ALT gains 'xy' on the right (forward), 'uv' on the left (reverse)
    got = equal_windows("uvLLLL", "CGG", "C", "RRRRxy", 4, 4)
    assert got == (("LLLLCGGRRRR", "LLLLCRRRRxy"), ("LLLLCGGRRRR", "uvLLLLCRRRR"))
    # a 3-base insertion: the REF window gains the bases instead
    got = equal_windows("uvwLLLL", "C", "CGGG", "RRRRxyz", 4, 4)
    assert got == (("LLLLCRRRRxyz", "LLLLCGGGRRRR"), ("uvwLLLLCRRRR", "LLLLCGGGRRRR"))
    # the contig ends one base after the right flank: forward windows stop at the ALT haplotype's end
    got = equal_windows("uvLLLL", "CGG", "C", "RRRRx", 4, 4)
    assert got.forward == ("LLLLCGGRRR", "LLLLCRRRRx") and got.reverse == ("LLLLCGGRRRR", "uvLLLLCRRRR")
    # deleting the contig's last two bases: the forward pair is one and the same (the deletion shows on the reverse)
    got = equal_windows("uvLLLL", "CGG", "C", "", 4, 0)
    assert got.forward == ("LLLLC", "LLLLC") and got.reverse == ("LLLLCGG", "uvLLLLC")
    assert all(len(r) == len(a) for r, a in got)


def test_variants_at_contig_ends_have_clipped_windows(enbert, tmp_path):
    seq = GENOME["chr1"]
    n = len(seq)
    rows = [
        snv("chr1", 1, "first"),
        snv("chr1", 3, "third"),
        snv("chr1", n, "last"),
        ("chr1", n - 1, "del_end", seq[n - 2 :], seq[n - 2]),  # deletes the last base
        ("chr1", n, "ins_end", seq[n - 1], seq[n - 1] + "CC"),
        ("chr1", 1, "del_start", seq[:3], seq[0]),
    ]
    fa, vcf = write_fasta(tmp_path / "ref.fa"), write_vcf(tmp_path / "in.vcf", rows)
    res = vep.variant_scores(enbert, fa, vcf, window=W)
    flanks = {a.id: (a.left, a.right) for a in res.alleles}
    assert flanks == {
        "first": (0, 16),
        "third": (2, 16),
        "last": (15, 0),
        "del_end": (15, 0),
        "ins_end": (14, 0),
        "del_start": (0, 15),
    }
    for a in res.alleles:
        assert a.status == "scored"
        assert a.llr == pytest.approx(direct_llr(enbert, a.chrom, a.pos, a.ref, a.alt), abs=2e-4)


def test_enigma_source_is_the_left_flank(enigma, tmp_path):
    seq = GENOME["chr1"]
    rows = [snv("chr1", 90), ("chr1", 140, ".", seq[139:141], seq[139]), snv("chr1", 1), snv("chr1", 2)]
    fa, vcf = write_fasta(tmp_path / "ref.fa"), write_vcf(tmp_path / "in.vcf", rows)
    res = vep.variant_scores(enigma, fa, vcf, window=W, batch_size=2)
    for a in res.alleles:
        assert a.llr == pytest.approx(direct_llr(enigma, a.chrom, a.pos, a.ref, a.alt), abs=2e-4)
    both = vep.variant_scores(enigma, fa, vcf, window=W, both_strands=True)
    for a in both.alleles:
        assert a.llr == pytest.approx(direct_llr(enigma, a.chrom, a.pos, a.ref, a.alt, both=True), abs=2e-4)


def test_kmer_tokenizer(tmp_path):
    tok = KMerTokenizer(k_mers=3)
    tok.build_vocab([GENOME["chr1"], GENOME["chr2"]])
    model = _enbert(tok)
    rows = [snv("chr1", 100), snv("chr1", 101), ("chr1", 150, ".", GENOME["chr1"][149:151], base("chr1", 150))]
    fa, vcf = write_fasta(tmp_path / "ref.fa"), write_vcf(tmp_path / "in.vcf", rows)
    res = vep.variant_scores(model, fa, vcf, window=W)
    for a in res.alleles:
        assert a.llr == pytest.approx(direct_llr(model, a.chrom, a.pos, a.ref, a.alt), abs=2e-4)


# ------------------------------------------------------------------------------------------------------------
# records that cannot be scored
# ------------------------------------------------------------------------------------------------------------
def _awkward_rows() -> list[tuple]:
    seq, b = GENOME["chr1"], base("chr1", 50)
    return [
        ("chr1", 50, "multi", b, f"{other(b)},<DEL>,{other(b, 2)},*"),
        ("chr1", 60, "mismatch", other(base("chr1", 60)), "A"),
        ("chr9", 5, "nocontig", "A", "C"),
        ("chr1", 301, "past", "A", "C"),
        ("chr1", 300, "past_ref", seq[299] + "A", seq[299]),
        ("chr1", 70, "sym", base("chr1", 70), "<*>"),
        ("chr1", 80, "bnd", base("chr1", 80), base("chr1", 80) + "[chr1:5["),
        ("chr1", 90, "bnd1", base("chr1", 90), base("chr1", 90) + "."),
        ("chr1", 95, "star", base("chr1", 95), "*"),
        ("chr1", 100, "noalt", base("chr1", 100), "."),
        ("chr1", 110, "iupac", base("chr1", 110), "R"),
        ("chr1", 120, "long", base("chr1", 120), base("chr1", 120) + "A" * 20),
        ("chr2", 10, "ok2", base("chr2", 10), other(base("chr2", 10))),
    ]


def test_unscorable_records_pass_through_with_reasons(enbert, tmp_path):
    rows = _awkward_rows()
    fa = write_fasta(tmp_path / "ref.fa")
    vcf = write_vcf(tmp_path / "in.vcf", rows, contigs=("chr1",))  # chr2 and chr9 undeclared
    res = vep.variant_scores(
        enbert, fa, vcf, out=tmp_path / "out.vcf.gz", tsv=tmp_path / "out.tsv", window=W, chunk_records=4
    )
    recs, info, filters, header = read_vcf(tmp_path / "out.vcf.gz")
    # every record, in order, unchanged but for the annotations
    assert [(r[0], r[1], r[2], r[3], ",".join(r[4]) if r[4] else ".") for r in recs] == [r[:5] for r in rows]
    assert info["LLR"] == ("A", "Float") and info["LLR_SKIP"] == ("A", "String")
    assert {"LLR_NO_ALT", "LLR_NO_CONTIG", "LLR_PAST_END", "LLR_REF_MISMATCH"} <= filters
    assert header.contigs["chr2"].length == len(GENOME["chr2"])  # declared from the FASTA
    by_id = {r[2]: r for r in recs}
    multi = by_id["multi"][6]
    assert multi["LLR"][1] is None and multi["LLR"][3] is None
    assert multi["LLR"][0] == pytest.approx(
        direct_llr(enbert, "chr1", 50, base("chr1", 50), other(base("chr1", 50))), abs=2e-4
    )
    assert multi["LLR_SKIP"] == (".", "symbolic", ".", "star")
    assert by_id["multi"][5] == ["PASS"]
    expect_filter = {
        "mismatch": "LLR_REF_MISMATCH",
        "nocontig": "LLR_NO_CONTIG",
        "past": "LLR_PAST_END",
        "past_ref": "LLR_PAST_END",
        "noalt": "LLR_NO_ALT",
    }
    for ident, name in expect_filter.items():
        assert by_id[ident][5] == [name], ident
        assert "LLR" not in by_id[ident][6]
    expect_skip = {
        "sym": "symbolic",
        "bnd": "breakend",
        "bnd1": "breakend",
        "star": "star",
        "iupac": "not_dna",
        "long": "too_long",
    }
    for ident, reason in expect_skip.items():
        assert by_id[ident][6]["LLR_SKIP"] == (reason,), ident
        assert by_id[ident][5] == ["PASS"] and "LLR" not in by_id[ident][6]
    assert by_id["ok2"][6]["LLR"][0] == pytest.approx(
        direct_llr(enbert, "chr2", 10, base("chr2", 10), other(base("chr2", 10))), abs=2e-4
    )
    s = res.summary
    assert s["records"] == len(rows) and s["records_scored"] == 2
    assert s["records_not_scored"] == {"no_alt": 1, "no_contig": 1, "past_end": 2, "ref_mismatch": 1}
    assert s["alleles_not_scored"] == {"breakend": 2, "not_dna": 1, "star": 2, "symbolic": 2, "too_long": 1}
    assert s["alleles"] == 15 and s["alleles_scored"] == 3
    table = (tmp_path / "out.tsv").read_text().splitlines()[1:]
    assert len(table) == 15 + 1  # one row per ALT, and one for the record without ALT
    assert [line.split("\t")[2] for line in table][:4] == ["multi"] * 4


def test_undeclared_tags_and_samples_are_kept(enbert, tmp_path):
    b = base("chr1", 40)
    rows = [
        ("chr1", 40, "x", b, other(b), "q10", "DP=7;AF=0.5", "GT:AD", "0/1:3,4", "1/1:0,9"),
        ("chr2", 30, "y", base("chr2", 30), "*", ".", "DP=2", "GT", "0/0", "./."),
    ]
    extra = [
        '##INFO=<ID=AF,Number=A,Type=Float,Description="allele frequency">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
    ]
    fa = write_fasta(tmp_path / "ref.fa")
    vcf = write_vcf(tmp_path / "in.vcf", rows, contigs=("chr1",), extra=extra, samples=("s1", "s2"))
    vep.variant_scores(enbert, fa, vcf, out=tmp_path / "out.vcf", window=W)
    recs, info, filters, _ = read_vcf(tmp_path / "out.vcf")
    assert "DP" in info and "q10" in filters
    x, y = recs[0][7], recs[1][7]
    assert list(x.filter) == ["q10"] and x.info["DP"] == "7" and x.info["AF"] == pytest.approx((0.5,))
    assert x.samples["s1"]["GT"] == (0, 1) and "LLR" in x.info
    assert y.samples["s2"]["GT"] == (None, None) and y.info["LLR_SKIP"] == ("star",)
    lines = [line.split("\t") for line in (tmp_path / "out.vcf").read_text().splitlines() if line[0] != "#"]
    assert [line[8:] for line in lines] == [list(r[7:]) for r in rows]  # FORMAT and sample columns as written
    assert [line[7].split(";")[:2] for line in lines] == [["DP=7", "AF=0.5"], ["DP=2", "LLR_SKIP=star"]]


def test_contig_length_differing_from_the_fasta_is_reported(enbert, tmp_path, caplog):
    fa = write_fasta(tmp_path / "ref.fa")
    vcf = write_vcf(tmp_path / "in.vcf", [snv("chr2", 50)], contigs=(), extra=["##contig=<ID=chr2,length=999>"])
    with caplog.at_level(logging.WARNING, logger="enigma_fast.vep"):
        res = vep.variant_scores(enbert, fa, vcf, window=W)
    assert res.alleles[0].status == "scored"
    assert any("chr2: 999 bases in the VCF header, 120" in r.getMessage() for r in caplog.records)


def test_existing_llr_field(enbert, tmp_path):
    fa = write_fasta(tmp_path / "ref.fa")
    vcf = write_vcf(tmp_path / "in.vcf", [snv("chr1", 50)])
    first = vep.variant_scores(enbert, fa, vcf, out=tmp_path / "once.vcf", window=W)
    again = vep.variant_scores(enbert, fa, tmp_path / "once.vcf", out=tmp_path / "twice.vcf", window=W)
    assert again.alleles[0].llr == pytest.approx(first.alleles[0].llr)
    text = (tmp_path / "twice.vcf").read_text()
    assert text.count("##INFO=<ID=LLR,") == 1 and text.count("LLR=") == 1
    clash = write_vcf(
        tmp_path / "clash.vcf",
        [snv("chr1", 50)],
        extra=['##INFO=<ID=LLR,Number=1,Type=Integer,Description="something else">'],
    )
    with pytest.raises(ValueError, match="INFO/LLR"):
        vep.variant_scores(enbert, fa, clash, out=tmp_path / "x.vcf", window=W)
    ok = vep.variant_scores(enbert, fa, clash, out=tmp_path / "y.vcf", window=W, info_name="VEP")
    recs, info, filters, _ = read_vcf(tmp_path / "y.vcf")
    assert info["VEP"] == ("A", "Float") and "VEP_REF_MISMATCH" in filters
    assert recs[0][6]["VEP"][0] == pytest.approx(ok.alleles[0].llr, rel=1e-5)


# ------------------------------------------------------------------------------------------------------------
# inputs and outputs
# ------------------------------------------------------------------------------------------------------------
def test_compressed_inputs_and_reference_access(enbert, tmp_path, caplog, monkeypatch):
    rows = [snv("chr1", 33), snv("chr2", 77), ("chr1", 250, ".", GENOME["chr1"][249:252], base("chr1", 250))]
    plain_dir, gz_dir, ro_dir = (tmp_path / d for d in ("plain", "gz", "ro"))
    for d in (plain_dir, gz_dir, ro_dir):
        d.mkdir()
    fa = write_fasta(plain_dir / "ref.fa")
    vcf_gz = write_vcf(gz_dir / "in.vcf.gz", rows)
    reference = vep.variant_scores(enbert, fa, write_vcf(plain_dir / "in.vcf", rows), window=W, write_index=False)
    assert not os.path.exists(fa + ".fai") and reference.summary["reference"].startswith("in memory")
    llrs = [a.llr for a in reference.alleles]

    bgz = str(gz_dir / "ref.fa.gz")
    pysam.tabix_compress(fa, bgz)
    with caplog.at_level(logging.INFO, logger="enigma_fast.vep"):
        res = vep.variant_scores(enbert, bgz, vcf_gz, window=W)
    assert os.path.exists(bgz + ".fai") and os.path.exists(bgz + ".gzi")
    assert any("writing" in r.getMessage() and ".fai" in r.getMessage() for r in caplog.records)
    assert [a.llr for a in res.alleles] == pytest.approx(llrs)

    plain_gz = str(gz_dir / "plain.fa.gz")
    with open(fa, "rb") as src, gzip.open(plain_gz, "wb") as dst:
        dst.write(src.read())
    res = vep.variant_scores(enbert, plain_gz, vcf_gz, window=W)
    assert "gzip" in res.summary["reference"] and not os.path.exists(plain_gz + ".fai")
    assert [a.llr for a in res.alleles] == pytest.approx(llrs)

    ro_fa = write_fasta(ro_dir / "ref.fa")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro_dir) else real_access(p, mode))
    res = vep.variant_scores(enbert, ro_fa, vcf_gz, window=W)
    assert "not writable" in res.summary["reference"] and not os.path.exists(ro_fa + ".fai")
    assert [a.llr for a in res.alleles] == pytest.approx(llrs)


def test_bgzipped_output_can_be_indexed(enbert, tmp_path):
    rows = [snv("chr1", p) for p in (20, 40, 60)] + [snv("chr2", 15)]
    fa, vcf = write_fasta(tmp_path / "ref.fa"), write_vcf(tmp_path / "in.vcf", rows)
    out = tmp_path / "out.vcf.gz"
    vep.variant_scores(enbert, fa, vcf, out=out, window=W)
    raw = out.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[12:14] == b"BC"  # BGZF
    pysam.tabix_index(str(out), preset="vcf", force=True)
    with pysam.VariantFile(str(out)) as vf:
        assert [r.pos for r in vf.fetch("chr1", 30, 70)] == [40, 60]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # the temporary sibling is gone


def test_bad_arguments_raise(enbert, tmp_path):
    fa, vcf = write_fasta(tmp_path / "ref.fa"), write_vcf(tmp_path / "in.vcf", [snv("chr1", 50)])
    with pytest.raises(FileNotFoundError, match="vcf file not found"):
        vep.variant_scores(enbert, fa, tmp_path / "missing.vcf")
    with pytest.raises(ValueError, match="window must be <= 128 bases"):
        vep.variant_scores(enbert, fa, vcf, window=129)
    with pytest.raises(ValueError, match="window must be an int >= 2"):
        vep.variant_scores(enbert, fa, vcf, window=1)
    bad = tmp_path / "bad.vcf"
    bad.write_text("##fileformat=VCFv4.2\n" + HEADER + "\nchr1\tnotanumber\t.\tA\tC\t.\t.\t.\n")
    with pytest.raises(ValueError, match="bad.vcf"):
        vep.variant_scores(enbert, fa, bad, out=tmp_path / "o.vcf")
    assert not (tmp_path / "o.vcf").exists()


def test_package_imports_without_pysam(monkeypatch):
    monkeypatch.setitem(sys.modules, "pysam", None)
    module = importlib.reload(reference)
    with pytest.raises(ImportError, match=r"pip install enigma_fast\[reading\]"):
        module.require_pysam()
    monkeypatch.undo()
    importlib.reload(reference)


# ------------------------------------------------------------------------------------------------------------
# the CLI
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, enbert):
    d = tmp_path_factory.mktemp("cli")
    enbert.save_pretrained(d / "model")
    fa = write_fasta(d / "ref.fa")
    vcf = write_vcf(d / "in.vcf", [snv("chr1", 50), ("chr1", 60, ".", "A", "<DEL>"), snv("chr1", 70)])
    return d, str(d / "model"), fa, vcf


def test_cli_writes_vcf_tsv_and_json_summary(cli_files, capsys):
    d, model, fa, vcf = cli_files
    rc = vep.main(
        [
            "--model",
            model,
            "--fasta",
            fa,
            "--vcf",
            vcf,
            "--out",
            str(d / "o.vcf.gz"),
            "--tsv",
            str(d / "o.tsv"),
            "--window",
            "32",
            "--summary",
            "json",
            "--no-progress",
            "--batch-size",
            "4",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["records"] == 3 and summary["window"] == 32
    recs, *_ = read_vcf(d / "o.vcf.gz")
    assert len(recs) == 3 and len((d / "o.tsv").read_text().splitlines()) == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vcf", "{d}/nope.vcf"], "--vcf file not found"),
        (["--fasta", "{d}/nope.fa"], "--fasta file not found"),
        (["--model", "{d}/nomodel"], "--model folder not found"),
        (["--window", "1"], "--window must be >= 2"),
        (["--window", "4096"], "window must be <= 128 bases"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--out", "{d}/no/such/dir/o.vcf"], "does not exist"),
        (["--out", "{vcf}"], "is the --vcf file"),
        (["--info-name", "1bad"], "--info-name must be a VCF key"),
        (["--dtype", "float64"], "invalid choice"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_cli_errors_are_one_line_exit_2(cli_files, capsys, args, message):
    d, model, fa, vcf = cli_files
    base_args = {"--model": model, "--fasta": fa, "--vcf": vcf, "--out": str(d / "x.vcf")}
    argv = []
    given = dict(zip(args[::2], args[1::2], strict=False))
    for flag, value in {**base_args, **given}.items():
        argv += [flag, value.format(d=d, vcf=vcf)]
    if len(args) % 2:
        argv += args[-1:]
    try:
        rc = vep.main(argv)
    except SystemExit as exit_:  # argparse errors
        rc = exit_.code
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and message in err and err.startswith("python -m enigma_fast.vep: error:")


def test_cli_needs_an_output_and_pysam(cli_files, capsys, monkeypatch):
    d, model, fa, vcf = cli_files
    assert vep.main(["--model", model, "--fasta", fa, "--vcf", vcf]) == 2
    assert "give --out" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pysam", None)
    assert vep.main(["--model", model, "--fasta", fa, "--vcf", vcf, "--out", str(d / "x.vcf")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install enigma_fast[reading]" in err


def test_cli_module_entry_point(cli_files):
    d, model, fa, vcf = cli_files
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "enigma_fast.vep",
            "--model",
            model,
            "--fasta",
            fa,
            "--vcf",
            str(d / "missing.vcf"),
            "--out",
            str(d / "z.vcf"),
        ],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"{PROG} --vcf file not found: {d / 'missing.vcf'}"]


def test_readme_quick_start_files_on_the_shipped_genome(tmp_path):
    """The README's quick-start: vep on docs/examples/shipped_genome.vcf against the shipped genome, and score and
    embed on docs/examples/shipped_reads.fa (a random tiny model: the files and their REF alleles are under test)."""
    from pathlib import Path

    from safetensors import safe_open

    from enigma_fast import embed as embed_cli
    from enigma_fast import score as score_cli
    from enigma_fast.data.fasta import shipped_genome_path

    examples = Path(__file__).resolve().parents[1] / "docs" / "examples"
    model_dir = tmp_path / "model"
    _enbert(CharTokenizer()).save_pretrained(model_dir)
    out = tmp_path / "scored.vcf.gz"
    rc = vep.main(
        [
            "--model",
            str(model_dir),
            "--fasta",
            str(shipped_genome_path()),
            "--vcf",
            str(examples / "shipped_genome.vcf"),
            "--out",
            str(out),
            "--tsv",
            str(tmp_path / "scored.tsv"),
        ]
    )
    assert rc == 0
    recs, _, _, _ = read_vcf(out)
    by_id = {r[2]: r for r in recs}
    assert list(by_id) == ["snv1", "multi", "del1", "ins1", "bad_ref", "sym", "nocontig"]
    for ident in ("snv1", "multi", "del1", "ins1"):  # their REF alleles match the shipped genome
        assert by_id[ident][5] == ["PASS"] and all(v is not None for v in by_id[ident][6]["LLR"]), ident
    assert by_id["bad_ref"][5] == ["LLR_REF_MISMATCH"] and by_id["nocontig"][5] == ["LLR_NO_CONTIG"]
    assert by_id["sym"][6]["LLR_SKIP"] == ("symbolic",)

    reads = str(examples / "shipped_reads.fa")
    assert score_cli.main(["--model", str(model_dir), reads, "--out", str(tmp_path / "s.tsv")]) == 0
    rows = (tmp_path / "s.tsv").read_text().splitlines()
    assert len(rows) == 6 and rows[1].split("\t")[1] == "1000"
    assert embed_cli.main(["--model", str(model_dir), reads, "--out", str(tmp_path / "e.safetensors")]) == 0
    with safe_open(str(tmp_path / "e.safetensors"), "pt") as f:
        assert f.get_tensor("embeddings").shape[0] == 5
