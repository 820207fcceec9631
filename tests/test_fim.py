"""Fill-in-the-middle for EnBERT and the mixtures of Enigma: FIM cuts and rows, the held-out FIM score against a
per-item recomputation, a toy task a tiny FIM EnBERT learns and fills, the trainer's fim objective (summary, exact
resume, generate --infill), span mixtures with continuation, --init-from, and the one-line errors."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from enigma_fast.data.fim import fim_markers, fim_rows, fim_sequence, train_fim_cuts
from enigma_fast.generation import infill
from enigma_fast.models import EnBERT, EnBERTConfig, load_model
from enigma_fast.tokenizers import CharTokenizer
from enigma_fast.train.__main__ import main as train_main
from enigma_fast.train.fim import FimObjective, fim_loss, fim_span_items, fim_span_score
from enigma_fast.train.metrics import read_metrics
from enigma_fast.train.span import SpanEval, SpanObjective, bases_per_token, parse_span_mix
from enigma_fast.train.state import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]


def _fim_model(tok, **kw) -> EnBERT:
    cfg = dict(vocab_size=tok.vocab_size, d_model=32, n_head=2, n_layer=1, max_rel_pos=16, block_size=256, fim=True)
    model = EnBERT(EnBERTConfig(**{**cfg, **kw})).eval()
    model.tokenizer = tok
    return model


# ---- cuts and rows ------------------------------------------------------------------------------------------------
def test_cuts_are_a_pure_function_of_seed_and_step():
    a = train_fim_cuts(0, 5, 400, 60, 0.5)
    assert np.array_equal(a, train_fim_cuts(0, 5, 400, 60, 0.5))
    assert not np.array_equal(a, train_fim_cuts(0, 6, 400, 60, 0.5))
    fim = a[:, 0] >= 0
    assert 0.4 < fim.mean() < 0.6 and (a[~fim] == -1).all()
    i, j = a[fim, 0], a[fim, 1]
    assert (0 <= i).all() and (i < j).all() and (j <= 60).all()
    assert i.min() == 0 and j.max() == 60  # both ends reachable
    assert (train_fim_cuts(1, 0, 50, 10, 1.0)[:, 0] >= 0).all()
    with pytest.raises(ValueError, match="fim_rate"):
        train_fim_cuts(0, 0, 4, 10, 1.5)


@pytest.mark.parametrize("mode", ["psm", "spm"])
def test_fim_rows_reorder_and_mask_the_markers(mode):
    tok = CharTokenizer(num_sentinels=3)
    m = fim_markers(tok)
    rows = np.tile(np.arange(5, 9), (2, 4))[:, :13]  # (2, 13): 9 data tokens per FIM row
    cuts = np.array([[2, 5], [-1, -1]])
    out, loss = fim_rows(rows, cuts, m, mode)
    d = rows[0, :9]
    if mode == "psm":
        assert out[0].tolist() == [m.pre, *d[:2], m.suf, *d[5:], m.mid, *d[2:5], m.eot]
    else:  # the prefix right before the middle, as in a plain row
        assert out[0].tolist() == [m.pre, m.suf, *d[5:], m.mid, *d[:2], *d[2:5], m.eot]
    assert np.array_equal(out[1], rows[1]) and loss[1].all()
    targets = out[0, 1:]
    assert loss[0].tolist() == [t not in (m.suf, m.mid) for t in targets.tolist()]
    assert loss[0].sum() == 9 + 1  # every data token and <eot>
    with pytest.raises(ValueError, match="3 sentinel"):
        fim_markers(CharTokenizer(num_sentinels=2))
    with pytest.raises(ValueError, match="0 <= i < j <= 9"):
        fim_rows(rows, np.array([[4, 4], [-1, -1]]), m, mode)
    with pytest.raises(ValueError, match="fim mode must be one of"):
        fim_rows(rows, cuts, m, "msp")


def test_fim_span_items_and_score_equal_a_per_item_recomputation():
    tok = CharTokenizer(num_sentinels=64)
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 9, 400).astype(np.uint8)
    ev = SpanEval(tokens, np.array([[0, 400]]), 64, 0.15, 3.0, seed=3)
    m = fim_markers(tok)
    items = fim_span_items(ev, 20, m)
    assert len(items) == sum(int((mk & ~np.concatenate([[False], mk[:-1]])).sum()) for mk in ev.masks)
    # the first span of the second window, by hand
    s, n, seg = ev.windows[1].tolist()
    mk = ev.masks[1]
    a = int(np.argmax(mk))
    b = a + int(np.argmin(mk[a:]))
    c = b + int(np.argmax(mk[b:])) if mk[b:].any() else n
    first = sum(int((x & ~np.concatenate([[False], x[:-1]])).sum()) for x in ev.masks[:1])
    seq, m0, ml = items[first]
    want = fim_sequence(tokens[s - 20 : s + a], tokens[s + a : s + b], tokens[s + b : s + c], m)[:-1]
    assert (
        seq.tolist() == want.tolist() and ml == b - a and seq[m0 : m0 + ml].tolist() == tokens[s + a : s + b].tolist()
    )
    spm = fim_span_items(ev, 20, m, "spm")  # the same middles at the same places, the prefix moved next to them
    assert [(m0, ml) for _, m0, ml in spm] == [(m0, ml) for _, m0, ml in items]
    want = fim_sequence(tokens[s - 20 : s + a], tokens[s + a : s + b], tokens[s + b : s + c], m, "spm")[:-1]
    assert (
        spm[first][0].tolist() == want.tolist()
        and spm[first][0][m0 - (a + 20) : m0].tolist() == tokens[s - 20 : s + a].tolist()
    )
    model = _fim_model(tok)
    bpt = torch.from_numpy(bases_per_token(tok))
    res = fim_span_score(model, tok, ev, bpt, context=20, batch_size=7)
    special = torch.zeros(tok.vocab_size, dtype=torch.bool)
    special[list(tok.special_ids.values())] = True
    nll = 0.0
    with torch.no_grad():
        for seq, m0, ml in items:  # one at a time, no padding
            logits, _ = model(torch.from_numpy(seq)[None, :-1])
            lp = torch.log_softmax(logits[0].double().masked_fill(special, -math.inf), -1)
            nll -= float(sum(lp[p - 1, seq[p]] for p in range(m0, m0 + ml)))
    assert res["tokens"] == res["bases"] == sum(ml for _, _, ml in items)
    assert res["bpb"] == pytest.approx(nll / res["bases"] / math.log(2), rel=1e-5)


@pytest.mark.parametrize("mode", ["psm", "spm"])
def test_a_tiny_fim_enbert_learns_to_fill_a_periodic_sequence(mode):
    tok = CharTokenizer(num_sentinels=3)
    torch.manual_seed(0)
    model = _fim_model(tok, n_head=4, n_layer=2, fim_spm=mode == "spm").train()
    rng = np.random.default_rng(0)
    seq = np.tile(rng.permutation(4) + 5, 40)
    obj = FimObjective(0, 1.0, fim_markers(tok), mode)  # every row reordered: the middle's first token is the hard one
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(300):
        starts = rng.integers(0, len(seq) - 21, 16)
        rows, keep = obj.rows(step, np.stack([seq[s : s + 21] for s in starts]), 16, np.arange(16))
        _, loss = fim_loss(model, torch.from_numpy(rows), torch.from_numpy(keep))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:10])
    model.eval()
    text = tok.decode(torch.from_numpy(seq[3:40]))
    gapped = text[:12] + "[N:5]" + text[17:25] + "[N:3]" + text[28:]
    assert infill(model, tok, gapped, temperature=0) == [[text]]
    # sampled fills keep the flanks and the exact lengths; a free gap ends within its bound
    out = infill(model, tok, [gapped, ("ACGT", None, "TTGA")], num_samples=3, seed=1, max_gap_length=6)
    for s in out[0]:
        assert len(s) == len(text) and s[:12] == text[:12] and s[17:25] == text[17:25] and s[28:] == text[28:]
    for s in out[1]:
        assert s.startswith("ACGT") and s.endswith("TTGA") and 9 <= len(s) <= 14
    assert out == infill(model, tok, [gapped, ("ACGT", None, "TTGA")], num_samples=3, seed=1, max_gap_length=6)
    with pytest.raises(ValueError, match="block_size"):
        infill(model, tok, "A" * 300 + "[N:4]")
    with pytest.raises(TypeError, match="fim"):
        plain = EnBERT(EnBERTConfig(vocab_size=tok.vocab_size, d_model=32, n_head=2, n_layer=1))
        infill(plain, tok, "ACGT[N:3]ACGT")


def test_span_mixture_draws_one_denoiser_per_step():
    mix = parse_span_mix("0.15:3, 0.5:1.5 ,continuation", 0.15, 3.0)
    assert mix == [(0.15, 3.0), (0.5, 1.5), None]
    assert parse_span_mix("", 0.3, 2.0) == [(0.3, 2.0)]
    for bad in ("0.5", "x:3", "continuation", "1.5:3"):
        with pytest.raises(ValueError, match="span_mix|noise_density"):
            parse_span_mix(bad, 0.15, 3.0)
    obj = SpanObjective(0, 64, 0.15, 3.0, mix)
    picks = [obj.denoiser(s) for s in range(300)]
    assert picks == [obj.denoiser(s) for s in range(300)]
    assert {str(p) for p in picks} == {str(x) for x in mix}
    for s in range(20):
        masks = obj.masks(s, 4)
        if picks[s] is None:
            assert masks is None
        else:
            assert masks.shape == (4, 64) and masks.sum(1).tolist() == [round(picks[s][0] * 64)] * 4
    single = SpanObjective(0, 64, 0.15, 3.0)
    from enigma_fast.data.spans import train_span_masks

    assert np.array_equal(single.masks(7, 4), train_span_masks(0, 7, 4, 64, 0.15, 3.0))  # no draw without a mix


# ---- the trainer --------------------------------------------------------------------------------------------------
COMMON = [
    "--model-override",
    "d_model=32",
    "--model-override",
    "n_head=2",
    "--model-override",
    "max_rel_pos=16",
    "--window",
    "32",
    "--batch-size",
    "4",
    "--threads",
    "1",
    "--log-interval",
    "1",
    "--warmup-steps",
    "2",
    "--time-budget",
    "0",
    "--eval-interval",
    "0",
    "--sample-tokens",
    "8",
    "--sample-prompt",
    "8",
    "--no-codon-eval",
]
ENIGMA = ["--model", "enigma", "--model-override", "n_encoder_layer=1", "--model-override", "n_decoder_layer=1"]


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    unit = "".join(rng.choice(list("ACGT"), 200))
    g = "".join(unit if rng.random() < 0.5 else "".join(rng.choice(list("ACGT"), 200)) for _ in range(40))
    p = tmp_path_factory.mktemp("data") / "small.fa"
    p.write_text(">chr1\n" + g + "\n")
    return p


def _losses(run: Path) -> dict[int, str]:
    return {int(r["step"]): r["loss"] for r in read_metrics(run / "metrics.csv") if r["kind"] == "train"}


@pytest.fixture(scope="module")
def fim_run(fasta, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fim") / "run"
    args = [str(fasta), *COMMON, "--model-override", "n_layer=1", "--objective", "fim", "--max-steps", "12"]
    assert train_main([*args, "--ckpt-interval", "6", "--keep-last", "5", "--out", str(out)]) == 0
    return out


def test_fim_run_reports_both_figures_and_fills_gaps(fim_run, fasta, capsys):
    s = json.loads((fim_run / "summary.json").read_text())
    assert s["objective"]["name"] == "fim" and s["objective"]["fim_rate"] == 0.5
    assert 1.0 < s["val"]["bpb"] < 6.0 and s["val"]["bases"] > 700  # the plain held-out figure, as any EnBERT
    assert 1.0 < s["infill"]["bpb"] < 6.0 and 0 < s["infill"]["bases"] < 0.3 * s["val"]["bases"]
    assert s["sample"]["kind"] == "infill" and len(s["sample"]["fill"]) == len(s["sample"]["truth"])
    model = load_model(str(fim_run / "final"))
    assert model.config.fim and model.tokenizer.num_sentinels == 64
    from enigma_fast.train.infill_eval import evaluate_pair

    res = evaluate_pair(None, None, [str(fasta)], window=32, context=32, fim=str(fim_run / "final"))
    assert res["fim"]["bpb"] == pytest.approx(s["infill"]["bpb"], rel=1e-6)  # the trainer's spans, the same
    proc = subprocess.run(
        [sys.executable, "-m", "enigma_fast.generate", "--model", str(fim_run / "final")]
        + ["--infill", "ACGTTGCA[N:7]TTGACCA", "--num-samples", "2", "--seed", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(">infill_sample_1") and len(lines[1]) == 22 and lines[1].startswith("ACGTTGCA")


def test_fim_run_resumes_exactly(fim_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fim_run, run)
    for step, path in list_checkpoints(run):
        if step > 6:
            shutil.rmtree(path)
    shutil.rmtree(run / "final")
    assert train_main(["--resume", str(run)]) == 0
    ref, got = _losses(fim_run), _losses(run)
    assert [got[s] for s in range(7, 13)] == [ref[s] for s in range(7, 13)]


def test_span_mixture_run_resumes_exactly_and_init_from(fasta, tmp_path):
    base = [str(fasta), *COMMON, *ENIGMA]
    cont = tmp_path / "cont"
    assert train_main([*base, "--max-steps", "4", "--out", str(cont)]) == 0
    mix = [*base, "--objective", "span", "--span-mix", "0.5:1.5,continuation", "--max-steps", "10"]
    ref = tmp_path / "ref"
    assert train_main([*mix, "--ckpt-interval", "5", "--keep-last", "5", "--out", str(ref)]) == 0
    s = json.loads((ref / "summary.json").read_text())
    assert s["objective"]["span_mix"] == "0.5:1.5,continuation" and s["val"]["bases"] > 0
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    for step, path in list_checkpoints(run):
        if step > 5:
            shutil.rmtree(path)
    shutil.rmtree(run / "final")
    assert train_main(["--resume", str(run)]) == 0
    assert [_losses(run)[k] for k in range(6, 11)] == [_losses(ref)[k] for k in range(6, 11)]
    # a span run started from the continuation run's weights: with a negligible step it ends where it started
    init = tmp_path / "init"
    args = [*base, "--objective", "span", "--max-steps", "1", "--lr", "1e-12", "--min-lr", "0", "--warmup-steps", "0"]
    assert train_main([*args, "--init-from", str(cont / "final"), "--out", str(init)]) == 0
    a, b = load_model(str(cont / "final")).state_dict(), load_model(str(init / "final")).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-8) for k in a)


def test_fim_and_mixture_errors_are_one_line(fasta, tmp_path, caplog):
    base = [str(fasta), *COMMON]
    assert train_main([*base, *ENIGMA, "--objective", "fim", "--out", str(tmp_path / "a")]) == 2
    assert "fill-in-the-middle is for the decoder-only EnBERT" in caplog.text
    assert train_main([*base, "--span-mix", "0.5:1.5", "--out", str(tmp_path / "b")]) == 2
    assert "span_mix must be empty unless objective is 'span'" in caplog.text
    bad = [*base, *ENIGMA, "--objective", "span", "--span-mix", "0.5:x", "--out", str(tmp_path / "c")]
    assert train_main(bad) == 2
    assert "span_mix items must be" in caplog.text
    cont = tmp_path / "cont"
    assert train_main([*base, *ENIGMA, "--max-steps", "1", "--out", str(cont)]) == 0
    other = [*base, *ENIGMA, "--model-override", "d_model=48", "--init-from", str(cont / "final")]
    assert train_main([*other, "--out", str(tmp_path / "d")]) == 2
    assert "its model config differs from the run's (d_model: 32 there, 48 here)" in caplog.text
