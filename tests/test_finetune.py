"""Fine-tuning (``enigma_fast.finetune``): heads and pooling on both models and both tokenizers, padding, LoRA through
peft, the folder format, exact resume, metrics against scikit-learn, labelled files and their errors, predictions,
the benchmark builder (its split against the trainer's) and the baselines. Tiny models and tiny data."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from enigma_fast.finetune import (
    FinetuneConfig,
    baselines,
    benchmark,
    finetune,
    load_finetuned,
    predict,
    read_labelled,
    save_finetuned,
)
from enigma_fast.finetune.data import class_names, collate, encode, label_indices
from enigma_fast.finetune.folder import FinetuneSpec, build_model, lora_section
from enigma_fast.finetune.heads import align_left
from enigma_fast.finetune.metrics import classification_metrics, regression_metrics, roc_auc
from enigma_fast.models import EnBERT, EnBERTConfig, Enigma, EnigmaConfig
from enigma_fast.tokenizers import CharTokenizer, KMerTokenizer

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 64


def _tok(kind: str):
    if kind == "char":
        return CharTokenizer(case="upper")
    tok = KMerTokenizer(k_mers=3, case="upper")
    tok.build_vocab(["".join(p) for p in itertools.product("ACGT", repeat=3)])
    return tok


def _backbone(kind: str, tok, seed: int = 0):
    torch.manual_seed(seed)
    common = dict(vocab_size=tok.vocab_size, d_model=32, n_head=2, max_rel_pos=16, block_size=BLOCK)
    if kind == "enbert":
        m = EnBERT(EnBERTConfig.from_preset("tiny", n_layer=2, **common))
    else:
        m = Enigma(EnigmaConfig.from_preset("tiny", n_encoder_layer=2, n_decoder_layer=1, bos_id=tok.bos_id, **common))
    with torch.no_grad():  # weights well above the init scale: states that depend on the context
        for p in m.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    m.tokenizer = tok
    return m


def _dna(n: int, rng: np.random.Generator) -> str:
    return "".join(rng.choice(list("ACGT"), n))


def _spec(task: str, **kw) -> FinetuneSpec:
    labels = {"classification": ["a", "b", "c"], "regression": [], "token-classification": ["0", "1"]}[task]
    pooling = None if task == "token-classification" else kw.pop("pooling", "mean")
    return FinetuneSpec(task=task, labels=labels, pooling=pooling, head_dropout=0.0, **kw)


def _ids(tok, seqs):
    return [tok.encode_tensor(s) for s in seqs]


# ------------------------------------------------------------------------------------------------------------
# heads, pooling, padding
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
@pytest.mark.parametrize("tk", ["char", "kmer"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_sequence_head_shapes_and_padding(kind, tk, pooling):
    tok = _tok(tk)
    model = build_model(_backbone(kind, tok), _spec("classification", pooling=pooling)).eval()
    rng = np.random.default_rng(1)
    seqs = [_dna(n, rng) for n in (40, 17, 33, 61)]
    alone = []
    with torch.no_grad():
        for s in seqs:
            logits, _ = model(tok.encode_tensor(s)[None])
            alone.append(logits[0])
        alone = torch.stack(alone)
        assert alone.shape == (4, 3)
        enc = encode(tok, _data(seqs, ["a"] * 4), task="classification", classes=["a", "b", "c"])
        b = collate(enc, range(4), tok.pad_id, "classification")
        left, loss = model(b.input_ids, b.attention_mask, b.labels)
        assert loss is not None and loss.ndim == 0
        torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-5)
        # right padding (another pad value too): the same outputs
        right, mask = _right_padded(b.input_ids, b.attention_mask, pad=0)
        torch.testing.assert_close(model(right, mask)[0], alone, atol=1e-5, rtol=1e-5)


def _right_padded(ids, mask, pad):
    out, m = torch.full_like(ids, pad), torch.zeros_like(mask)
    for i in range(ids.shape[0]):
        row = ids[i][mask[i].bool()]
        out[i, : len(row)] = row
        m[i, : len(row)] = 1
    return out, m


def _data(seqs, labels, source="mem"):
    from enigma_fast.finetune.data import LabelledData

    return LabelledData(
        [f"s{i}" for i in range(len(seqs))],
        list(seqs),
        list(labels),
        source,
        [f"line {i + 2}" for i in range(len(seqs))],
    )


def test_pooling_is_what_it_says():
    tok = _tok("char")
    bb = _backbone("enbert", tok)
    rng = np.random.default_rng(2)
    s = _dna(30, rng)
    with torch.no_grad():
        from enigma_fast.finetune.heads import backbone_states

        h = backbone_states(bb.eval(), tok.encode_tensor(s)[None], None)[0]  # (T, d)
        for pooling, z in (("last", h[-1]), ("mean", h.mean(0))):
            m = build_model(bb, _spec("classification", pooling=pooling)).eval()
            logits, _ = m(tok.encode_tensor(s)[None])
            torch.testing.assert_close(logits[0], m.head(z), atol=1e-6, rtol=1e-6)
        # the last token of a causal model has read every token; the first only itself
        s2 = s[:-1] + ("A" if s[-1] != "A" else "C")
        h2 = backbone_states(bb, tok.encode_tensor(s2)[None], None)[0]
        assert torch.equal(h2[:-1], h[:-1]) and not torch.allclose(h2[-1], h[-1])


@pytest.mark.parametrize("kind", ["enbert", "enigma"])
@pytest.mark.parametrize("tk", ["char", "kmer"])
def test_token_head_per_base_and_padding(kind, tk):
    tok = _tok(tk)
    model = build_model(_backbone(kind, tok), _spec("token-classification")).eval()
    rng = np.random.default_rng(3)
    seqs = [_dna(n, rng) for n in (31, 50, 8)]
    labels = ["".join(rng.choice(list("01"), len(s))) for s in seqs]
    enc = encode(tok, _data(seqs, labels), task="token-classification", classes=["0", "1"])
    b = collate(enc, range(3), tok.pad_id, "token-classification")
    with torch.no_grad():
        per_base, loss = model(b.input_ids, b.attention_mask, b.labels, b.base_token_index)
        assert per_base.shape == (3, 50, 2) and torch.isfinite(loss)
        for i, s in enumerate(seqs):
            ids = tok.encode_tensor(s)
            per_tok, _ = model(ids[None])
            assert per_tok.shape == (1, len(ids), 2)
            bpt = {"char": 1, "kmer": 3}[tk]
            # every base carries its token's logits (a k-mer's 3 bases the same; a short tail its own letters)
            spread = per_tok[0][torch.from_numpy(enc.base_token[i])]
            torch.testing.assert_close(per_base[i, : len(s)], spread, atol=1e-5, rtol=1e-5)
            if bpt == 3 and len(s) >= 6:
                assert torch.equal(per_base[i, 0], per_base[i, 2])
        # right-padded input: per-token outputs come back in the input's columns
        right, mask = _right_padded(b.input_ids, b.attention_mask, pad=0)
        got, _ = model(right, mask)
        want, _ = model(b.input_ids, b.attention_mask)
        for i in range(3):
            torch.testing.assert_close(
                got[i][mask[i].bool()], want[i][b.attention_mask[i].bool()], atol=1e-5, rtol=1e-5
            )
        # the loss counts each labelled base once; padding (-100) none
        flat = per_base.reshape(-1, 2)
        keep = b.labels.reshape(-1) >= 0
        ref = torch.nn.functional.cross_entropy(flat[keep], b.labels.reshape(-1)[keep])
        torch.testing.assert_close(loss, ref)


def test_regression_head_units():
    tok = _tok("char")
    spec = FinetuneSpec(task="regression", labels=[], pooling="mean", head_dropout=0.0, label_mean=5.0, label_std=2.0)
    m = build_model(_backbone("enbert", tok), spec).eval()
    x = tok.encode_tensor("ACGTACGTTT")[None]
    y = torch.tensor([7.0])
    with torch.no_grad():
        pred, loss = m(x, None, y)
        raw = m.head(m.pool(m._states(x, None)[0], None))
        torch.testing.assert_close(pred, raw * 2.0 + 5.0)
        torch.testing.assert_close(loss, ((pred[0, 0] - 7.0) / 2.0) ** 2)


def test_align_left_rejects_bad_masks():
    ids = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="one run"):
        align_left(ids, torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="at least one"):
        align_left(ids, torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="shape"):
        align_left(ids, torch.ones(2, 4))


# ------------------------------------------------------------------------------------------------------------
# LoRA
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["enbert", "enigma"])
def test_lora_trains_adapters_and_head_only_and_merges(kind):
    pytest.importorskip("peft")
    from enigma_fast.finetune.trainer import _optimizer, _set_trainable

    tok = _tok("char")
    spec = _spec("classification", mode="lora", lora=lora_section(4, 8.0, 0.0))
    model = build_model(_backbone(kind, tok), spec)
    _set_trainable(model, "lora", kind)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".lora_" in n or n.startswith("head.") for n in names)
    assert any(n.startswith("head.") for n in names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = FinetuneConfig(lr=1e-2, head_lr=1e-2, weight_decay=0.0)
    opt = _optimizer(model, cfg)
    rng = np.random.default_rng(4)
    x = torch.stack([tok.encode_tensor(_dna(24, rng)) for _ in range(8)])
    y = torch.from_numpy(rng.integers(0, 3, 8))
    model.train()
    for _ in range(5):
        _, loss = model(x, None, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(names)
    assert any("lora_B" in n for n in changed)  # B starts at zero: a moved B means the adapters learnt
    model.eval()
    with torch.no_grad():
        unmerged, _ = model(x)
        from enigma_fast.finetune.lora import merge_lora

        model.backbone = merge_lora(model.backbone)
        assert type(model.backbone) is (EnBERT if kind == "enbert" else Enigma)
        merged, _ = model(x)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)


def test_without_peft_lora_is_one_line_error(tmp_path):
    code = (
        "import sys; sys.modules['peft'] = None\n"
        "import enigma_fast.finetune as ft\n"
        "from enigma_fast.finetune.lora import apply_lora\n"
        "from enigma_fast.models import EnBERT, EnBERTConfig\n"
        "m = EnBERT(EnBERTConfig.from_preset('tiny', vocab_size=16, d_model=16, n_head=2, n_layer=1))\n"
        "try:\n    apply_lora(m)\nexcept ImportError as e:\n    print('ERR', e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("ERR LoRA needs the peft package") and "\n" not in line


# ------------------------------------------------------------------------------------------------------------
# the folder format
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["full", "lora", "probe"])
@pytest.mark.parametrize("task", ["classification", "regression", "token-classification"])
def test_folder_round_trip(tmp_path, mode, task):
    if mode == "lora":
        pytest.importorskip("peft")
    tok = _tok("kmer")
    spec = _spec(task, mode=mode, lora=lora_section(4, 8.0, 0.0) if mode == "lora" else None)
    model = build_model(_backbone("enbert", tok), spec).eval()
    if mode == "lora":  # non-zero adapters, or a missed adapter would go unseen
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.3)
    save_finetuned(model, spec, tok, tmp_path / "ft")
    names = sorted(os.listdir(tmp_path / "ft"))
    want = ["config.json", "model.safetensors", "tokenizer.json"] + (
        ["adapter_model.safetensors"] if mode == "lora" else []
    )
    assert names == sorted(want)
    cfg = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert cfg["model_type"] == "enbert" and cfg["finetune"]["task"] == task and cfg["finetune"]["mode"] == mode
    back = load_finetuned(tmp_path / "ft")
    x = tok.encode_tensor("ACGTTGCAACGGTACCA")[None]
    with torch.no_grad():
        torch.testing.assert_close(back(x)[0], model(x)[0], atol=1e-6, rtol=1e-6)
        if mode == "lora":
            merged = load_finetuned(tmp_path / "ft", merge=True)
            torch.testing.assert_close(merged(x)[0], model(x)[0], atol=1e-5, rtol=1e-5)
    assert back.spec.task == task and back.tokenizer == tok


def test_folder_refuses_disagreeing_tensors(tmp_path):
    tok = _tok("char")
    spec = _spec("classification")
    model = build_model(_backbone("enbert", tok), spec)
    save_finetuned(model, spec, tok, tmp_path / "ft")
    cfg_file = tmp_path / "ft" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    bad = json.loads(json.dumps(cfg))
    bad["finetune"]["labels"] = ["a", "b"]  # 2 classes, the head has 3
    bad["finetune"]["num_labels"] = 2
    bad["finetune"]["id2label"] = {"0": "a", "1": "b"}
    cfg_file.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"mismatched shapes: head.bias: checkpoint \(3,\), model \(2,\); head"):
        load_finetuned(tmp_path / "ft")
    bad = json.loads(json.dumps(cfg))
    bad["n_layer"] = 3
    cfg_file.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="missing tensors: backbone.blocks.2"):
        load_finetuned(tmp_path / "ft")
    bad = json.loads(json.dumps(cfg))
    bad["finetune"]["mode"] = "lora"
    cfg_file.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="lora must be an object"):
        load_finetuned(tmp_path / "ft")
    del cfg["finetune"]
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="no 'finetune' section"):
        load_finetuned(tmp_path / "ft")
    # save_finetuned replaces only its own folders
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        save_finetuned(model, spec, tok, tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------------------
# metrics against scikit-learn
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("C", [2, 4])
def test_classification_metrics_equal_sklearn(C):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(C)
    y = rng.integers(0, C, 300)
    logits = rng.normal(size=(300, C)) + 1.5 * np.eye(C)[y]
    logits[:20] = np.round(logits[:20])  # ties in the scores
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, p, [f"c{i}" for i in range(C)])
    pred = p.argmax(1)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-12)
    assert m["mcc"] == pytest.approx(sk.matthews_corrcoef(y, pred), abs=1e-12)
    if C == 2:
        assert m["f1"] == pytest.approx(sk.f1_score(y, pred), abs=1e-12)
        assert m["auroc"] == pytest.approx(sk.roc_auc_score(y, p[:, 1]), abs=1e-12)
    else:
        assert m["f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"), abs=1e-12)
        assert m["auroc"] == pytest.approx(sk.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    prec, rec, f1, sup = sk.precision_recall_fscore_support(y, pred, zero_division=0)
    for k in range(C):
        pc = m["per_class"][f"c{k}"]
        assert (pc["precision"], pc["recall"], pc["f1"], pc["support"]) == pytest.approx(
            (prec[k], rec[k], f1[k], sup[k])
        )


def test_metric_edge_cases():
    sk = pytest.importorskip("sklearn.metrics")
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1]] * 4)  # one predicted class: MCC 0 as scikit-learn has it
    assert classification_metrics(y, p)["mcc"] == sk.matthews_corrcoef(y, p.argmax(1)) == 0.0
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.4])))
    s = np.array([0.3, 0.3, 0.3, 0.8])
    assert roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s))


def test_regression_metrics_equal_scipy():
    stats = pytest.importorskip("scipy.stats")
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    y = rng.normal(size=200)
    v = y + rng.normal(size=200)
    v[:30] = np.round(v[:30])  # ties
    m = regression_metrics(y, v)
    assert m["pearson"] == pytest.approx(stats.pearsonr(y, v)[0], abs=1e-12)
    assert m["spearman"] == pytest.approx(stats.spearmanr(y, v)[0], abs=1e-12)
    assert m["mse"] == pytest.approx(sk.mean_squared_error(y, v))
    assert m["r2"] == pytest.approx(sk.r2_score(y, v))


# ------------------------------------------------------------------------------------------------------------
# labelled files
# ------------------------------------------------------------------------------------------------------------
def test_read_csv_tsv_fasta(tmp_path):
    (tmp_path / "a.csv").write_text("sequence,label\nACGT,1\nGGCA,0\n")
    (tmp_path / "a.tsv").write_text("name\tlabel\tsequence\nr1\t1\tACGT\nr2\t0\tGGCA\n")
    (tmp_path / "a.fa").write_text(">r1 label=1 extra\nACGT\n>r2 some words 0\nGGCA\n")
    (tmp_path / "nohdr.csv").write_text("ACGT,1\nGGCA,0\n")
    import gzip

    with gzip.open(tmp_path / "a.csv.gz", "wt") as f:
        f.write("sequence,label\nACGT,1\nGGCA,0\n")
    for name in ("a.csv", "a.tsv", "a.fa", "nohdr.csv", "a.csv.gz"):
        d = read_labelled(tmp_path / name)
        assert d.seqs == ["ACGT", "GGCA"] and d.labels == ["1", "0"], name
    assert read_labelled(tmp_path / "a.tsv").names == ["r1", "r2"]
    assert class_names("classification", read_labelled(tmp_path / "a.csv")) == ["0", "1"]


@pytest.mark.parametrize(
    "task, train, other, match",
    [
        ("classification", "sequence,label\nACGT,1\nACGA,1\n", None, "at least 2 classes"),
        (
            "classification",
            "sequence,label\nACGT,1\nACGA,0\n",
            "sequence,label\nACGT,2\n",
            "line 2: label '2' is not a class of the training file",
        ),
        (
            "regression",
            "sequence,label\nACGT,1.5\nACGA,x\n",
            None,
            "line 3: regression label must be a number, got 'x'",
        ),
        (
            "token-classification",
            "sequence,label\nACGT,0011\nACGA,001\n",
            None,
            "line 3: per-base labels must be one class character per base: 4 bases, got 3 labels",
        ),
        (
            "token-classification",
            "sequence,label\nACGT,0011\n",
            "sequence,label\nACGT,0012\n",
            "per-base class '2' is not a class",
        ),
        ("classification", "sequence,label\nACGT\n", None, "line 2: expected 2 columns"),
        ("classification", "sequence,value\nACGT,1\n", None, "must name a 'label' column"),
        ("classification", "", None, "holds no records"),
        ("classification", "sequence,label\n", None, "holds no records"),
        ("classification", "sequence,label\nACXT,1\nACGT,0\n", None, "line 2: kmer_encode: byte 'X' at position 2"),
    ],
)
def test_label_errors(tmp_path, task, train, other, match):
    (tmp_path / "train.csv").write_text(train)
    tok = _tok("char")
    with pytest.raises(ValueError, match=match):
        tr = read_labelled(tmp_path / "train.csv")
        classes = class_names(task, tr)
        encode(tok, tr, task=task, classes=classes)
        (tmp_path / "other.csv").write_text(other)
        encode(tok, read_labelled(tmp_path / "other.csv"), task=task, classes=classes)


def test_fasta_without_label_and_unknown_task(tmp_path):
    (tmp_path / "x.fa").write_text(">r1\nACGT\n")
    with pytest.raises(ValueError, match="record 1 \\(r1\\): the header holds no label"):
        read_labelled(tmp_path / "x.fa")
    assert read_labelled(tmp_path / "x.fa", with_labels=False).seqs == ["ACGT"]
    with pytest.raises(ValueError, match="task must be one of"):
        label_indices("ranking", read_labelled(tmp_path / "x.fa", with_labels=False), [])
    with pytest.raises(ValueError, match="task must be one of"):
        FinetuneConfig(task="ranking")


# ------------------------------------------------------------------------------------------------------------
# the loop: learning, resume, files
# ------------------------------------------------------------------------------------------------------------
def _write(path: Path, rows) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sequence", "label"])
        w.writerows(rows)
    return str(path)


def _gc_task(tmp_path: Path, n: int, seed: int) -> dict[str, str]:
    """GC-rich (1) against AT-rich (0) sequences of 24-40 bases: a task a tiny model learns in a few steps."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, m in (("train", n), ("valid", 40), ("test", 40)):
        rows = []
        for i in range(m):
            y = i % 2
            p = [0.15, 0.35, 0.35, 0.15] if y else [0.35, 0.15, 0.15, 0.35]
            rows.append(("".join(rng.choice(list("ACGT"), int(rng.integers(24, 41)), p=p)), str(y)))
        out[split] = _write(tmp_path / f"{split}.csv", rows)
    return out


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pre") / "final"
    tok = _tok("char")
    bb = _backbone("enbert", tok)
    with torch.no_grad():
        for p in bb.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.05)
    bb.save_pretrained(path, tok)
    return str(path)


