"""Reading sequences: ``enigma_fast.scoring`` (scores, per-base tracks, embeddings) and the ``score`` / ``embed``
CLIs, against the trainer's held-out evaluation and direct model calls. Tiny random models keep the file short."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from enigma_fast import scoring
from enigma_fast.data.tokens import prepare_tokens
from enigma_fast.data.windows import eval_windows, split_segments
from enigma_fast.embed import main as embed_main
from enigma_fast.models import EnBERT, EnBERTConfig, Enigma, EnigmaConfig
from enigma_fast.score import heldout_stretches, run_windows
from enigma_fast.score import main as score_main
from enigma_fast.tokenizers import CharTokenizer, KMerTokenizer, reverse_complement
from enigma_fast.train.__main__ import main as train_main
from enigma_fast.train.evaluate import evaluate
from tests.conftest import devices

BLOCK = 64


def _dna(n: int, seed: int = 0, alphabet: str = "ACGT") -> str:
    return "".join(np.random.default_rng(seed).choice(list(alphabet), n))


def _tokenizer(kind: str):
    if kind == "char":
        return CharTokenizer(case="upper")
    tok = KMerTokenizer(k_mers=3, case="upper")
    tok.build_vocab(["".join(p) for p in itertools.product("ACGT", repeat=3)])
    return tok


def _model(kind: str, tok, seed: int = 0, **over):
    torch.manual_seed(seed)
    common = dict(vocab_size=tok.vocab_size, d_model=32, n_head=2, max_rel_pos=16, block_size=BLOCK)
    if kind == "enbert":
        model = EnBERT(EnBERTConfig.from_preset("tiny", n_layer=2, **{**common, **over}))
    else:
        model = Enigma(
            EnigmaConfig.from_preset(
                "tiny", n_encoder_layer=2, n_decoder_layer=2, bos_id=tok.bos_id, **{**common, **over}
            )
        )
    with torch.no_grad():  # weights 10x the init scale: outputs that depend on the context, not near-uniform ones
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    model.tokenizer = tok
    return model.eval()


@pytest.fixture(scope="module", params=["enbert", "enigma"])
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def models() -> dict:
    return {(m, t): _model(m, _tokenizer(t)) for m in ("enbert", "enigma") for t in ("char", "kmer")}


def _oracle(model, kind: str, ids: np.ndarray, start: int, p: int, src_len: int) -> float:
    """log p(ids[p]) from one direct model call on the window that starts at ``start``."""
    with torch.no_grad():
        if kind == "enbert":
            x = torch.from_numpy(ids[start:p][None].astype(np.int64))
            logits, _ = model(x)
        else:
            src = torch.from_numpy(ids[start : start + src_len][None].astype(np.int64))
            tgt = ids[start + src_len : p]
            tgt_in = torch.from_numpy(np.r_[model.config.bos_id, tgt][None].astype(np.int64))
            logits, _ = model(src, tgt_in)
    return float(torch.log_softmax(logits[0, -1].double(), -1)[int(ids[p])])


# ---- the trainer's held-out evaluation ---------------------------------------------------------------------------
@pytest.mark.parametrize("tok_kind", ["char", "kmer"])
def test_scores_equal_the_trainers_heldout_evaluation(models, kind, tok_kind):
    model = models[(kind, tok_kind)]
    tok = model.tokenizer
    # two records, one shorter than a window: the trainer's split, windows and bases-per-token accounting
    seqs = [_dna(900, 1), _dna(150, 2)]
    ids = [tok.encode_tensor(s).numpy() for s in seqs]
    flat = np.concatenate(ids)
    segs = np.array([[0, 0, len(ids[0])], [1, len(ids[0]), len(ids[1])]])
    _, val = split_segments(segs, 0.5, "position")
    window = 40
    run_cfg = {"window": window, "eval_stride": 0, "src_len": 0}
    w, c = run_windows(run_cfg, kind)
    span = window + 1 if kind == "enbert" else window
    stride = 3 * window // 4 if kind == "enbert" else window - window // 2
    bpt = torch.from_numpy(scoring.bases_per_token(tok).astype(np.float64))
    want = evaluate(
        model, flat, eval_windows(val, span, stride), bpt, kind, window // 2, tok.bos_id, 8, torch.device("cpu")
    )
    assert scoring.plan_windows(kind, val, w, c) == eval_windows(val, span, stride)  # the trainer's windows
    lp = scoring.score_segments(model, flat, val, window=w, context=c, batch_size=5)
    keep = ~np.isnan(lp)
    assert keep.sum() == want["tokens"]
    bases = float(bpt.numpy()[flat[keep]].sum())
    assert bases == want["bases"]
    assert -lp[keep].sum() / bases / math.log(2) == pytest.approx(want["bpb"], abs=1e-5, rel=1e-6)
    # the same through score() on the held-out text: every held-out base counted, per sequence
    texts = [tok.decode(torch.from_numpy(flat[o : o + n])) for o, n in val.tolist()]
    res = scoring.score(model, texts, window=w, context=c)
    assert sum(r.scored_bases for r in res) == want["bases"]
    ll = sum(r.log_likelihood for r in res)
    assert -ll / want["bases"] / math.log(2) == pytest.approx(want["bpb"], abs=1e-5, rel=1e-6)
    # and the per-token values are those of the model read directly on each token's window
    wins = scoring.plan_windows(kind, val, w, c)
    for win in wins[:: max(1, len(wins) // 4)]:
        sl = min(c, win.length - 1) if kind == "enigma" else 0
        p = win.start + win.length - 1
        assert lp[p] == pytest.approx(_oracle(model, kind, flat, win.start, p, sl), abs=1e-4)


def test_heldout_tokens_are_the_trainers(tmp_path):
    seq = _dna(3000, 3)
    fa = tmp_path / "g.fa"
    fa.write_text(f">rec1 x\n{seq[:1000]}NNNN{seq[1000:2000]}\n>rec2\n{seq[2000:]}\n")
    tok = _tokenizer("kmer")
    store = prepare_tokens([fa], tmp_path / "store", tok)
    for split in ("position", "record"):
        _, val = split_segments(store.segments, 0.2, split)
        got = heldout_stretches(tok, [fa], 0.2, split)
        assert [len(s.ids) for s in got] == val[:, 1].tolist()
        for s, (off, n) in zip(got, val.tolist(), strict=True):
            assert np.array_equal(s.ids, store.tokens[off : off + n])
            record = {"rec1": f"{seq[:1000]}NNNN{seq[1000:2000]}", "rec2": seq[2000:]}[s.name]
            assert tok.decode(torch.from_numpy(s.ids)) == record[s.start : s.end]
    # scoring the store's memory map (uint8 ids) in place gives the values of the stretches read out
    model = _model("enbert", tok)
    _, val = split_segments(store.segments, 0.2, "position")
    lp = scoring.score_segments(model, store.tokens, val, window=24, context=6)
    got = scoring.token_log_probs(model, [s.ids for s in heldout_stretches(tok, [fa], 0.2)], window=24, context=6)
    assert store.tokens.dtype == np.uint8 and np.isnan(lp[: val[0, 0]]).all()
    for (off, n), want in zip(val.tolist(), got, strict=True):
        np.testing.assert_allclose(lp[off : off + n], want, atol=1e-6, equal_nan=True)


# ---- windows, strands, batching ----------------------------------------------------------------------------------
def test_sliding_windows_equal_one_window_where_both_fit(models, kind):
    model = models[(kind, "char")]
    seq = _dna(200, 4)
    ids = model.tokenizer.encode_tensor(seq).numpy()
    one = scoring.token_log_probs(model, [ids[:BLOCK]], window=BLOCK, context=8)[0]  # Enigma: the same source
    slide = scoring.token_log_probs(model, [ids], window=24, context=8)[0]
    # the first window of the sliding run reads exactly the tokens the single window reads before them
    first = 24 + 1 if kind == "enbert" else 24
    np.testing.assert_allclose(slide[:first], one[:first], atol=1e-5, equal_nan=True)
    assert np.isnan(slide).sum() == (1 if kind == "enbert" else 8)
    # later tokens see a truncated context (at least 8 tokens): they differ from the one-window values
    assert not np.allclose(slide[first:BLOCK], one[first:BLOCK], atol=1e-3)
    # ... and equal the model read directly on their own window
    for win in scoring.plan_windows(kind, np.array([[0, len(ids)]]), 24, 8)[1:]:
        sl = 8 if kind == "enigma" else 0
        for p in (win.start + win.score_from, win.start + win.length - 1):
            assert slide[p] == pytest.approx(_oracle(model, kind, ids, win.start, p, sl), abs=1e-4)


@pytest.mark.parametrize("tok_kind", ["char", "kmer"])
def test_both_strands_is_strand_symmetric(models, kind, tok_kind):
    model = models[(kind, tok_kind)]
    seq = _dna(150, 5, "ACGT" * 6 + "N") + "acgtNNag"
    rc = reverse_complement(seq)
    a = scoring.score(model, [seq], both_strands=True, per_base=True, window=32, context=12)[0]
    b = scoring.score(model, [rc], both_strands=True, per_base=True, window=32, context=12)[0]
    assert a.log_likelihood == pytest.approx(b.log_likelihood, rel=1e-9)
    assert a.scored_bases == b.scored_bases and a.n_count == b.n_count == seq.upper().count("N")
    np.testing.assert_allclose(a.per_base, b.per_base[::-1], rtol=1e-9, equal_nan=True)
    # the single strands differ (the check above is not a tautology), and the track is their per-base mean
    f, r = (scoring.score(model, [s], per_base=True, window=32, context=12)[0] for s in (seq, rc))
    assert abs(f.log_likelihood - r.log_likelihood) > 1e-3
    both = ~np.isnan(f.per_base) & ~np.isnan(r.per_base[::-1])
    np.testing.assert_allclose(a.per_base[both], (f.per_base[both] + r.per_base[::-1][both]) / 2, rtol=1e-9)
    assert np.nansum(a.per_base) == pytest.approx(a.log_likelihood, rel=1e-9)


def test_batching_and_padding_change_nothing(models, kind):
    model = models[(kind, "char")]
    seqs = [_dna(n, 10 + n) for n in (3, 17, 40, 63, 64, 65, 100, 151)]
    together = scoring.score(model, seqs, per_base=True, window=BLOCK, context=20, batch_size=32)
    for s, t in zip(seqs, together, strict=True):
        alone = scoring.score(model, [s], per_base=True, window=BLOCK, context=20, batch_size=1)[0]
        np.testing.assert_allclose(t.per_base, alone.per_base, atol=1e-5, equal_nan=True)
        assert t.log_likelihood == pytest.approx(alone.log_likelihood, abs=1e-4)
    # a batch mixing lengths holds padded rows: the invariance above is about those rows
    ids = [model.tokenizer.encode_tensor(s).numpy() for s in seqs]
    lengths = {w.length for w in scoring.plan_windows(kind, np.array([[0, len(i)] for i in ids]), BLOCK, 20)}
    assert len(lengths) > 3


def test_kmer_per_base_track_sums_to_the_log_likelihood(models, kind):
    model = models[(kind, "kmer")]
    seq = _dna(101, 6) + "NAC" + _dna(40, 7)  # a tail shorter than k, and an N that falls back to letters
    s = scoring.score(model, [seq], per_base=True, window=30, context=10)[0]
    assert s.length == len(seq) and s.per_base.shape == (len(seq),) and s.per_base.dtype == np.float64
    assert np.nansum(s.per_base) == pytest.approx(s.log_likelihood, rel=1e-12)
    assert s.scored_bases == np.count_nonzero(~np.isnan(s.per_base))
    assert s.n_count == 1 and np.isnan(s.per_base[101])
    assert s.bits_per_base == pytest.approx(-s.log_likelihood / s.scored_bases / math.log(2))
    # a whole 3-mer shares its token's value evenly: equal thirds
    ids = model.tokenizer.encode_tensor(seq).numpy()
    lp = scoring.token_log_probs(model, [ids], window=30, context=10)[0]
    t = int(np.flatnonzero(~np.isnan(lp))[3])
    np.testing.assert_allclose(s.per_base[3 * t : 3 * t + 3], lp[t] / 3, rtol=1e-12)


def test_kmer_chain_rule_per_base_values(models, kind):
    """``bases=True``: base j of a 3-mer gets log P(b_j | context, b_1..b_{j-1}) from the whole distribution, checked
    against a float64 oracle of one direct model call; the columns telescope to the token's value."""
    model = models[(kind, "kmer")]
    tok = model.tokenizer
    seq = _dna(150, 8) + "NAC" + _dna(30, 9)  # a k-mer next to fallback letters and a tail piece
    ids = tok.encode_tensor(seq).numpy()
    window, context = 30, 10
    plain = scoring.token_log_probs(model, [ids], window=window, context=context)[0]
    rich = scoring.token_log_probs(model, [ids], window=window, context=context, bases=True)[0]
    assert rich.shape == (len(ids), 4)
    np.testing.assert_allclose(rich[:, 0], plain, rtol=1e-6, atol=1e-6)
    scored = ~np.isnan(rich[:, 0])
    kmer = np.array(
        [tok.decode(torch.tensor([i])) in {"".join(p) for p in itertools.product("ACGT", repeat=3)} for i in ids]
    )
    assert np.isnan(rich[~kmer, 1:]).all() and not np.isnan(rich[kmer & scored, 1:]).any()
    np.testing.assert_allclose(rich[kmer & scored, 1:].sum(1), rich[kmer & scored, 0], rtol=1e-5, atol=1e-5)
    # the oracle: the window that scores token t, from the same plan the engine uses
    wins = scoring.plan_windows(kind, np.array([[0, len(ids)]]), window, context)
    t = int(np.flatnonzero(kmer & scored)[5])

    def first(w) -> int:  # the window position of its first scored target (Enigma: the source is never scored)
        return w.score_from if kind == "enbert" else max(w.score_from, min(context, w.length - 1))

    w = next(w for w in wins if w.start + first(w) <= t < w.start + w.length)
    with torch.no_grad():
        if kind == "enbert":
            logits, _ = model(torch.from_numpy(ids[w.start : t][None].astype(np.int64)))
        else:
            src_len = min(context, w.length - 1)
            src = torch.from_numpy(ids[w.start : w.start + src_len][None].astype(np.int64))
            tgt = ids[w.start + src_len : t]
            logits, _ = model(src, torch.from_numpy(np.r_[model.config.bos_id, tgt][None].astype(np.int64)))
    p = torch.softmax(logits[0, -1].double(), -1).numpy()
    text = tok.decode(torch.tensor([int(ids[t])]))
    mass = {}
    for i in range(tok.vocab_size):
        piece = tok.decode(torch.tensor([i]))
        if len(piece) == 3 and set(piece) <= set("ACGT"):
            for j in range(4):
                mass[piece[:j]] = mass.get(piece[:j], 0.0) + p[i]
    want = [math.log(mass[text[: j + 1]] / (mass[text[:j]] if j else 1.0)) for j in range(3)]
    np.testing.assert_allclose(rich[t, 1:], want, rtol=1e-4, atol=1e-5)
    # per_base_track: chain values on the k-mers' bases, the even split elsewhere; the same total
    track = scoring.per_base_track(rich, ids, tok)
    even = scoring.per_base_track(plain, ids, tok)
    assert track.shape == even.shape == (len(seq),)
    np.testing.assert_allclose(track[3 * t : 3 * t + 3], rich[t, 1:], rtol=1e-12)
    assert np.nansum(track) == pytest.approx(np.nansum(even), rel=1e-5)
    np.testing.assert_array_equal(np.isnan(track), np.isnan(even))
    with pytest.raises(ValueError, match="bases=True needs a non-overlapping k-mer tokenizer"):
        scoring.token_log_probs(models[(kind, "char")], [ids % 4], bases=True)


