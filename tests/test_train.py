"""Tests of the trainer: data pipeline, baseline, the default run end to end, exact resume, crash safety, DDP
equivalence and errors on bad input. Models are shrunk and runs short so the file stays a few minutes on 2 cores."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from enigma_fast.data.tokens import TokenStore, prepare_tokens
from enigma_fast.data.windows import WindowSampler, eval_windows, split_segments
from enigma_fast.models import EnBERT, load_model
from enigma_fast.tokenizers import CharTokenizer, reverse_complement
from enigma_fast.train import data as tdata
from enigma_fast.train.__main__ import main
from enigma_fast.train.baseline import base_codes, markov_baseline
from enigma_fast.train.config import TrainConfig, load_config_file
from enigma_fast.train.loop import lr_at
from enigma_fast.train.metrics import read_metrics
from enigma_fast.train.state import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
# a small model and short windows: a step takes milliseconds
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
    "--log-interval",
    "1",
    "--sample-tokens",
    "16",
    "--sample-prompt",
    "16",
    "--warmup-steps",
    "5",
    "--time-budget",
    "0",
]
LAYERS = ["--model-override", "n_layer=2"]


def _genome(n: int, seed: int = 0) -> str:
    """A random sequence with repeats (something to learn beyond base counts)."""
    rng = np.random.default_rng(seed)
    unit = "".join(rng.choice(list("ACGT"), 300))
    parts = []
    while sum(map(len, parts)) < n:
        parts.append(unit if rng.random() < 0.5 else "".join(rng.choice(list("ACGT"), 300)))
    return "".join(parts)[:n]


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "small.fa"
    g = _genome(24_000)
    p.write_text(">chr1 test\n" + g[:16_000] + "\n>chr2\n" + g[16_000:] + "\n")
    return p


def _losses(run: Path, kind: str = "train") -> dict[int, str]:
    return {int(r["step"]): r["loss"] for r in read_metrics(run / "metrics.csv") if r["kind"] == kind}


# ---- data pipeline ---------------------------------------------------------------------------------------------
def test_prepare_policies(tmp_path):
    p = tmp_path / "a.fa.gz"
    import gzip

    with gzip.open(p, "wt") as f:
        f.write(">r1\nACGTacgtNNNNACGTTT\n>r2\nNNNN\n>r3\nGGGCCC\n")
    store = prepare_tokens([p], tmp_path / "s1", CharTokenizer(), case="upper", n_policy="split")
    tok = store.tokenizer
    segs = [tok.decode(torch.from_numpy(store.segment_tokens(i).astype(np.int64))) for i in range(len(store.segments))]
    assert segs == ["ACGTACGT", "ACGTTT", "GGGCCC"]
    assert store.segments[:, 0].tolist() == [0, 0, 2] and store.num_bases == 20
    assert store.tokens.dtype == np.uint8 and isinstance(store.tokens, np.memmap)
    kept = prepare_tokens([p], tmp_path / "s2", CharTokenizer(), case="keep", n_policy="keep")
    assert kept.tokenizer.decode(torch.from_numpy(kept.segment_tokens(0).astype(np.int64))) == "ACGTacgtNNNNACGTTT"
    assert TokenStore.open(tmp_path / "s2").num_tokens == kept.num_tokens
    fq = tmp_path / "b.fq"
    fq.write_text("@read1\nACGTTGCA\n+\nIIIIIIII\n")
    both = prepare_tokens([p, fq], tmp_path / "s3", CharTokenizer())  # several files, FASTA and FASTQ
    assert [r["name"] for r in both.records] == ["r1", "r2", "r3", "read1"] and both.num_bases == 28


def test_prepare_kmer_chunks_match_whole(tmp_path, monkeypatch):
    from enigma_fast.data import tokens as tokens_mod

    g = _genome(5_000)
    p = tmp_path / "g.fa"
    p.write_text(">g\n" + g + "\n")
    tok = tdata.make_tokenizer(TrainConfig(tokenizer="kmer", k=3))
    whole = prepare_tokens([p], tmp_path / "w", tok).tokens.copy()
    monkeypatch.setattr(tokens_mod, "CHUNK_BASES", 100)  # force chunked tokenizing
    chunked = prepare_tokens([p], tmp_path / "c", tok).tokens
    np.testing.assert_array_equal(whole, chunked)
    assert tok.decode(torch.from_numpy(whole.astype(np.int64))) == g


def test_split_and_eval_windows_cover_held_out_once():
    segments = np.array([[0, 0, 100], [0, 100, 50], [1, 150, 80], [2, 230, 40]])
    train, val = split_segments(segments, 0.25, "position")
    assert train.tolist() == [[0, 100], [100, 12], [150, 60], [230, 30]]
    assert val.tolist() == [[112, 38], [210, 20], [260, 10]]
    train, val = split_segments(segments, 0.25, "record")
    assert val.tolist() == [[230, 40], [150, 80]] or sorted(val.tolist()) == [[150, 80], [230, 40]]
    with pytest.raises(ValueError, match="two records"):
        split_segments(segments[:2], 0.1, "record")
    wins = eval_windows(np.array([[0, 1000], [2000, 7]]), 65, 48)
    scored = []
    for w in wins:
        scored += list(range(w.start + w.score_from, w.start + w.length))
        assert w.length <= 65 and w.score_from >= 1
    assert sorted(scored) == list(range(1, 1000)) + list(range(2001, 2007))


def test_window_sampler_deterministic_and_in_bounds():
    tokens = np.arange(500) % 7
    segs = np.array([[0, 100], [100, 10], [300, 200]])
    s = WindowSampler(tokens, segs, 20, seed=3)
    a, _ = s.batch(5, 64)
    b, _ = s.batch(5, 64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, s.batch(6, 64)[0])
    rows, _ = WindowSampler(np.arange(500), segs, 20, seed=3).batch(1, 256)
    starts = rows[:, 0]
    assert all((0 <= x <= 80) or (300 <= x <= 480) for x in starts)  # never across a segment end
    np.testing.assert_array_equal(rows, starts[:, None] + np.arange(20))
    with pytest.raises(ValueError, match="longer than every training sequence"):
        WindowSampler(tokens, segs, 201, seed=0)


def test_rc_table_reverses_complement():
    for cfg in (TrainConfig(), TrainConfig(tokenizer="kmer", k=3)):
        tok = tdata.make_tokenizer(cfg)
        table = tdata.rc_table(tok)
        s = _genome(300, seed=1)
        ids = np.array(tok.encode(s))
        rc_ids = table[ids][::-1]
        assert tok.decode(rc_ids.tolist()) == reverse_complement(s)


def test_markov_baseline_finds_the_order():
    rng = np.random.default_rng(0)
    # order-2 source: the next base is a function of the two before it, 90% of the time
    seq = list(rng.integers(0, 4, 2))
    for _ in range(60_000):
        nxt = (seq[-1] * 3 + seq[-2]) % 4 if rng.random() < 0.9 else rng.integers(0, 4)
        seq.append(nxt)
    text = "".join("ACGT"[int(c)] for c in seq)
    r = markov_baseline(base_codes([text[:50_000]]), base_codes([text[50_000:]]), orders=range(0, 5))
    assert r.best_order == 2
    assert r.bits[0] > 1.95 and r.best_bits < 0.8
    # uniform random DNA: no order beats 2 bits by much, and Laplace never pays much above it
    u = "".join(rng.choice(list("ACGT"), 40_000))
    r = markov_baseline(base_codes([u[:30_000]]), base_codes([u[30_000:]]), orders=range(0, 4))
    assert 1.99 < r.best_bits < 2.01


def test_lr_schedule():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg) == pytest.approx(1e-4) and lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(5.5e-4) and lr_at(110, cfg) == pytest.approx(1e-4)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 110))


def test_config_precedence_and_files(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text("[train]\nlr = 0.002\nwindow = 64\nmodel_overrides = {d_model = 64}\n")
    cfg = TrainConfig.resolve(file_values=load_config_file(str(f)), flags={"window": 32})
    assert (cfg.lr, cfg.window, cfg.model_overrides, cfg.preset) == (0.002, 32, {"d_model": 64}, "tiny")
    j = tmp_path / "run.json"
    j.write_text(json.dumps({"preset": "enigma-tiny", "max_steps": 7}))
    cfg = TrainConfig.resolve(file_values=load_config_file(str(j)))
    assert (cfg.model, cfg.max_steps) == ("enigma", 7)
    with pytest.raises(ValueError, match="unknown training options: colour"):
        TrainConfig.resolve(flags={"colour": 1})
    with pytest.raises(ValueError, match="unknown preset 'huge'; known: 47m"):
        TrainConfig.resolve(flags={"preset": "huge"})


# ---- checkpoints -----------------------------------------------------------------------------------------------
def test_checkpoint_atomic_and_keep_last(tmp_path, monkeypatch):
    from enigma_fast.models import EnBERTConfig
    from enigma_fast.train import state as state_mod

    model = EnBERT(EnBERTConfig.from_preset("tiny", vocab_size=35, d_model=32, n_head=2, n_layer=1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 35, (2, 8)), torch.randint(0, 35, (2, 8)))[1].backward()
    opt.step()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, opt, {"note": step}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    good = {k: v.clone() for k, v in model.state_dict().items()}

    def crash(*a, **k):
        raise OSError("disk full")

    with torch.no_grad():
        model.tok_emb.weight.add_(1.0)
    monkeypatch.setattr(state_mod, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 4, model, opt, {}, keep_last=2)
    monkeypatch.undo()
    (tmp_path / "checkpoints" / ".tmp-step_0000005").mkdir()  # what a SIGKILL mid-write leaves
    assert latest_checkpoint(tmp_path).name == "step_0000003"
    fresh = EnBERT(model.config)
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    st = load_checkpoint(latest_checkpoint(tmp_path), fresh, opt2)
    assert st["note"] == 3 and st["step"] == 3
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, good[k], rtol=0, atol=0)
    assert opt2.state_dict()["state"][0]["exp_avg"].shape == opt.state_dict()["state"][0]["exp_avg"].shape
    save_checkpoint(tmp_path, 6, model, opt, {}, keep_last=2)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


# ---- runs ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_run(fasta, tmp_path_factory) -> Path:
    """An uninterrupted small run: 120 steps, a checkpoint every 5."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert (
        main(
            [
                str(fasta),
                *SMALL,
                *LAYERS,
                "--max-steps",
                "120",
                "--ckpt-interval",
                "5",
                "--keep-last",
                "30",
                "--eval-interval",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def _run_cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "enigma_fast.train", *args],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.time()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError("the run ended before it could be interrupted:\n" + proc.stdout.read())
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.01)


