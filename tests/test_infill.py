"""Span corruption and infilling: masks, source/target construction, the infill API and CLI, a toy task a tiny
Enigma learns, the trainer's span objective (exact resume; old runs without the field) and bad gaps."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from enigma_fast.data.spans import eval_span_masks, random_span_mask, span_counts, train_span_masks
from enigma_fast.generation import fill_gaps, infill, parse_masked
from enigma_fast.models import Enigma, EnigmaConfig, load_model
from enigma_fast.models.base import IGNORE_INDEX
from enigma_fast.tokenizers import CharTokenizer, KMerTokenizer
from enigma_fast.train.__main__ import main as train_main
from enigma_fast.train.metrics import read_metrics
from enigma_fast.train.span import check_span_fit
from enigma_fast.train.state import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True."""
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def _tiny_enigma(tok, seed: int = 0, **kw) -> Enigma:
    torch.manual_seed(seed)
    cfg = dict(
        vocab_size=tok.vocab_size,
        bos_id=tok.bos_id,
        d_model=32,
        n_head=2,
        n_encoder_layer=1,
        n_decoder_layer=1,
        max_rel_pos=16,
        block_size=128,
    )
    model = Enigma(EnigmaConfig(**{**cfg, **kw})).eval()
    model.tokenizer = tok
    return model


# ---- masks --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length, density, mean", [(128, 0.15, 3.0), (37, 0.3, 2.0), (2, 0.15, 3.0), (50, 0.5, 1.0)])
def test_masks_have_the_counts_and_never_touch(length, density, mean):
    n, m = span_counts(length, density, mean)
    rng = np.random.default_rng(0)
    starts, ends = 0, 0
    for _ in range(300):
        mask = random_span_mask(length, density, mean, rng)
        spans = _spans(mask)
        assert mask.shape == (length,) and mask.sum() == n and len(spans) == m  # spans never touch: m runs
        starts += mask[0]
        ends += mask[-1]
    if length >= 37:
        assert 0 < starts < 300 and 0 < ends < 300  # a span may touch either end of the window, not always


def test_masks_are_a_pure_function_of_seed_and_step():
    a = train_span_masks(0, 7, 5, 64, 0.15, 3.0)
    assert np.array_equal(a, train_span_masks(0, 7, 5, 64, 0.15, 3.0))
    assert not np.array_equal(a, train_span_masks(0, 8, 5, 64, 0.15, 3.0))
    assert not np.array_equal(a, train_span_masks(1, 7, 5, 64, 0.15, 3.0))
    e = eval_span_masks(3, [64, 64, 20], 0.15, 3.0)
    assert [len(x) for x in e] == [64, 64, 20] and not np.array_equal(e[0], e[1])
    assert all(np.array_equal(x, y) for x, y in zip(e, eval_span_masks(3, [64, 64, 20], 0.15, 3.0), strict=True))
    with pytest.raises(ValueError, match=r"noise_density must be in \(0, 1\), got 1.5"):
        span_counts(10, 1.5, 3.0)
    with pytest.raises(ValueError, match=r"mean_span must be >= 1, got 0.5"):
        span_counts(10, 0.15, 0.5)


# ---- source / target construction -------------------------------------------------------------------------------
def _reconstruct(src: list[int], tgt: list[int], sentinels: list[int], eos: int) -> list[int]:
    spans: dict[int, list[int]] = {}
    cur = None
    for t in tgt:
        if t == eos:
            break
        if t in sentinels:
            cur = sentinels.index(t)
            spans[cur] = []
        else:
            spans[cur].append(t)
    out = []
    for t in src:
        out += spans[sentinels.index(t)] if t in sentinels else [t]
    return out