def test_empty_and_unscorable_sequences(models):
    model = models[("enbert", "char")]
    empty, one, ns = scoring.score(model, ["", "A", "NNNN"], per_base=True)
    assert (empty.length, empty.scored_bases, empty.per_base.shape) == (0, 0, (0,))
    assert one.scored_bases == 0 and math.isnan(one.bits_per_base) and np.isnan(one.per_base).all()
    assert ns.n_count == 4 and ns.scored_bases == 0 and ns.log_likelihood == 0.0


@pytest.mark.parametrize("device", devices())
def test_device_and_dtype(models, kind, device):
    model = models[(kind, "char")]
    seqs = [_dna(90, 8), _dna(30, 9)]
    ref = scoring.score(model, seqs, window=32, context=8)
    dev = _model(kind, model.tokenizer).to(device)
    got = scoring.score(dev, seqs, window=32, context=8, device=device)
    assert [g.log_likelihood for g in got] == pytest.approx([r.log_likelihood for r in ref], abs=1e-3)
    low = scoring.score(dev, seqs, window=32, context=8, dtype="bfloat16")
    assert [g.bits_per_base for g in low] == pytest.approx([r.bits_per_base for r in ref], abs=0.05)


# ---- embeddings -------------------------------------------------------------------------------------------------
def test_embeddings_layers_padding_and_chunks(models, kind):
    model = models[(kind, "char")]
    seqs = [_dna(n, 20 + n) for n in (5, 30, 64, 150)]
    e = scoring.embed(model, seqs, per_token=True, batch_size=4)
    assert e.mean.shape == (4, 32) and e.mean.dtype == np.float32 and e.layer == 2
    assert [t.shape for t in e.per_token] == [(n, 32) for n in (5, 30, 64, 150)]
    np.testing.assert_allclose(e.mean, np.stack([t.mean(0) for t in e.per_token]), rtol=1e-6)
    for s, t in zip(seqs, e.per_token, strict=True):  # padding changes nothing
        np.testing.assert_allclose(scoring.embed(model, [s], per_token=True).per_token[0], t, atol=1e-5)
    # a sequence longer than block_size: non-overlapping chunks, each read on its own
    chunk2 = scoring.embed(model, [seqs[3][BLOCK : 2 * BLOCK]], per_token=True).per_token[0]
    np.testing.assert_allclose(e.per_token[3][BLOCK : 2 * BLOCK], chunk2, atol=1e-5)
    # layer -1 is the final norm of layer -2's residual stream; layer 0 the stream after the first block
    last = scoring.embed(model, seqs[:1], per_token=True, layer=-2).per_token[0]
    norm = model.norm_f if kind == "enbert" else model.enc_norm
    with torch.no_grad():
        np.testing.assert_allclose(norm(torch.from_numpy(last)).numpy(), e.per_token[0], atol=1e-5)
        ids = model.tokenizer.encode_tensor(seqs[0])[None]
        blk = (model.blocks if kind == "enbert" else model.encoder)[0]
        h = model.tok_emb(ids) + (model.pos_emb(torch.arange(5))[None] if kind == "enigma" else 0)
        h = h + blk.attn(blk.norm1(h))
        h = h + blk.ffn(blk.norm2(h))
    np.testing.assert_allclose(
        scoring.embed(model, seqs[:1], per_token=True, layer=0).per_token[0], h[0].numpy(), atol=1e-5
    )
    assert not np.allclose(last, e.per_token[0], atol=1e-3)


