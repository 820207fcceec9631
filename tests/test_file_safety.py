"""What the library never does to a user's files, and never loads silently (issue 11).

Every writer (the token store of ``prepare``, a training run's folder, ``save_pretrained``) writes into a fresh
temporary sibling and renames it into place; it replaces only what the library itself wrote before and refuses,
with one clear error, a target that holds anything else. A checkpoint loads only when its tensors are exactly
those its config implies.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from enigma_fast.data.tokens import TokenStore, prepare_tokens
from enigma_fast.models import EnBERT, EnBERTConfig, load_model
from enigma_fast.tokenizers import CharTokenizer
from enigma_fast.train.__main__ import main as train_main

# a small model and short windows, as in test_train.py: a step takes milliseconds
SMALL = [
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
    "--sample-tokens",
    "0",
    "--warmup-steps",
    "1",
    "--time-budget",
    "0",
    "--max-steps",
    "1",
    "--eval-interval",
    "0",
]


def _fasta(path: Path, n: int = 4000) -> Path:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(">r1\n" + "".join(rng.choice(list("ACGT"), n)) + "\n")
    return path


def _tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name -> content)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _model(tie: bool = True, seed: int = 0) -> EnBERT:
    torch.manual_seed(seed)
    cfg = EnBERTConfig.from_preset(
        "tiny",
        vocab_size=CharTokenizer().vocab_size,
        d_model=32,
        n_head=2,
        n_layer=1,
        max_rel_pos=8,
        tie_embeddings=tie,
    )
    return EnBERT(cfg).eval()


# ---- the trainer and prepare -----------------------------------------------------------------------------------
def test_train_never_deletes_the_files_of_its_data_folder(tmp_path, caplog):
    run = tmp_path / "run"
    fa = _fasta(run / "data" / "in.fa")  # the input itself sits where the run would put its token store
    (run / "data" / "notes.txt").write_text("mine")
    before = _tree(run)
    with caplog.at_level("ERROR"):
        assert train_main([str(fa), *SMALL, "--out", str(run)]) == 2
    assert _tree(run) == before
    assert "data" in caplog.text and "Traceback" not in caplog.text


def test_prepare_never_deletes_an_existing_folder(tmp_path, monkeypatch, caplog):
    fa = _fasta(tmp_path / "in" / "g.fa")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with caplog.at_level("ERROR"):
        assert train_main(["prepare", str(fa), "--out", str(out)]) == 2
    assert _tree(out) == {"keep.txt": b"mine"}
    assert "keep.txt" in caplog.text
    # --out . must never empty the working directory
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(work)
    assert train_main(["prepare", str(fa), "--out", "."]) == 2
    assert _tree(work) == {"thesis.tex": b"years of work"}
    assert sorted(os.listdir(tmp_path)) == ["in", "out", "work"]  # no temporary sibling left behind


def test_prepare_fills_an_empty_folder_and_replaces_its_own_store(tmp_path, monkeypatch):
    fa = _fasta(tmp_path / "g.fa")
    out = tmp_path / "store"
    out.mkdir()
    inode = out.stat().st_ino
    assert train_main(["prepare", str(fa), "--out", str(out)]) == 0
    assert out.stat().st_ino == inode  # the user's empty folder is kept, and filled
    assert TokenStore.open(out).tokenizer.k == 1
    assert train_main(["prepare", str(fa), "--out", str(out), "--tokenizer", "kmer", "--k", "2"]) == 0
    assert TokenStore.open(out).tokenizer.k == 2  # a store it wrote itself is replaced
    # a store it wrote, with a file of the user's added: refused, nothing removed
    (out / "README").write_text("mine")
    before = _tree(out)
    with pytest.raises(FileExistsError, match="README"):
        prepare_tokens([fa], out, CharTokenizer())
    assert _tree(out) == before
    # a crash mid-write leaves the previous store as it was
    from enigma_fast.data import tokens as tokens_mod

    (out / "README").unlink()
    before = _tree(out)

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tokens_mod, "_encode", crash)
    with pytest.raises(OSError, match="disk full"):
        prepare_tokens([fa], out, CharTokenizer())
    assert _tree(out) == before
    assert sorted(os.listdir(tmp_path)) == ["g.fa", "store"]


def test_prepare_refuses_a_file_as_its_target(tmp_path):
    fa = _fasta(tmp_path / "g.fa")
    with pytest.raises(FileExistsError, match="not a folder"):
        prepare_tokens([fa], fa, CharTokenizer())
    assert fa.read_text().startswith(">r1\n")


def test_fresh_run_refuses_run_files_it_did_not_write(tmp_path, caplog):
    fa = _fasta(tmp_path / "g.fa")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("my,own,table\n")
    with caplog.at_level("ERROR"):
        assert train_main([str(fa), *SMALL, "--out", str(run)]) == 2
    assert _tree(run) == {"metrics.csv": b"my,own,table\n"}
    assert "metrics.csv" in caplog.text


# ---- save_pretrained -------------------------------------------------------------------------------------------
def test_written_folders_get_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    _model().save_pretrained(tmp_path / "ckpt")
    prepare_tokens([_fasta(tmp_path / "g.fa")], tmp_path / "store", CharTokenizer())
    for name in ("ckpt", "store"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0o700


def test_save_pretrained_keeps_other_files(tmp_path):
    model = _model()
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        model.save_pretrained(folder)
    assert _tree(folder) == {"notes.txt": b"mine"}
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_save_pretrained_never_renames_a_file(tmp_path):
    target = tmp_path / "model"
    target.write_text("a file of the user's")
    with pytest.raises(FileExistsError, match="not a folder"):
        _model().save_pretrained(target)
    assert target.read_text() == "a file of the user's"
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no hidden .model.old


def test_save_pretrained_replaces_its_own_save_and_survives_a_crash(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    inode = folder.stat().st_ino
    _model(seed=1).save_pretrained(folder, tokenizer=CharTokenizer())  # an empty folder is filled in place
    assert folder.stat().st_ino == inode
    _model(seed=2).save_pretrained(folder)  # its own save is replaced (without the tokenizer now)
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"]
    before = _tree(folder)
    from enigma_fast.models import checkpoint as ckpt_mod

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        _model(seed=3).save_pretrained(folder)
    assert _tree(folder) == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    monkeypatch.undo()
    loaded = load_model(str(folder))
    a, b = loaded.state_dict(), _model(seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- loading: the tensors must be exactly those the config implies --------------------------------------------
def _edit_config(folder: Path, **changes) -> None:
    f = folder / "config.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), **changes}))


def test_tied_config_with_distinct_head_refuses_to_load(tmp_path):
    folder = tmp_path / "ckpt"
    _model(tie=False).save_pretrained(folder)
    assert "lm_head.weight" in load_file(str(folder / "model.safetensors"))
    _edit_config(folder, tie_embeddings=True)  # config and weights now disagree
    with pytest.raises(ValueError, match="unexpected tensors: lm_head.weight"):
        load_model(str(folder))


def test_untied_config_without_head_refuses_to_load(tmp_path):
    folder = tmp_path / "ckpt"
    _model(tie=True).save_pretrained(folder)
    _edit_config(folder, tie_embeddings=False)
    with pytest.raises(ValueError, match="missing tensors: lm_head.weight"):
        load_model(str(folder))


def test_wrong_dtype_or_shape_refuses_to_load(tmp_path):
    folder = tmp_path / "ckpt"
    _model().save_pretrained(folder)
    good = load_file(str(folder / "model.safetensors"))
    bad = dict(good)
    bad["norm_f.weight"] = torch.ones_like(good["norm_f.weight"], dtype=torch.int32)
    save_file(bad, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="norm_f.weight"):
        load_model(str(folder))
    bad = dict(good)
    bad["norm_f.weight"] = torch.ones(good["norm_f.weight"].numel() + 1)
    save_file(bad, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"norm_f.weight: checkpoint \(33,\), model \(32,\)"):
        load_model(str(folder))
    # another floating-point precision is a conversion, not a different model: it loads
    save_file({k: v.to(torch.bfloat16) for k, v in good.items()}, str(folder / "model.safetensors"))
    load_model(str(folder))


def test_unreadable_checkpoint_files_raise_value_errors(tmp_path):
    folder = tmp_path / "ckpt"
    _model().save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="model.safetensors"):
        load_model(str(folder))
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json"):
        load_model(str(folder))
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        load_model(str(folder))


@pytest.mark.parametrize(
    "field,value", [("tie_embeddings", "false"), ("n_layer", "1"), ("d_model", 32.0), ("dropout", "0.1")]
)
def test_config_field_of_the_wrong_type_refuses_to_load(field, value, tmp_path):
    """Needs the type checks of ``EnBERTConfig.from_dict`` (enigma_fast/models/config.py): "false" is not False."""
    folder = tmp_path / "ckpt"
    _model().save_pretrained(folder)
    _edit_config(folder, **{field: value})
    with pytest.raises(ValueError, match=field):
        load_model(str(folder))