@pytest.mark.parametrize("fixed", [True, False])
def test_span_corrupt_puts_every_token_in_source_or_span_once(fixed):
    tok = CharTokenizer()
    g = torch.Generator().manual_seed(1)
    B, L = 6, 40
    window = torch.randint(5, 9, (B, L), generator=g)  # A/C/G/T ids
    if fixed:
        mask = torch.from_numpy(train_span_masks(0, 0, B, L, 0.3, 3.0))
    else:  # any mask: rows with different counts, spans at the ends, a row with none
        mask = torch.rand(B, L, generator=g) < 0.35
        mask[0] = False
        mask[1, :3] = True
        mask[2, -2:] = True
    sent = tok.sentinel_ids
    src, src_start, tgt_in, targets, tgt_pos = Enigma.span_corrupt(
        window, mask, sent, tok.bos_id, tok.eos_id, tok.pad_id
    )
    assert (src_start is None) == fixed
    for b in range(B):
        s = src[b, (0 if src_start is None else int(src_start[b])) :].tolist()
        t = [x for x in targets[b].tolist() if x != IGNORE_INDEX]
        spans = _spans(mask[b].numpy())
        kept = [x for x, m in zip(window[b].tolist(), mask[b].tolist(), strict=True) if not m]
        assert [x for x in s if x not in sent] == kept  # the kept tokens, in order, once
        assert [x for x in s if x in sent] == sent[: len(spans)]  # one sentinel per span, in order
        assert sum(x not in sent and x != tok.eos_id for x in t) == int(mask[b].sum())  # masked tokens, once
        assert t[-1] == tok.eos_id and t.count(tok.eos_id) == 1
        assert _reconstruct(s, t, sent, tok.eos_id) == window[b].tolist()  # nothing lost, nothing twice
        assert tgt_in[b, 0] == tok.bos_id and tgt_in[b, 1 : len(t)].tolist() == t[:-1]
        # each decoder input sits at the source position of its span's sentinel
        where = {x: p for p, x in enumerate(s) if x in sent}
        span_of = [sent[0]] + [None] * (len(t) - 1)
        for k in range(1, len(t)):
            x = tgt_in[b, k].item()
            span_of[k] = x if x in sent else span_of[k - 1]
        if spans:
            assert tgt_pos[b, : len(t)].tolist() == [where[x] for x in span_of]
    with pytest.raises(ValueError, match="only 2 sentinel ids"):
        Enigma.span_corrupt(window, torch.from_numpy(train_span_masks(0, 0, B, L, 0.3, 1.0)), sent[:2], 2, 3, 0)


def test_left_padded_span_batches_equal_each_row_alone():
    tok = CharTokenizer()
    model = _tiny_enigma(tok)
    window = torch.randint(5, 9, (3, 30))
    mask = torch.rand(3, 30) < 0.3
    mask[:, 0] = False
    mask[0, 5:9] = True  # rows of different lengths
    sb = Enigma.span_corrupt(window, mask, tok.sentinel_ids, 2, 3, 0)
    logits, _ = model(sb.src, sb.tgt_in, src_start=sb.src_start, tgt_pos=sb.tgt_pos)
    for b in range(3):
        one_b = Enigma.span_corrupt(window[b : b + 1], mask[b : b + 1], tok.sentinel_ids, 2, 3, 0)
        one, _ = model(one_b.src, one_b.tgt_in, tgt_pos=one_b.tgt_pos)
        n = int((one_b.targets != IGNORE_INDEX).sum())
        torch.testing.assert_close(logits[b, :n], one[0, :n], atol=1e-5, rtol=1e-5)


# ---- parsing and bad gaps -----------------------------------------------------------------------------------------
def test_parse_masked_forms():
    m = parse_masked("ACGT[N:12]TTGA[N]CC")
    assert m.flanks == ("ACGT", "TTGA", "CC") and m.gaps == (12, None)
    assert parse_masked("[N:3]ACG").flanks == ("", "ACG")  # a gap at either end: one flank
    assert parse_masked("ACG[N:3]").gaps == (3,)
    assert parse_masked(("AC", 5, "GT")).gaps == (5,) and parse_masked(("AC", None, "")).gaps == (None,)
    assert m.join(["x" * 12, "yy"]) == "ACGT" + "x" * 12 + "TTGAyyCC"