def _cfg(pretrained, files, **kw) -> FinetuneConfig:
    base = dict(model=pretrained, task="classification", batch_size=8, threads=1, dtype="float32", log_interval=1)
    return FinetuneConfig(**{**base, **files, **kw})


def test_finetune_learns_and_writes_its_folder(tmp_path, pretrained):
    files = _gc_task(tmp_path, 160, 0)
    res = finetune(_cfg(pretrained, files, epochs=4, lr=3e-3, eval_interval=10), tmp_path / "run", progress=False)
    assert res["test"]["accuracy"] > 0.9 and res["test"]["mcc"] > 0.8
    names = set(os.listdir(tmp_path / "run"))
    assert names == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.json",
        "metrics.csv",
        "finetune_config.json",
    }
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["mcc"] == pytest.approx(res["test"]["mcc"]) and saved["best_step"] == res["best_step"]
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [r["kind"] for r in rows].count("valid") == len(res["history"])
    # the folder predicts what the run measured on its test file
    model = load_finetuned(tmp_path / "run")
    test = read_labelled(files["test"])
    p = predict(model, test.seqs, dtype="float32")
    assert classification_metrics(np.array(test.labels, dtype=int), p.probs)["mcc"] == pytest.approx(res["test"]["mcc"])
    valid = read_labelled(files["valid"])  # the best step's validation figures are those of the final weights
    p = predict(model, valid.seqs, dtype="float32")
    assert classification_metrics(np.array(valid.labels, dtype=int), p.probs)["mcc"] == pytest.approx(
        res["valid"]["mcc"]
    )
    # nothing is overwritten: a second run into the same folder is refused before any work
    with pytest.raises(FileExistsError, match="not empty"):
        finetune(_cfg(pretrained, files, max_steps=1), tmp_path / "run", progress=False)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_resume_is_exact(tmp_path, pretrained, mode):
    if mode == "lora":
        pytest.importorskip("peft")
    files = _gc_task(tmp_path, 64, 1)
    kw = dict(max_steps=14, eval_interval=4, lr=2e-3, head_dropout=0.2, lora_dropout=0.2, patience=50, mode=mode)
    ref = finetune(_cfg(pretrained, files, **kw), tmp_path / "ref", progress=False)

    def interrupt(step: int, loss: float) -> None:
        if step == 6:
            os.kill(os.getpid(), signal.SIGINT)

    part = finetune(_cfg(pretrained, files, **kw), tmp_path / "cut", progress=False, on_step=interrupt)
    assert part == {"interrupted_by_signal": signal.SIGINT, "step": 6}
    assert (tmp_path / "cut" / "checkpoints").is_dir() and not (tmp_path / "cut" / "config.json").exists()
    res = finetune(None, tmp_path / "cut", resume=True, progress=False)
    assert res["test"] == ref["test"] and res["history"] == ref["history"]
    a = list(csv.DictReader(open(tmp_path / "ref" / "metrics.csv")))
    b = list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("elapsed_s", "examples_per_s")} for r in rows]  # noqa: E731
    assert drop(a) == drop(b)
    for f in ("model.safetensors", "adapter_model.safetensors"):
        if (tmp_path / "ref" / f).exists():
            assert (tmp_path / "ref" / f).read_bytes() == (tmp_path / "cut" / f).read_bytes()