def test_resume_is_exact(reference_run, fasta, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    for step, path in list_checkpoints(run):
        if step > 60:
            shutil.rmtree(path)
    shutil.rmtree(run / "final")
    assert main(["--resume", str(run)]) == 0
    ref, got = _losses(reference_run), _losses(run)
    assert sorted(got) == list(range(1, 121))
    assert [got[s] for s in range(61, 121)] == [ref[s] for s in range(61, 121)]  # bit-identical floats
    a = load_model(str(reference_run / "final")).state_dict()
    b = load_model(str(run / "final")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_more_steps_trains_on(reference_run, tmp_path):
    """--resume RUN --max-steps N past a finished run trains to N, and the run's saved config stays as written."""
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    saved = (run / "train_config.json").read_bytes()
    assert main(["--resume", str(run), "--max-steps", "126"]) == 0
    s = json.loads((run / "summary.json").read_text())
    assert (s["step"], s["max_steps"]) == (126, 126)
    # recorded: the new length, and the earlier schedule's time limit (the tiny preset's max_time) dropped with it
    assert s["resumes"] == [{"step": 120, "changed": {"max_steps": [120, 126], "max_time": [570.0, 0.0]}}]
    assert sorted(_losses(run)) == list(range(1, 127))
    assert latest_checkpoint(run).name == "step_0000126"
    assert (run / "train_config.json").read_bytes() == saved  # the original options, as the run started
    # a plain resume continues with the options of the last checkpoint: nothing left to train
    assert main(["--resume", str(run)]) == 0
    assert json.loads((run / "summary.json").read_text())["step"] == 126
    # fewer steps than the run has made: a clear error, nothing changed
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["--resume", str(run), "--max-steps", "100"]) == 2
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_interrupted_run_resumes_exactly(how, reference_run, fasta, tmp_path):
    run = tmp_path / "run"
    proc = _run_cli(
        [
            str(fasta),
            *SMALL,
            *LAYERS,
            "--max-steps",
            "120",
            "--ckpt-interval",
            "5",
            "--keep-last",
            "30",
            "--eval-interval",
            "0",
            "--out",
            str(run),
        ]
    )
    _wait_for(lambda: latest_checkpoint(run) is not None, proc)
    proc.send_signal(getattr(signal, how))
    out, _ = proc.communicate(timeout=120)
    if how == "SIGINT":
        assert proc.returncode == 128 + signal.SIGINT, out
        assert "saving a checkpoint" in out
        stopped = json.loads((run / "summary.json").read_text())["step"]
        assert latest_checkpoint(run).name == f"step_{stopped:07d}"  # saved where it stopped
    else:
        assert proc.returncode == -signal.SIGKILL
    last = latest_checkpoint(run)
    assert last is not None and not (run / "final").exists()
    # every checkpoint left behind is complete and loads
    for _, ck in list_checkpoints(run):
        load_model(str(ck / "model"))
    assert main(["--resume", str(run)]) == 0
    assert not list((run / "checkpoints").glob(".tmp-*"))
    ref, got = _losses(reference_run), _losses(run)
    assert sorted(got) == list(range(1, 121))  # no step missing or repeated
    assert got == ref
    a = load_model(str(reference_run / "final")).state_dict()
    b = load_model(str(run / "final")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_default_run_end_to_end(tmp_path):
    """The zero-config command with a reduced step count (and a smaller held-out part to keep it fast)."""
    run = tmp_path / "default"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "enigma_fast.train",
            "--time-budget",
            "0",
            "--max-steps",
            "6",
            "--eval-interval",
            "3",
            "--log-interval",
            "2",
            "--window",
            "64",
            "--batch-size",
            "4",
            "--val-fraction",
            "0.01",
            "--eval-windows",
            "4",
            "--sample-tokens",
            "30",
            "--out",
            str(run),
        ],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out bits/base:" in proc.stdout and "Markov baseline:" in proc.stdout
    assert "sampled continuation:" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    try:
        import pyrodigal  # noqa: F401
    except ImportError:
        assert "codon" not in summary
    else:  # the codon evaluation of the held-out genes, beside the baseline's Markov order
        assert "codon rhythm:" in proc.stdout and f"order-{summary['baseline']['order']} Markov" in proc.stdout
        c = summary["codon"]
        assert c["genes"] > 0 and c["markov"]["order"] == summary["baseline"]["order"]
        assert sum(c["model"]["sense"]["bases"]) == sum(c["markov"]["sense"]["bases"]) > 10_000
    assert summary["step"] == 6 and 1.5 < summary["val"]["bpb"] < 4.0
    assert 1.9 < summary["baseline"]["bpb"] < 2.0  # order-k Markov on the shipped genome
    rows = read_metrics(run / "metrics.csv")
    assert [int(r["step"]) for r in rows if r["kind"] == "train"] == [2, 4, 6]
    assert [int(r["step"]) for r in rows if r["kind"] == "val"] == [3, 6]
    assert (run / "loss.png").stat().st_size > 1000
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        pass
    else:
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    model = EnBERT.from_pretrained(run / "final")
    assert model.config.d_model == 128 and model.tokenizer is not None and model.tokenizer.k == 3
    cfg = json.loads((run / "train_config.json").read_text())
    assert cfg["preset"] == "tiny" and cfg["tokenizer"] == "kmer" and cfg["k"] == 3 and cfg["data"] == []
    gen = subprocess.run(
        [
            sys.executable,
            "-m",
            "enigma_fast.generate",
            "--model",
            str(run / "final"),
            "--prompt",
            "ACGTACGTGG",
            "--max-new-tokens",
            "20",
            "--seed",
            "0",
        ],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gen.returncode == 0, gen.stderr
    lines = gen.stdout.splitlines()
    assert (
        lines[0].startswith(">sample_1") and lines[1].startswith("ACGTACGTGG") and 10 < len(lines[1]) <= 10 + 20 * 3
    )  # 3-mers


@pytest.mark.parametrize(
    "extra",
    [
        ["--tokenizer", "kmer", "--k", "3", "--rc-augment", "0.5", *LAYERS],
        [
            "--preset",
            "enigma-tiny",
            "--grad-accum",
            "2",
            "--model-override",
            "n_encoder_layer=1",
            "--model-override",
            "n_decoder_layer=1",
        ],
    ],
)
def test_kmer_and_enigma_runs(extra, fasta, tmp_path):
    run = tmp_path / "run"
    assert (
        main(
            [
                str(fasta),
                *SMALL,
                "--max-steps",
                "4",
                "--eval-interval",
                "2",
                "--out",
                str(run),
                "--model-override",
                "max_rel_pos=16",
                *extra,
            ]
        )
        == 0
    )
    s = json.loads((run / "summary.json").read_text())
    held_out = sum(r for r in [round(0.1 * 16_000), round(0.1 * 8_000)])
    assert 0.9 * held_out < s["val"]["bases"] <= held_out  # counted per base, whatever the tokens
    assert s["val"]["bpb"] > 1.0 and len(s["sample"]["continuation"]) > 0
    load_model(str(run / "final"))


def test_ddp_matches_single_process(fasta, tmp_path):
    common = [str(fasta), *SMALL, *LAYERS, "--max-steps", "8", "--eval-interval", "0", "--sample-tokens", "0"]
    single = tmp_path / "one"
    assert main([*common, "--batch-size", "4", "--out", str(single)]) == 0
    double = tmp_path / "two"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "enigma_fast.train",
            *common,
            "--batch-size",
            "2",
            "--out",
            str(double),
        ],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _losses(single), _losses(double)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    np.testing.assert_allclose([float(b[s]) for s in a], [float(a[s]) for s in a], rtol=2e-5)
    va = float(_losses(single, "val")[8])
    assert float(_losses(double, "val")[8]) == pytest.approx(va, rel=1e-4)


# ---- bad input: a clear error before any training --------------------------------------------------------------
@pytest.mark.parametrize(
    "case", ["missing", "empty", "headers_only", "not_dna", "protein", "preset", "model_preset", "window", "folder"]
)
def test_bad_input_fails_before_training(case, tmp_path, caplog):
    f = tmp_path / "in.fa"
    args, expect = [str(f)], ""
    if case == "missing":
        f = tmp_path / "nope.fa"
        args, expect = [str(f)], "sequence file not found"
    elif case == "empty":
        f.write_text("")
        expect = "no sequences found"
    elif case == "headers_only":
        f.write_text(">a\n>b\n")
        expect = "no usable bases"
    elif case == "not_dna":
        f.write_text("Dear reader,\nthis is a letter.\n")
        expect = "cannot read record"
    elif case == "protein":
        f.write_text(">p\nMKVLAAGIVGLLLAQ\n")
        expect = "not a DNA letter"
    elif case == "preset":
        f.write_text(">a\n" + _genome(2000) + "\n")
        args, expect = [str(f), "--preset", "gigantic"], "unknown preset 'gigantic'"
    elif case == "model_preset":
        f.write_text(">a\n" + _genome(2000) + "\n")
        args, expect = [str(f), "--model-preset", "gigantic"], "unknown EnBERTConfig preset 'gigantic'"
    elif case == "window":
        f.write_text(">a\n" + _genome(2000) + "\n")
        args, expect = [str(f), "--window", "512"], "window of 512 tokens"
    elif case == "folder":
        args, expect = [str(tmp_path)], "not a prepared token folder"
    run = tmp_path / "run"
    with caplog.at_level("ERROR"):
        assert main([*args, "--out", str(run), "--threads", "1"]) == 2
    assert expect in caplog.text
    assert not (run / "checkpoints").exists() and not (run / "metrics.csv").exists()
    if case not in ("preset", "model_preset", "window"):  # a bad file leaves no run folder behind
        assert not run.exists()


@pytest.mark.parametrize(
    "case",
    [
        "override_type",
        "override_bool",
        "override_form",
        "config_type",
        "config_toml",
        "device",
        "resume_not_a_run",
        "prepare_k",
        "prepare_missing",
        "flag_type",
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(case, fasta, tmp_path, caplog, capsys):
    run = str(tmp_path / "run")
    conf = tmp_path / "run.toml"
    argv, expect = {
        "override_type": ([str(fasta), "--model-override", "d_model=abc"], "d_model must be an integer, got 'abc'"),
        "override_bool": ([str(fasta), "--model-override", "tie_embeddings=no"], "tie_embeddings must be true or"),
        "override_form": ([str(fasta), "--model-override", "d_model"], "--model-override must be KEY=VALUE"),
        "config_type": ([str(fasta), "--config", str(conf)], "lr must be a finite number, got 'fast'"),
        "config_toml": ([str(fasta), "--config", str(conf)], "is not valid TOML"),
        "device": ([str(fasta), "--device", "tpu:7"], "device must be"),
        "resume_not_a_run": (["--resume", str(tmp_path)], "not a run folder"),
        "prepare_k": (["prepare", str(fasta), "--out", run, "--tokenizer", "kmer", "--k", "20"], "k must be in [1, 8]"),
        "prepare_missing": (["prepare", str(tmp_path / "nope.fa"), "--out", run], "sequence file not found"),
        "flag_type": ([str(fasta), "--max-steps", "many"], "invalid int value: 'many'"),
    }[case]
    conf.write_text('lr = "fast"\n' if case == "config_type" else "lr = = 1\n")
    if argv[0] != "prepare" and "--resume" not in argv:
        argv = [*argv, "--out", run, "--threads", "1"]
    with caplog.at_level("ERROR"):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
    assert code == 2
    err = capsys.readouterr().err + caplog.text
    assert expect in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(run)


def test_cli_user_error_has_no_traceback(fasta, tmp_path):
    for args in (
        [str(fasta), "--model-override", "d_model=abc", "--out", str(tmp_path / "run")],
        ["prepare", str(fasta), "--out", str(tmp_path / "s"), "--k", "99"],
    ):
        p = subprocess.run(
            [sys.executable, "-m", "enigma_fast.train", *args],
            env=ENV,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_prepare_command_and_prepared_input(fasta, tmp_path):
    store_dir = tmp_path / "store"
    assert main(["prepare", str(fasta), "--out", str(store_dir), "--tokenizer", "kmer", "--k", "2"]) == 0
    store = TokenStore.open(store_dir)
    assert store.tokenizer.k == 2 and store.num_bases == 24_000 and store.num_tokens == 12_000
    run = tmp_path / "run"
    assert main([str(store_dir), *SMALL, *LAYERS, "--max-steps", "2", "--eval-interval", "0", "--out", str(run)]) == 0
    assert load_model(str(run / "final")).tokenizer.k == 2


def test_time_budget_fits_the_step_count(fasta, tmp_path):
    run = tmp_path / "run"
    assert (
        main(
            [
                str(fasta),
                *SMALL,
                *LAYERS,
                "--time-budget",
                "3",
                "--warmup-steps",
                "50",
                "--max-steps",
                "100000",
                "--eval-interval",
                "0",
                "--sample-tokens",
                "0",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    s = json.loads((run / "summary.json").read_text())
    assert 50 < s["max_steps"] < 100000 and s["step"] == s["max_steps"]
    state = json.loads((latest_checkpoint(run) / "trainer_state.json").read_text())
    assert state["planned_steps"] == s["max_steps"]  # a resume keeps the fitted schedule