@pytest.mark.parametrize(
    "text, match",
    [
        ("ACGT[N:0]TTGA", r"^text: empty gap '\[N:0\]' at position 4; a gap needs a length >= 1$"),
        ("ACGT[N:x]TT", r"^text: malformed gap at position 4: '\[N:x\]TT'"),
        ("ACGT[N:12TT", r"^text: malformed gap at position 4"),
        ("ACGT]TT[N:3]", r"^text: malformed gap at position 4"),
        ("ACGT[X:3]TT", r"^text: malformed gap at position 4"),
        ("ACGT[N:-3]TT", r"^text: malformed gap at position 4"),
        ("AC[N:3][N:4]GT", r"^text: the gaps at position 7 and before it touch"),
        ("ACXT[N:3]", r"^text: 'X' at position 2 is not a DNA letter"),
        ("ACGT", r"^text: no gap to fill"),
        ("[N:5]", r"^text: no flanking bases"),
        (("AC", 0, "GT"), r"^text: empty gap \(length 0\)"),
        (("AC", 3), r"^text must be a \(left, length, right\) tuple, got 2 items"),
        (("AZ", 3, "GT"), r"^text: the left flank holds 'Z' at position 1"),
    ],
)
def test_bad_gaps_are_one_line_errors_naming_the_argument(text, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_masked(text)
    assert "\n" not in str(err.value)


def test_infill_errors_name_the_item_or_option():
    tok = CharTokenizer(num_sentinels=2)
    model = _tiny_enigma(tok)
    with pytest.raises(ValueError, match=r"^text\[1\]: 3 gaps, but the tokenizer has 2 sentinels"):
        infill(model, tok, ["A[N:1]C", "A[N:1]C[N:1]G[N:1]T"])
    with pytest.raises(ValueError, match=r"^text\[0\]: empty gap"):
        infill(model, tok, ["A[N:0]C"])
    with pytest.raises(
        ValueError,
        match=r"^text: the flanks and sentinels make 131 source tokens, more than the "
        r"model's block_size 128",
    ):
        infill(model, tok, "A" * 130 + "[N:40]")
    with pytest.raises(ValueError, match=r"^num_samples must be an int >= 1, got 0"):
        infill(model, tok, "A[N:1]C", num_samples=0)
    with pytest.raises(ValueError, match=r"^top_p must be None or a number in \(0, 1\], got 1.5"):
        infill(model, tok, "A[N:1]C", top_p=1.5)
    old = CharTokenizer(num_sentinels=0)
    with pytest.raises(ValueError, match=r"no sentinel tokens .* --objective span"):
        infill(_tiny_enigma(old), old, "A[N:1]C")


# ---- the infill API -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tok", [CharTokenizer(), KMerTokenizer(3)], ids=["char", "kmer3"])
def test_infill_respects_lengths_and_flanks(tok):
    if isinstance(tok, KMerTokenizer):
        tok.build_vocab(["ACGTTGCAAGGCTTACCGATAGGCATTACG" * 3])
    model = _tiny_enigma(tok)
    items = ["ACGTTGCA[N:7]TTGACC[N]GG", ("", 5, "ACGGT"), ("TTGCA", 11, "")]
    out = fill_gaps(model, tok, items, num_samples=3, seed=0, temperature=1.5, max_gap_length=6)
    seqs = infill(model, tok, items, num_samples=3, seed=0, temperature=1.5, max_gap_length=6)
    assert len(out) == 3 and all(len(s) == 3 for s in out)
    dna = set("ACGTNacgtnRYSWKMBDHVryswkmbdhv")
    for i, item in enumerate(items):
        masked = parse_masked(item)
        for s in range(3):
            fills = out[i][s]
            assert len(fills) == len(masked.gaps)
            for fill, n in zip(fills, masked.gaps, strict=True):
                assert set(fill) <= dna
                assert len(fill) == n if n is not None else 1 <= len(fill) <= 6
            assert seqs[i][s] == masked.join(fills)  # flanks exactly as given
    again = infill(model, tok, items, num_samples=3, seed=0, temperature=1.5, max_gap_length=6)
    assert again == seqs  # seeded
    assert model.infill("ACGT[N:4]", seed=1) == infill(model, tok, "ACGT[N:4]", seed=1)


@pytest.mark.parametrize("vocab", ["trained", "full"])
def test_cached_infill_equals_full_recompute(vocab):
    """Greedy infill on the KV cache picks, at every step, the argmax over the allowed tokens of the logits of a full
    forward pass over the tokens so far (allowed: the tokens of the training letters, A/C/G/T for a tokenizer that
    records none; with vocab="full" every non-special token)."""
    tok = CharTokenizer()
    model = _tiny_enigma(tok, seed=3)
    text = "ACGTTGCAAC[N:6]GGTACCA[N:4]TTG"
    m = parse_masked(text)
    fills = fill_gaps(model, tok, text, temperature=0, vocab=vocab)[0][0]
    src = (
        tok.encode(m.flanks[0])
        + [tok.sentinel_id(0)]
        + tok.encode(m.flanks[1])
        + [tok.sentinel_id(1)]
        + tok.encode(m.flanks[2])
    )
    tgt = [tok.sentinel_id(0), *tok.encode(fills[0]), tok.sentinel_id(1), *tok.encode(fills[1]), tok.eos_id]
    p0, p1 = len(tok.encode(m.flanks[0])), len(tok.encode(m.flanks[0])) + 1 + len(tok.encode(m.flanks[1]))
    pos = [p0] * (2 + len(fills[0])) + [p1] * (len(tgt) - 2 - len(fills[0]))  # bos, span 0 | span 1
    with torch.no_grad():
        logits, _ = model(torch.tensor([src]), torch.tensor([[tok.bos_id, *tgt[:-1]]]), tgt_pos=torch.tensor([pos]))
    special = list(tok.special_ids.values())
    blocked = torch.zeros(logits.shape[-1], dtype=torch.bool)
    blocked[special] = True
    if vocab == "trained":
        blocked |= ~tok.output_mask(logits.shape[-1])
    for t, x in enumerate(tgt):
        if x in special:
            continue  # forced
        row = logits[0, t].masked_fill(blocked, float("-inf"))
        assert int(row.argmax()) == x
    # a batch of different items gives each item's greedy fills
    batch = fill_gaps(model, tok, [text, "GG[N:3]ACGTACGTACGTAC", ("ACG", 2, "T")], temperature=0, vocab=vocab)
    assert batch[0][0] == fills
    assert batch[1][0] == fill_gaps(model, tok, "GG[N:3]ACGTACGTACGTAC", temperature=0, vocab=vocab)[0][0]
    assert batch[2][0] == fill_gaps(model, tok, ("ACG", 2, "T"), temperature=0, vocab=vocab)[0][0]


def test_a_tiny_enigma_learns_a_toy_infill_task():
    """Windows of a periodic sequence: after a little span-corruption training, greedy infill restores the gaps."""
    tok = CharTokenizer()
    model = _tiny_enigma(tok, d_model=48, n_head=4).train()
    rng = np.random.default_rng(0)
    seq = np.tile(rng.permutation(4) + 5, 40)  # a period of the 4 bases in a random order
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(200):
        starts = rng.integers(0, len(seq) - 32, 16)
        rows = torch.from_numpy(np.stack([seq[s : s + 32] for s in starts]))
        masks = torch.from_numpy(train_span_masks(0, step, 16, 32, 0.25, 3.0))
        sb = Enigma.span_corrupt(rows, masks, tok.sentinel_ids, tok.bos_id, tok.eos_id, tok.pad_id)
        _, loss = model(sb.src, sb.tgt_in, sb.targets, src_start=sb.src_start, tgt_pos=sb.tgt_pos)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:10])
    model.eval()
    text = tok.decode(torch.from_numpy(seq[3:40]))
    gapped = text[:12] + "[N:5]" + text[17:25] + "[N:3]" + text[28:]
    assert infill(model, tok, gapped, temperature=0) == [[text]]