def test_modes_train_what_they_say(tmp_path, pretrained):
    files = _gc_task(tmp_path, 32, 2)
    from safetensors.torch import load_file

    base = load_file(str(Path(pretrained) / "model.safetensors"))
    for mode in ("probe", "full"):
        finetune(_cfg(pretrained, files, mode=mode, max_steps=3, lr=1e-2), tmp_path / mode, progress=False)
        got = load_file(str(tmp_path / mode / "model.safetensors"))
        same = all(torch.equal(got[f"backbone.{k}"], v) for k, v in base.items())
        assert same == (mode == "probe")
        res = json.loads((tmp_path / mode / "metrics.json").read_text())
        assert (res["trainable_parameters"] < 1000) == (mode == "probe")


def test_random_init_is_seeded(tmp_path, pretrained):
    files = _gc_task(tmp_path, 16, 3)
    for name in ("a", "b"):
        finetune(_cfg(pretrained, files, init="random", max_steps=2), tmp_path / name, progress=False)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_token_classification_run_and_predict_long(tmp_path, pretrained):
    rng = np.random.default_rng(6)
    rows = {}
    for split, n in (("train", 24), ("valid", 6), ("test", 6)):
        seqs = [_dna(40, rng) for _ in range(n)]
        rows[split] = _write(
            tmp_path / f"{split}.csv", [(s, "".join("1" if c in "GC" else "0" for c in s)) for s in seqs]
        )
    res = finetune(_cfg(pretrained, rows, task="token-classification", max_steps=4), tmp_path / "tok", progress=False)
    assert res["test"]["n"] == 240
    model = load_finetuned(tmp_path / "tok")
    long = _dna(150, rng)  # longer than block_size (64 tokens): read in chunks of 64
    p = predict(model, [long, long[:64]], dtype="float32").per_base
    assert p[0].shape == (150, 2) and p[1].shape == (64, 2)
    np.testing.assert_allclose(p[0][:64], p[1], atol=1e-5)
    np.testing.assert_allclose(p[0].sum(1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# the benchmark from the shipped genome
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def genome():
    pytest.importorskip("pyrodigal")
    names, seqs = benchmark.read_genome()
    return names, seqs, benchmark.call_genes(seqs)


def test_benchmark_split_is_the_trainers(tmp_path, genome):
    from enigma_fast.data.tokens import prepare_tokens
    from enigma_fast.train import data as tdata
    from enigma_fast.train.config import TrainConfig

    names, seqs, _ = genome
    regions = benchmark.split_regions(seqs)
    store = prepare_tokens([str(benchmark.shipped_genome_path())], tmp_path / "store", CharTokenizer(case="upper"))
    _, val = tdata.split(TrainConfig(), store)  # the default run's held-out segments (char tokens = bases)
    assert [(0, int(o), int(o + n)) for o, n in val.tolist()] == regions["test"]
    (_, _, b), (_, c, d) = regions["train"][-1], regions["valid"][0]
    assert b == c and d == regions["test"][0][1] and regions["train"][0][1] == 0
    assert (d - c) == round(0.05 * len(seqs[0])) or abs((d - c) - 0.05 * len(seqs[0])) < 2


def test_benchmark_windows_and_labels(tmp_path, genome):
    names, seqs, genes = genome
    regions = benchmark.split_regions(seqs)
    counts = {"train": 300, "valid": 100, "test": 100}
    tasks = benchmark.make_tasks(seqs, genes, regions, seed=0, frame_counts=counts)
    again = benchmark.make_tasks(seqs, genes, regions, seed=0, frame_counts=counts)
    assert tasks == again  # deterministic
    assert tasks != benchmark.make_tasks(seqs, genes, regions, seed=1, frame_counts=counts)
    cov, frame = genes.cover[0], genes.frame[0]
    for split, rows in tasks["coding"].items():
        (_, lo, hi) = regions[split][0]
        labels = [lab for _, _, lab in rows]
        assert labels.count("0") == labels.count("1") > 10
        for _, s, lab in rows:
            assert lo <= s and s + 300 <= hi  # inside its split: no test window touches the pretraining data
            w = cov[s : s + 300]
            assert (w == 0).all() if lab == "0" else (genes.gene[0][s : s + 300] == genes.gene[0][s]).all()
    for split, rows in tasks["frame"].items():
        (_, lo, hi) = regions[split][0]
        assert len(rows) == counts[split]
        for _, s, lab in rows:
            assert lo <= s and s + 300 <= hi
            assert lab == benchmark.FRAME_CLASSES[frame[s]]
            # the phase steps through the codon along the window: + genes 0,1,2,0.. ; - genes 2,1,0,2..
            f = frame[s : s + 300].astype(int)
            step = 1 if lab[0] == "+" else -1
            assert ((np.diff(f % 3) - step) % 3 == 0).all()
    for split, rows in tasks["coding-per-base"].items():
        (_, lo, hi) = regions[split][0]
        assert len(rows) == (hi - lo) // 1000
        for _, s, lab in rows[:5]:
            assert lab == "".join("1" if c else "0" for c in cov[s : s + 1000] > 0)


def test_benchmark_pyrodigal_frames_match_translation(genome):
    """A + gene's phase-0 bases start codons that translate without stops until its end (a real reading frame)."""
    _, seqs, genes = genome
    seq, frame, gene = seqs[0], genes.frame[0], genes.gene[0]
    stops = {"TAA", "TAG", "TGA"}
    rc = str.maketrans("ACGT", "TGCA")
    checked = 0
    for g in np.unique(gene[gene >= 0])[:40]:
        pos = np.flatnonzero(gene == g)
        if len(pos) < 90 or pos[-1] - pos[0] + 1 != len(pos):
            continue
        a, b = pos[0], pos[-1] + 1
        body = seq[a:b] if frame[a] < 3 else seq[a:b][::-1].translate(rc)
        f0 = frame[a] if frame[a] < 3 else frame[b - 1] - 3
        start = (3 - f0) % 3
        codons = [body[i : i + 3] for i in range(start, len(body) - 5, 3)]
        assert not stops & set(codons[:-1]), g
        checked += 1
    assert checked > 10


def test_build_benchmark_files(tmp_path, genome):
    _, _, genes = genome
    counts = {"train": 50, "valid": 20, "test": 20}
    meta = benchmark.build_benchmark(tmp_path / "b", genes=genes, frame_counts=counts)
    assert meta["regions"]["test"][0][1:] == [2217299, 2463666]
    d = read_labelled(tmp_path / "b" / "frame" / "test.csv")
    assert len(d) == 20 and all(len(s) == 300 for s in d.seqs) and d.names[0].startswith("NZ_LN831026.1:")
    lo, hi = (int(x) for x in d.names[0].split(":")[1].split("-"))
    assert hi - lo + 1 == 300 and lo > 2217299
    first = (tmp_path / "b" / "coding" / "train.csv").read_bytes()
    benchmark.build_benchmark(tmp_path / "b", genes=genes, frame_counts=counts)  # its own folder: replaced
    assert (tmp_path / "b" / "coding" / "train.csv").read_bytes() == first
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        benchmark.build_benchmark(tmp_path / "c", genes=genes)


# ------------------------------------------------------------------------------------------------------------
# baselines
# ------------------------------------------------------------------------------------------------------------
def test_kmer_features_count_kmers():
    f = baselines.kmer_features(["ACGTA", "AANAA"], kmax=2)
    assert f.shape == (2, 20)
    np.testing.assert_allclose(f[0, :4], [2 / 5, 1 / 5, 1 / 5, 1 / 5])
    di = {"AC": 1, "CG": 6, "GT": 11, "TA": 12}
    for kmer, col in di.items():
        assert f[0, 4 + col] == pytest.approx(1 / 4), kmer
    np.testing.assert_allclose(f[1, :4], [1.0, 0, 0, 0])  # N is no base
    assert f[1, 4] == pytest.approx(1.0)  # AA twice, the k-mers with N left out


def test_base_features_are_window_spectra():
    pytest.importorskip("scipy")
    rng = np.random.default_rng(7)
    s = _dna(60, rng)
    X = baselines._base_features(s, kmax=3, context=10).toarray()
    for p in (0, 3, 30, 59):
        lo, hi = max(0, p - 5), min(60, p + 5)
        want = baselines.kmer_features([s[lo:hi]], kmax=3)[0]
        np.testing.assert_allclose(X[p], want, atol=1e-6)


def test_baselines_run(tmp_path):
    pytest.importorskip("sklearn")
    files = _gc_task(tmp_path, 80, 8)
    tr, va, te = (read_labelled(files[k]) for k in ("train", "valid", "test"))
    r = baselines.kmer_logistic(tr, va, te, "classification", kmax=3)
    assert r["test"]["accuracy"] > 0.85 and r["C"] in baselines.C_GRID
    c = baselines.train_cnn(tr, va, te, "classification", epochs=3, channels=8)
    assert {"valid", "test", "steps"} <= set(c)
    rng = np.random.default_rng(9)
    rows = {}
    for split, n in (("train", 12), ("valid", 4), ("test", 4)):
        seqs = [_dna(50, rng) for _ in range(n)]
        rows[split] = read_labelled(
            _write(tmp_path / f"t{split}.csv", [(s, "".join("1" if x in "GC" else "0" for x in s)) for s in seqs])
        )
    r = baselines.kmer_logistic(rows["train"], rows["valid"], rows["test"], "token-classification", kmax=1, context=1)
    assert r["test"]["accuracy"] == 1.0  # a base's own letter says its class
    c = baselines.train_cnn(rows["train"], rows["valid"], rows["test"], "token-classification", epochs=2, channels=8)
    assert c["test"]["n"] == 200
