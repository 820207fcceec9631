"""The codon evaluation: codon positions on both strands, per-position bits of known tracks, the Markov peers on a
planted period-3 pattern (plus- and minus-strand genes), the model's two tracks, pyrodigal genes, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from enigma_fast.data import shipped_genome
from enigma_fast.models import EnBERT, EnBERTConfig
from enigma_fast.scoring import per_base_track, token_log_probs
from enigma_fast.tokenizers import CharTokenizer, KMerTokenizer, reverse_complement
from enigma_fast.train import codon
from enigma_fast.train.codon_eval import call_genes, codon_table, format_table, main, model_tracks

LN2 = math.log(2)


def test_phases_of_a_plus_and_a_minus_gene():
    # plus gene [3, 15): codons 3-5 (trimmed), 6-8, 9-11, 12-14 (trimmed)
    ph = codon.gene_phases(20, [(3, 15, 1)])
    assert ph[0].tolist() == [0] * 6 + [1, 2, 3, 1, 2, 3] + [0] * 8
    assert not ph[1].any()
    # minus gene [2, 14): in the gene's own direction its first codon is bases 13, 12, 11 (trimmed); then 10, 9, 8
    # are positions 1, 2, 3 -- in reverse-complement coordinates j = 19 - i: 9, 10, 11
    ph = codon.gene_phases(20, [(2, 14, -1)])
    assert not ph[0].any()
    expect = np.zeros(20, dtype=np.int8)
    expect[[9, 10, 11, 12, 13, 14]] = [1, 2, 3, 1, 2, 3]
    assert ph[1].tolist() == expect.tolist()


@pytest.mark.parametrize("n, start, end", [(50, 4, 31), (61, 0, 61), (40, 7, 22)])
def test_a_minus_gene_is_the_plus_gene_of_the_reverse_complement(n, start, end):
    minus = codon.gene_phases(n, [(start, end, -1)])
    plus_of_rc = codon.gene_phases(n, [(n - end, n - start, 1)])
    assert np.array_equal(minus[1], plus_of_rc[0])
    assert np.array_equal(codon.antisense(minus)[0], plus_of_rc[0][::-1])


def test_overlapping_genes_are_left_out_and_bad_genes_raise():
    ph = codon.gene_phases(40, [(0, 24, 1), (18, 39, -1)], trim_codons=0)
    covered_twice = np.zeros(40, dtype=bool)
    covered_twice[18:24] = True
    assert not ph[0][covered_twice].any() and ph[0][:18].all()
    assert not ph[1][::-1][covered_twice].any() and ph[1][::-1][24:39].all()
    with pytest.raises(ValueError, match="0 <= start < end <= 40"):
        codon.gene_phases(40, [(30, 42, 1)])
    with pytest.raises(ValueError, match="strand"):
        codon.gene_phases(40, [(3, 9, 0)])


def test_position_bits_of_known_tracks():
    ph = codon.gene_phases(33, [(0, 33, 1)], trim_codons=0)
    per_phase = {1: -math.log(4), 2: -math.log(2), 3: math.log(0.9)}
    tracks = np.full((2, 33), np.nan)
    tracks[0] = [per_phase[p] for p in ph[0]]
    tracks[0, 4] = np.nan  # an unscored base (phase 2) is not counted
    r = codon.position_bits(tracks, ph)
    assert r["bases"] == [11, 10, 11]
    assert r["bits"] == pytest.approx([2.0, 1.0, -math.log2(0.9)])
    assert r["contrast"] == pytest.approx(-math.log2(0.9) - 1.5)
    assert r["coding_bits"] == pytest.approx((22 + 10 - 11 * math.log2(0.9)) / 32)
    with pytest.raises(ValueError, match="tracks must be"):
        codon.position_bits(tracks[:, :5], ph)


def _planted(rng: np.random.Generator, codons: int) -> str:
    """A coding sequence whose position 1 is uniform over ACGT (2 bits), position 2 is A or T (1 bit) and
    position 3 always G (0 bits)."""
    return "".join(rng.choice(list("ACGT")) + rng.choice(list("AT")) + "G" for _ in range(codons))


def _genome(rng: np.random.Generator, genes: int, strand: int) -> tuple[str, list[tuple[int, int, int]]]:
    parts, where, pos = [], [], 0
    for _ in range(genes):
        spacer = "".join(rng.choice(list("ACGT"), 7))
        gene = _planted(rng, 60)
        gene = gene if strand == 1 else reverse_complement(gene)
        parts += [spacer, gene]
        where.append((pos + len(spacer), pos + len(spacer) + len(gene), strand))
        pos += len(spacer) + len(gene)
    return "".join(parts), where


@pytest.mark.parametrize("strand", [1, -1])
def test_frame_markov_and_a_model_of_known_entropies_on_a_planted_pattern(strand):
    rng = np.random.default_rng(0)
    train, train_genes = _genome(rng, 150, strand)
    held, held_genes = _genome(rng, 40, strand)
    # a "model" that knows the frame: log p = log 1/4, 1/2, 1 at gene positions 1, 2, 3 of each gene's coding strand
    ph = codon.gene_phases(len(held), held_genes)
    model = np.where(ph == 1, -math.log(4), np.where(ph == 2, -math.log(2), np.where(ph == 3, 0.0, -math.log(4))))
    res = codon_table([held], [held_genes], [model], [train], [train_genes], markov_orders=(0, 1, 2), frame_orders=(0,))
    m = res["model"]["sense"]
    assert m["bits"] == pytest.approx([2.0, 1.0, 0.0])
    assert m["contrast"] == pytest.approx(-1.5)
    assert m["bases"] == [40 * 58] * 3  # 58 codons a gene counted (its first and last left out)
    f = res["frame_markov"]["sense"]
    assert res["frame_markov"]["order"] == 0
    assert f["bits"][0] == pytest.approx(2.0, abs=0.02)
    assert f["bits"][1] == pytest.approx(1.0, abs=0.02)
    assert f["bits"][2] == pytest.approx(0.0, abs=0.01)
    assert res["genes"] == 40 and res["genes_plus"] == (40 if strand == 1 else 0)
    # the antisense reading reads each gene from the other strand's track, where this model says 2 bits everywhere
    assert res["model"]["antisense"]["bits"] == pytest.approx([2.0, 2.0, 2.0])
    assert "frame-aware Markov, order 0" in format_table(res)


def test_markov_tracks_match_the_single_order_functions():
    rng = np.random.default_rng(1)
    train = [codon.codes("".join(rng.choice(list("ACGT"), 3000))), codon.codes("ACGTNNACGTAC")]
    target = codon.codes("".join(rng.choice(list("ACGT"), 500)) + "N" + "ACGTTGCA")
    many = codon.markov_tracks(train, [target], (0, 2, 3))
    for k in (0, 2, 3):
        one = codon.markov_track(codon.markov_fit(train, k), target)
        assert np.array_equal(np.isnan(one), np.isnan(many[k][0]))
        np.testing.assert_allclose(many[k][0], one, rtol=1e-12)
        assert np.isnan(one[:k]).all() and np.isnan(one[501 : 501 + k]).all()  # context never crosses the N
    ph = codon.gene_phases(len(target), [(3, 498, 1)])[0]
    pairs = [(train[0], codon.gene_phases(3000, [(0, 2997, 1)])[0])]
    fm = codon.frame_markov_tracks(pairs, [(target, ph)], (2,))
    np.testing.assert_allclose(fm[2][0], codon.frame_markov_track(codon.frame_markov_fit(pairs, 2), target, ph))


@pytest.mark.parametrize("kind", ["char", "kmer"])
def test_model_tracks_are_the_two_strands_per_base(kind):
    tok = CharTokenizer() if kind == "char" else KMerTokenizer(k_mers=3)
    if kind == "kmer":
        import itertools

        tok.build_vocab(["".join(p) for p in itertools.product("ACGT", repeat=3)])
    cfg = EnBERTConfig(vocab_size=tok.vocab_size, d_model=32, n_head=2, n_layer=1, max_rel_pos=16, block_size=64)
    model = EnBERT(cfg).eval()
    model.tokenizer = tok
    text = shipped_genome()[5000:5301]
    (tr,) = model_tracks(model, [text], window=32, context=8)
    assert tr.shape == (2, 301)
    rc = reverse_complement(text)
    ids = tok.encode_tensor(rc).numpy()
    (lp,) = token_log_probs(model, [ids], window=32, context=8)
    even = per_base_track(lp, ids, tok)
    fwd_ids = tok.encode_tensor(text).numpy()
    (lpf,) = token_log_probs(model, [fwd_ids], window=32, context=8)
    (again,) = model_tracks(model, [text], window=32, context=8, forward=[lpf])
    np.testing.assert_allclose(again, tr, rtol=1e-6, equal_nan=True)
    if kind == "char":
        np.testing.assert_allclose(tr[1], even, rtol=1e-6, equal_nan=True)
        return
    # a 3-mer model: each base its own chain-rule value (not a third of the token's), the same per-token totals
    (rich,) = token_log_probs(model, [ids], window=32, context=8, bases=True)
    np.testing.assert_allclose(tr[1], per_base_track(rich, ids, tok), rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(np.isnan(tr[1]), np.isnan(even))
    whole = ~np.isnan(even[:300].reshape(100, 3)).any(1)
    np.testing.assert_allclose(
        tr[1][:300].reshape(100, 3)[whole].sum(1), even[:300].reshape(100, 3)[whole].sum(1), rtol=1e-5
    )
    assert not np.allclose(tr[1][:300].reshape(100, 3)[whole], even[:300].reshape(100, 3)[whole])


def test_pyrodigal_genes_are_in_frame():
    pytest.importorskip("pyrodigal")
    genome = shipped_genome()
    train, held = genome[:120_000], genome[120_000:150_000]
    (genes,) = call_genes([train], [held])
    assert len(genes) > 10
    code = {"TAA", "TAG", "TGA"}
    for start, end, strand in genes:
        assert 0 <= start < end <= len(held) and (end - start) % 3 == 0
        cds = held[start:end] if strand == 1 else reverse_complement(held[start:end])
        inner = [cds[i : i + 3] for i in range(3, len(cds) - 3, 3)]
        assert not code & set(inner) and cds[-3:] in code


def test_cli_on_a_small_genome(tmp_path, capsys):
    pytest.importorskip("pyrodigal")
    tok = CharTokenizer()
    torch.manual_seed(0)
    model = EnBERT(EnBERTConfig(vocab_size=tok.vocab_size, d_model=32, n_head=2, n_layer=1, block_size=128))
    model.save_pretrained(tmp_path / "m", tokenizer=tok)
    fa = tmp_path / "g.fa"
    fa.write_text(">g\n" + shipped_genome()[:60_000] + "\n")
    assert main(["--model", str(tmp_path / "m"), str(fa), "--window", "64", "--context", "16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["genes"] > 0 and res["held_out_bases"] == 6000
    for row in (res["model"]["sense"], res["markov"]["sense"], res["frame_markov"]["sense"]):
        assert sum(row["bases"]) == sum(res["markov"]["sense"]["bases"]) > 1000
    # an untrained model spreads its probability over the whole vocabulary
    assert all(abs(b - math.log2(tok.vocab_size)) < 0.2 for b in res["model"]["sense"]["bits"])
    assert main(["--model", str(tmp_path / "m"), str(tmp_path / "missing.fa")]) == 2
    assert "sequence file not found" in capsys.readouterr().err
