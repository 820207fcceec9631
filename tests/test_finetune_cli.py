"""The fine-tuning and prediction commands: ``python -m enigma_fast.finetune`` and ``python -m enigma_fast.predict``
end to end on tiny data, their files, and the one-line errors (exit code 2) of bad input; nothing is overwritten."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from enigma_fast.cli.finetune import main as finetune_main
from enigma_fast.cli.predict import main as predict_main
from enigma_fast.models import EnBERT, EnBERTConfig
from enigma_fast.tokenizers import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--threads", "1", "--dtype", "float32", "--no-progress", "--batch-size", "8"]


def _write(path: Path, rows, header=("sequence", "label")) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return str(path)


def _seqs(n: int, rng, length=(20, 33)) -> list[str]:
    return ["".join(rng.choice(list("ACGT"), int(rng.integers(*length)))) for _ in range(n)]


@pytest.fixture(scope="module")
def pre(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pre") / "final"
    tok = CharTokenizer(case="upper")
    torch.manual_seed(0)
    EnBERT(
        EnBERTConfig.from_preset("tiny", vocab_size=tok.vocab_size, d_model=16, n_head=2, n_layer=1)
    ).save_pretrained(path, tok)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 24), ("valid", 8), ("test", 8)):
        seqs = _seqs(n, rng)
        out[split] = _write(d / f"{split}.csv", [(s, str(i % 3)) for i, s in enumerate(seqs)])
        out[f"{split}_reg"] = _write(d / f"{split}_reg.csv", [(s, f"{s.count('G') / len(s):.3f}") for s in seqs])
        out[f"{split}_tok"] = _write(
            d / f"{split}_tok.csv", [(s, "".join("1" if c in "GC" else "0" for c in s)) for s in seqs]
        )
    with open(d / "reads.fa", "w") as f:
        for i, s in enumerate(_seqs(5, rng, (30, 90))):
            f.write(f">read{i} some description\n{s}\n")
    out["fasta"] = str(d / "reads.fa")
    return out


def _ft(pre, files, out, task="classification", suffix="", extra=()) -> list[str]:
    return [
        "--model", pre, "--task", task, "--out", str(out), "--max-steps", "3",
        "--train", files[f"train{suffix}"], "--valid", files[f"valid{suffix}"], "--test", files[f"test{suffix}"],
        *FAST, *extra,
    ]  # fmt: skip


def _one_line_error(capsys, code: int, *want: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    last = err.splitlines()[-1]
    assert "Traceback" not in err and last.startswith(
        ("python -m enigma_fast.finetune: error:", "python -m enigma_fast.predict: error:")
    )
    for w in want:
        assert w in last, last
    return last


@pytest.mark.parametrize(
    "task, suffix", [("classification", ""), ("regression", "_reg"), ("token-classification", "_tok")]
)
def test_finetune_and_predict(tmp_path, capsys, pre, files, task, suffix):
    out = tmp_path / "ft"
    assert finetune_main(_ft(pre, files, out, task, suffix)) == 0
    printed = capsys.readouterr().out
    assert "test:" in printed and str(out) in printed
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "metrics.csv"} <= set(os.listdir(out))
    if task == "token-classification":
        for name in ("p.bedgraph", "p.npz"):
            assert (
                predict_main(["--model", str(out), files["fasta"], "--out", str(tmp_path / name), "--dtype", "float32"])
                == 0
            )
        lines = (tmp_path / "p.bedgraph").read_text().splitlines()
        assert lines[0].startswith('track type=bedGraph name="p_1"')
        rows = [ln.split("\t") for ln in lines[1:]]
        assert rows[0][0] == "read0" and rows[0][1] == "0"
        npz = np.load(tmp_path / "p.npz")
        lengths = [len(s) for s in open(files["fasta"]).read().split("\n")[1::2]]
        assert list(np.diff(npz["offsets"])) == lengths and npz["probs"].shape == (sum(lengths), 2)
        # the bedGraph runs cover every base of every record once
        per = {}
        for chrom, a, b, _ in rows:
            per[chrom] = per.get(chrom, 0) + int(b) - int(a)
        assert list(per.values()) == lengths
    else:
        assert (
            predict_main(["--model", str(out), files["fasta"], "--out", str(tmp_path / "p.tsv"), "--dtype", "float32"])
            == 0
        )
        rows = list(csv.reader(open(tmp_path / "p.tsv"), delimiter="\t"))
        want = ["id", "prediction", "p_0", "p_1", "p_2"] if task == "classification" else ["id", "value"]
        assert rows[0] == want and [r[0] for r in rows[1:]] == [f"read{i}" for i in range(5)]
        if task == "classification":
            probs = np.array([[float(x) for x in r[2:]] for r in rows[1:]])
            np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
            assert [r[1] for r in rows[1:]] == [str(int(p.argmax())) for p in probs]
        # stdout when no --out; a CSV input too
        capsys.readouterr()
        assert predict_main(["--model", str(out), files["test"], "--dtype", "float32"]) == 0
        assert capsys.readouterr().out.splitlines()[0].split("\t") == want


def test_lora_and_probe_and_resume_flags(tmp_path, capsys, pre, files):
    pytest.importorskip("peft")
    assert finetune_main(_ft(pre, files, tmp_path / "lora", extra=("--mode", "lora", "--lora-r", "2"))) == 0
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    assert predict_main(["--model", str(tmp_path / "lora"), files["fasta"], "--out", str(tmp_path / "l.tsv")]) == 0
    code = finetune_main(["--resume", str(tmp_path / "lora"), "--model", pre])
    _one_line_error(capsys, code, "--resume continues a run with its saved options; drop --model")
    code = finetune_main(["--resume", str(tmp_path / "lora")])
    _one_line_error(capsys, code, "holds a finished run")


@pytest.mark.parametrize(
    "case, want",
    [
        ("bad-regression", "line 3: regression label must be a number, got 'high'"),
        ("missing-class", "label '9' is not a class of the training file (0, 1, 2)"),
        ("empty", "holds no records"),
        ("token-length", "per-base labels must be one class character per base: 4 bases, got 3 labels"),
        ("unknown-task", "argument --task: invalid choice: 'ranking'"),
        ("no-model", "--model folder not found"),
        ("missing-args", "--train, --valid"),
        ("one-class", "needs at least 2 classes in the training file"),
    ],
)
def test_finetune_errors_are_one_line(tmp_path, capsys, pre, files, case, want):
    task, f = "classification", dict(files)
    if case == "bad-regression":
        task = "regression"
        f["train"] = _write(tmp_path / "t.csv", [("ACGTAC", "0.5"), ("ACGTTT", "high")])
    elif case == "missing-class":
        f["valid"] = _write(tmp_path / "v.csv", [("ACGTAC", "9")])
    elif case == "empty":
        f["train"] = str(tmp_path / "empty.csv")
        Path(f["train"]).write_text("")
    elif case == "token-length":
        task = "token-classification"
        f["train"] = _write(tmp_path / "t.csv", [("ACGT", "0101"), ("ACGT", "010")])
    elif case == "one-class":
        f["train"] = _write(tmp_path / "t.csv", [("ACGTAC", "1"), ("ACGTTT", "1")])
    argv = _ft(pre, f, tmp_path / "out", task)
    if case == "unknown-task":
        argv[argv.index("--task") + 1] = "ranking"
        with pytest.raises(SystemExit) as e:
            finetune_main(argv)
        _one_line_error(capsys, e.value.code, want)
        return
    if case == "no-model":
        argv[argv.index("--model") + 1] = str(tmp_path / "nope")
    if case == "missing-args":
        argv = ["--model", pre, "--task", task, "--out", str(tmp_path / "out")]
    _one_line_error(capsys, finetune_main(argv), want)
    assert not (tmp_path / "out" / "config.json").exists()


def test_nothing_is_overwritten(tmp_path, capsys, pre, files):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    _one_line_error(capsys, finetune_main(_ft(pre, files, out)), "is not empty")
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    _one_line_error(capsys, finetune_main(_ft(pre, files, tmp_path / "file")), "exists and is not a folder")
    ft = tmp_path / "ft"
    assert finetune_main(_ft(pre, files, ft)) == 0
    capsys.readouterr()
    target = tmp_path / "p.tsv"
    target.write_text("old")
    _one_line_error(capsys, predict_main(["--model", str(ft), files["fasta"], "--out", str(target)]), "pass --force")
    assert target.read_text() == "old"
    assert predict_main(["--model", str(ft), files["fasta"], "--out", str(target), "--force"]) == 0
    assert target.read_text().startswith("id\tprediction")
    code = predict_main(["--model", str(ft), files["fasta"], "--out", files["fasta"], "--force"])
    _one_line_error(capsys, code, "is the input file")
    _one_line_error(
        capsys,
        predict_main(["--model", str(ft), files["fasta"], "--out", str(tmp_path / "x.bedgraph")]),
        "tracks are for token-classification",
    )
    _one_line_error(capsys, predict_main(["--model", pre, files["fasta"]]), "no 'finetune' section")
    _one_line_error(capsys, predict_main(["--model", str(ft), str(tmp_path / "none.fa")]), "sequence file not found")


def test_module_entry_points():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    for module in ("enigma_fast.finetune", "enigma_fast.predict"):
        out = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env, timeout=300
        )
        assert out.returncode == 0 and f"python -m {module}" in out.stdout, out.stderr