# ---- the trainer --------------------------------------------------------------------------------------------------
SMALL = [  # one base per token (the --tokenizer at the end): the lengths below count tokens as bases
    "--model",
    "enigma",
    "--objective",
    "span",
    "--model-override",
    "d_model=32",
    "--model-override",
    "n_head=2",
    "--model-override",
    "n_encoder_layer=1",
    "--model-override",
    "n_decoder_layer=1",
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
    "--tokenizer",
    "char",
]


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
def span_run(fasta, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("span") / "run"
    assert (
        train_main(
            [str(fasta), *SMALL, "--max-steps", "12", "--ckpt-interval", "6", "--keep-last", "5", "--out", str(out)]
        )
        == 0
    )
    return out


def test_span_run_reports_infill_and_compares_an_enbert(span_run, fasta, tmp_path, capsys):
    s = json.loads((span_run / "summary.json").read_text())
    cfg = json.loads((span_run / "train_config.json").read_text())
    assert cfg["objective"] == "span" and s["objective"]["name"] == "span"
    held = round(0.1 * 8000)
    assert 0.1 * held < s["val"]["bases"] < 0.2 * held and 1.0 < s["val"]["bpb"] < s["val"]["bpb_with_ends"]
    assert s["sample"]["kind"] == "infill" and len(s["sample"]["fill"]) == len(s["sample"]["truth"])
    # an EnBERT on the same data, then the same spans scored by both
    enbert = tmp_path / "enbert"
    assert (
        train_main(
            [
                str(fasta),
                "--tokenizer",
                "char",
                "--model-override",
                "d_model=32",
                "--model-override",
                "n_head=2",
                "--model-override",
                "n_layer=1",
                "--window",
                "32",
                "--batch-size",
                "4",
                "--threads",
                "1",
                "--warmup-steps",
                "2",
                "--time-budget",
                "0",
                "--eval-interval",
                "0",
                "--sample-tokens",
                "0",
                "--max-steps",
                "2",
                "--out",
                str(enbert),
            ]
        )
        == 0
    )
    from enigma_fast.train.infill_eval import evaluate_pair

    res = evaluate_pair(str(span_run / "final"), str(enbert / "final"), [str(fasta)], window=32)
    assert res["enigma"]["bases"] == res["enbert"]["bases"] > 0
    assert res["enigma"]["bpb"] == pytest.approx(s["val"]["bpb"], rel=1e-6)  # the trainer's spans, the same
    run2 = tmp_path / "run2"
    assert (
        train_main(
            [str(fasta), *SMALL, "--max-steps", "2", "--compare-enbert", str(enbert / "final"), "--out", str(run2)]
        )
        == 0
    )
    s2 = json.loads((run2 / "summary.json").read_text())
    assert s2["infill_compare"]["bases"] == s2["val"]["bases"]
    assert "same spans, EnBERT from the left only" in capsys.readouterr().out


def test_span_run_resumes_exactly(span_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(span_run, run)
    for step, path in list_checkpoints(run):
        if step > 6:
            shutil.rmtree(path)
    shutil.rmtree(run / "final")
    assert train_main(["--resume", str(run)]) == 0
    ref, got = _losses(span_run), _losses(run)
    assert [got[s] for s in range(7, 13)] == [ref[s] for s in range(7, 13)]  # masks and windows drawn again


def test_old_run_without_objective_resumes_as_continuation(fasta, tmp_path):
    ref = tmp_path / "ref"
    args = [
        str(fasta),
        *SMALL[:2],
        *SMALL[4:],
        "--max-steps",
        "6",
        "--ckpt-interval",
        "3",
        "--keep-last",
        "5",
        "--sample-tokens",
        "0",
    ]
    assert train_main([*args, "--out", str(ref)]) == 0
    run = tmp_path / "old"
    shutil.copytree(ref, run)
    for step, path in list_checkpoints(run):
        if step > 3:
            shutil.rmtree(path)
        else:  # as written before the field existed
            state = json.loads((path / "trainer_state.json").read_text())
            del state["config"]["objective"], state["config"]["noise_density"], state["config"]["mean_span"]
            del state["config"]["compare_enbert"]
            (path / "trainer_state.json").write_text(json.dumps(state))
    shutil.rmtree(run / "final")
    assert train_main(["--resume", str(run)]) == 0
    assert [_losses(run)[s] for s in (4, 5, 6)] == [_losses(ref)[s] for s in (4, 5, 6)]
    assert "objective" not in json.loads((run / "summary.json").read_text())


def test_span_objective_needs_enigma_and_sentinels(fasta, tmp_path, caplog):
    assert train_main([str(fasta), "--objective", "span", "--out", str(tmp_path / "a")]) == 2
    assert "objective must be 'continuation' or 'fim' for --model enbert" in caplog.text
    with pytest.raises(ValueError, match=r"a window of 128 tokens gets 25 spans .* the tokenizer has 16 sentinels"):
        check_span_fit(128, 0.3, 1.5, 16, 256)
    check_span_fit(128, 0.15, 3.0, 64, 128)


# ---- the CLI ------------------------------------------------------------------------------------------------------
def test_generate_infill_cli(span_run, tmp_path, capsys):
    model = str(span_run / "final")
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "enigma_fast.generate", "--model", model, *a],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    r = run("--infill", "ACGTACGTAC[N:12]TTGACCGT", "--num-samples", "2", "--seed", "0")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(">infill_sample_1 gaps=1 filled=12") and lines[2].startswith(">infill_sample_2")
    assert lines[1][:10] == "ACGTACGTAC" and lines[1][-8:] == "TTGACCGT" and len(lines[1]) == 30
    fa = tmp_path / "in.fa"
    fa.write_text(">scaf1 x\nACGTACGTNNNNNACGTTT\n>scaf2\nNNNGGCAT\n")
    out = tmp_path / "out.fa"
    r = run("--infill-fasta", str(fa), "--out", str(out), "--seed", "0")
    assert r.returncode == 0, r.stderr
    recs = out.read_text().split(">")[1:]
    assert recs[0].startswith("scaf1_sample_1 gaps=1 filled=5\n") and recs[1].startswith("scaf2_sample_1")
    s1 = recs[0].split("\n")[1]
    assert s1[:8] == "ACGTACGT" and s1[-6:] == "ACGTTT" and "N" not in s1[8:13] and len(s1) == 19
    from enigma_fast.generate import main as generate_main

    for args, msg in [
        (["--infill", "AC[N:0]GT"], "--infill: empty gap"),
        (["--infill", "AC[N:3GT"], "--infill: malformed gap at position 2"),
        (["--infill", "AC[N:3]GT", "--max-gap-length", "0"], "--max-gap-length must be >= 1"),
        (["--infill", "A" * 300 + "[N:3]"], "--infill: the flanks and sentinels make 301 source tokens"),
    ]:
        capsys.readouterr()
        assert generate_main(["--model", model, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err


def test_old_models_load_and_generate(tmp_path):
    """A checkpoint written before sentinels and the cross-attention bias existed (tokenizer.json with the five
    special tokens, config.json without cross_rel_pos, no rel_bias tensors) loads and generates as before."""
    tok = CharTokenizer(num_sentinels=0)
    model = _tiny_enigma(tok, cross_rel_pos=0)
    model.save_pretrained(tmp_path / "m", tokenizer=tok)
    d = json.loads((tmp_path / "m" / "tokenizer.json").read_text())
    assert set(d["special_tokens"]) == {"<pad>", "<unk>", "<bos>", "<eos>", "<mask>"}
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    del cfg["cross_rel_pos"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    again = load_model(str(tmp_path / "m"))
    assert again.tokenizer.num_sentinels == 0 and again.config.vocab_size == 35
    assert again.config.cross_rel_pos == 0 and not any("rel_bias" in k for k in again.state_dict())
    x = torch.tensor([tok.encode("ACGTACGTAC")])
    torch.testing.assert_close(again(x[:, :6], x[:, 6:])[0], model(x[:, :6], x[:, 6:])[0])
    out = again.generate(torch.tensor([tok.encode("ACGTACGT")]), 5, temperature=0)
    assert out.shape == (1, 13)