# ---- bad input --------------------------------------------------------------------------------------------------
def test_bad_input_raises_one_line_errors(models):
    enb, eni = models[("enbert", "char")], models[("enigma", "char")]
    cases = [
        (lambda: scoring.score(enb, "ACGT"), TypeError, "seqs must be a list of DNA strings, got one str"),
        (lambda: scoring.score(enb, ["ACGT", 5]), TypeError, r"seqs\[1\] must be a DNA string, got int"),
        (lambda: scoring.score(enb, ["ACGT", "ACXT"]), ValueError, r"seqs\[1\]: .*'X'.*position 2"),
        (lambda: scoring.score(enb, ["ACGT"], window=1), ValueError, r"window must be in \[2, 64\], got 1"),
        (lambda: scoring.score(enb, ["ACGT"], window=65), ValueError, r"window must be in \[2, 64\], got 65"),
        (lambda: scoring.score(enb, ["ACGT"], window=2.5), TypeError, "window must be an int, got float"),
        (
            lambda: scoring.score(eni, ["ACGT"], window=32, context=32),
            ValueError,
            r"context must be in \[1, 31\], got 32",
        ),
        (lambda: scoring.score(enb, ["ACGT"], batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
        (lambda: scoring.score(enb, ["ACGT"], dtype="int8"), ValueError, "dtype must be one of float32"),
        (lambda: scoring.score(enb, ["ACGT"], device="gpu"), ValueError, "device must be a torch.device"),
        (lambda: scoring.score(torch.nn.Linear(2, 2), ["ACGT"]), TypeError, "model must be an EnBERT or Enigma"),
        (
            lambda: scoring.score(_model("enbert", CharTokenizer()).__class__(enb.config), ["A"]),
            ValueError,
            "tokenizer must be given",
        ),
        (lambda: scoring.embed(enb, ["ACGT"], layer=3), ValueError, r"layer must be in \[-3, 2\]"),
        (lambda: scoring.token_log_probs(enb, [[1, 2, 99]]), ValueError, r"ids\[0\] must hold token ids in \[0, "),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match) as info:
            fn()
        assert "\n" not in str(info.value)


# ---- the CLIs ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, models) -> Path:
    d = tmp_path_factory.mktemp("model") / "m"
    models[("enbert", "kmer")].save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def reads(tmp_path_factory) -> tuple[Path, list[str]]:
    seqs = [_dna(200, 30), _dna(37, 31) + "NN" + _dna(20, 32), _dna(90, 33)]
    p = tmp_path_factory.mktemp("reads") / "reads.fa"
    p.write_text("".join(f">read{i} sample {i}\n{s}\n" for i, s in enumerate(seqs)))
    return p, seqs


def test_score_cli_writes_tsv_and_tracks(tmp_path, model_dir, reads, models, capsys):
    fa, seqs = reads
    model = models[("enbert", "kmer")]
    want = scoring.score(model, seqs, per_base=True, both_strands=True, window=48, context=16)
    out, bg, npz = tmp_path / "s.tsv", tmp_path / "t.bedgraph", tmp_path / "t.npz"
    args = ["--model", str(model_dir), str(fa), "--window", "48", "--context", "16", "--both-strands"]
    assert score_main([*args, "--out", str(out), "--per-base", str(bg)]) == 0
    rows = [r.split("\t") for r in out.read_text().splitlines()]
    assert rows[0] == ["id", "length", "bits_per_base", "log_likelihood", "n_count", "scored_bases"]
    assert [r[0] for r in rows[1:]] == ["read0", "read1", "read2"]
    for r, w in zip(rows[1:], want, strict=True):
        assert (int(r[1]), int(r[4]), int(r[5])) == (w.length, w.n_count, w.scored_bases)
        assert float(r[2]) == pytest.approx(w.bits_per_base, abs=1e-6)
        assert float(r[3]) == pytest.approx(w.log_likelihood, abs=1e-5)
    # bedGraph: runs of equal values, NaN left out; rebuilds every track
    lines = bg.read_text().splitlines()
    assert lines[0].startswith("track type=bedGraph")
    tracks = {f"read{i}": np.full(len(s), np.nan) for i, s in enumerate(seqs)}
    for ln in lines[1:]:
        chrom, a, b, v = ln.split("\t")
        tracks[chrom][int(a) : int(b)] = float(v)
    for i, w in enumerate(want):
        np.testing.assert_allclose(tracks[f"read{i}"], w.per_base, rtol=1e-5, equal_nan=True)
    # npz to stdout's side, TSV to stdout
    assert score_main([*args, "--per-base", str(npz)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("read0\t200\t")
    z = np.load(npz)
    assert list(z["ids"]) == ["read0", "read1", "read2"] and z["offsets"].tolist() == [0, 200, 259, 349]
    np.testing.assert_allclose(z["values"][200:259], want[1].per_base, rtol=1e-12, equal_nan=True)


def test_score_cli_never_overwrites_without_force(tmp_path, model_dir, reads, capsys):
    fa, _ = reads
    out = tmp_path / "mine.tsv"
    out.write_text("my notes\n")
    assert score_main(["--model", str(model_dir), str(fa), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert out.read_text() == "my notes\n" and "exists; pass --force" in err and len(err.splitlines()) == 1
    assert score_main(["--model", str(model_dir), str(fa), "--out", str(out), "--force"]) == 0
    assert out.read_text().startswith("id\t")
    before = fa.read_bytes()
    assert score_main(["--model", str(model_dir), str(fa), "--out", str(fa), "--force"]) == 2
    assert fa.read_bytes() == before and "is the input file" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


@pytest.mark.parametrize(
    "argv, match",
    [
        ([], "give FASTA/FASTQ files to score, or --heldout"),
        (["missing.fa"], "sequence file not found: missing.fa"),
        (["READS", "--window", "1"], "--window must be >= 2, got 1"),
        (["READS", "--window", "500"], r"window must be in \[2, 64\], got 500"),
        (["READS", "--per-base", "x.wig"], "--per-base must end in .bedgraph, .bg or .npz"),
        (["READS", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["READS", "--device", "tpu"], "--device must be 'cpu' or 'cuda"),
    ],
)
def test_score_cli_errors_are_one_line(model_dir, reads, capsys, argv, match):
    argv = [str(reads[0]) if a == "READS" else a for a in argv]
    assert score_main(["--model", str(model_dir), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert pytest.importorskip("re").search(match, err), err


# the trainer itself: a short run on a small FASTA, then --heldout must print its figure
SMALL = [
    "--model-override",
    "d_model=32",
    "--model-override",
    "n_head=2",
    "--window",
    "32",
    "--batch-size",
    "4",
    "--threads",
    "1",
    "--sample-tokens",
    "0",
    "--warmup-steps",
    "1",
    "--time-budget",
    "0",
    "--max-steps",
    "2",
    "--eval-interval",
    "0",
]


@pytest.mark.parametrize(
    "model_kind, extra",
    [
        ("enbert", ["--model-override", "n_layer=1", "--eval-stride", "20"]),
        (
            "enigma",
            [
                "--model",
                "enigma",
                "--model-preset",
                "tiny",
                "--model-override",
                "n_encoder_layer=1",
                "--model-override",
                "n_decoder_layer=1",
                "--src-len",
                "12",
                "--tokenizer",
                "kmer",
            ],
        ),
    ],
)
def test_score_heldout_prints_the_trainers_figure(tmp_path, capsys, caplog, model_kind, extra):
    fa = tmp_path / "genome.fa"
    fa.write_text(f">chr1\n{_dna(3000, 40)}\n>chr2\n{_dna(1500, 41)}\n")
    run = tmp_path / "run"
    assert train_main([str(fa), *SMALL, *extra, "--out", str(run)]) == 0
    capsys.readouterr()
    trainer = json.loads((run / "summary.json").read_text())["val"]
    out = tmp_path / "heldout.tsv"
    with caplog.at_level("INFO", logger="enigma_fast.score"):
        assert (
            score_main(
                ["--model", str(run / "final"), "--heldout", "--out", str(out), "--per-base", str(tmp_path / "h.npz")]
            )
            == 0
        )
    rows = [r.split("\t") for r in out.read_text().splitlines()[1:]]
    assert [r[0].split(":")[0] for r in rows] == ["chr1", "chr2"]  # the last 10% of each record
    ll, bases = sum(float(r[3]) for r in rows), sum(int(r[5]) for r in rows)
    assert bases == trainer["bases"]
    assert -ll / bases / math.log(2) == pytest.approx(trainer["bpb"], abs=1e-5)
    assert "the trainer's final evaluation of this run" in caplog.text
    assert rows[0][0] == "chr1:2701-3000" and int(rows[0][1]) == 300


# ---- embed CLI --------------------------------------------------------------------------------------------------
def test_embed_cli_formats(tmp_path, model_dir, reads, models, capsys):
    fa, seqs = reads
    want = scoring.embed(models[("enbert", "kmer")], seqs, per_token=True)
    st = tmp_path / "e.safetensors"
    assert embed_main(["--model", str(model_dir), str(fa), "--out", str(st), "--per-token"]) == 0
    with safe_open(str(st), "numpy") as f:
        meta = f.metadata()
        assert json.loads(meta["ids"]) == ["read0", "read1", "read2"] and meta["layer"] == "2"
        np.testing.assert_allclose(f.get_tensor("embeddings"), want.mean, rtol=1e-6)
        off = f.get_tensor("offsets")
        np.testing.assert_allclose(f.get_tensor("tokens")[off[1] : off[2]], want.per_token[1], rtol=1e-6)
    npy = tmp_path / "e.npy"
    assert embed_main(["--model", str(model_dir), str(fa), "--out", str(npy), "--layer", "0"]) == 0
    assert np.load(npy).shape == (3, 32)
    assert (tmp_path / "e.ids.txt").read_text().split() == ["read0", "read1", "read2"]
    # errors: per-token into .npy, an existing sidecar, a bad suffix
    assert embed_main(["--model", str(model_dir), str(fa), "--out", str(tmp_path / "f.npy"), "--per-token"]) == 2
    assert embed_main(["--model", str(model_dir), str(fa), "--out", str(npy)]) == 2
    assert embed_main(["--model", str(model_dir), str(fa), "--out", str(tmp_path / "e.pt")]) == 2
    errs = capsys.readouterr().err.strip().splitlines()[-3:]
    assert "needs a .safetensors or .npz" in errs[0] and "exists; pass --force" in errs[1]
    assert "--out must end in .safetensors, .npz, .npy" in errs[2]
