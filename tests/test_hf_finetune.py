"""The fine-tuning heads through transformers: AutoModelForSequenceClassification / AutoModelForTokenClassification
on pretrained folders (a new head) and on folders of enigma_fast.finetune (full and LoRA), outputs equal to the
heads', saves that load_finetuned reads, and a LoRA + Trainer fine-tune (the docs' example) that changes only the
adapters and the head."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from enigma_fast.models import load_model
from tests.hf_support import DATA, ROOT, left_padded, require, sharpen

require("transformers")
require("peft")
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
)

from enigma_fast.finetune.folder import FinetuneSpec, build_model, load_finetuned, save_finetuned  # noqa: E402
from enigma_fast.finetune.lora import apply_lora  # noqa: E402
from enigma_fast.hf import (  # noqa: E402
    EnBERTForSequenceClassification,
    EnBERTHFConfig,
    EnigmaForSequenceClassification,
    EnigmaForTokenClassification,
)


def _inputs(tok, lengths=(9, 4, 7)):
    lo, hi = min(tok.pieces.values()), max(tok.pieces.values()) + 1
    ids, mask, _ = left_padded(list(lengths), lo, hi, pad=tok.pad_id)
    return ids, mask


@pytest.mark.parametrize("name", ["main_enbert", "main_enigma"])
def test_auto_heads_on_a_pretrained_folder_equal_the_heads(name):
    folder = DATA / name
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3)
    assert type(model) is (
        EnBERTForSequenceClassification if name == "main_enbert" else EnigmaForSequenceClassification
    )
    assert model.spec.labels == ["0", "1", "2"] and model.spec.pooling == (
        "last-mean" if name == "main_enbert" else "mean"
    )
    ours = load_model(str(folder))
    for k, v in ours.state_dict().items():  # the backbone is the folder's model, unchanged
        assert torch.equal(model.state_dict()[f"backbone.{k}"], v), k
    head = build_model(ours, model.spec).eval()
    head.head.load_state_dict(model.head.state_dict())
    ids, mask = _inputs(ours.tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, head(ids, mask)[0], rtol=0, atol=0)
    token = AutoModelForTokenClassification.from_pretrained(folder, num_labels=2)
    assert token.spec.task == "token-classification" and token(input_ids=ids, attention_mask=mask).logits.shape == (
        3,
        9,
        2,
    )
    reg = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    assert reg.spec.task == "regression" and float(reg.label_std) == 1.0 and float(reg.label_mean) == 0.0


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_finetuned_folders_load_as_written_and_saves_load_back(mode, tmp_path):
    backbone = sharpen(load_model(str(DATA / "main_enigma")), 0.5)
    tok = backbone.tokenizer
    spec = FinetuneSpec(task="regression", labels=[], pooling="mean", mode="full", label_mean=3.0, label_std=2.0)
    head = build_model(backbone, spec)
    if mode == "lora":
        spec = FinetuneSpec(
            **{**spec.__dict__, "mode": "lora", "lora": {"r": 2, "alpha": 4.0, "dropout": 0.0, "target_modules": "x"}}
        )
        head.backbone = apply_lora(head.backbone, 2, 4.0, 0.0)
        with torch.no_grad():
            for n, p in head.backbone.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.5)  # adapters that change the outputs
    with torch.no_grad():
        head.head.weight.normal_(0, 1.0)
    save_finetuned(head.eval(), spec, tok, tmp_path / "ft")
    ids, mask = _inputs(tok)
    want = load_finetuned(tmp_path / "ft")(ids, mask)[0]
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "ft"), type(AutoConfig.for_model("enigma")))
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ft")
    assert type(model) is EnigmaForSequenceClassification and model.spec.mode == "full"  # LoRA merged
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path / "hf")
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    again = load_finetuned(tmp_path / "hf")  # enigma_fast reads transformers' save
    assert again.spec.task == "regression" and again.spec.label_mean == 3.0 and again.tokenizer == tok
    torch.testing.assert_close(again(ids, mask)[0], got, rtol=0, atol=0)
    back = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf")
    torch.testing.assert_close(back(input_ids=ids, attention_mask=mask).logits, got, rtol=0, atol=0)
    with pytest.raises(ValueError, match="the config's task is 'regression'"):
        AutoModelForTokenClassification.from_pretrained(tmp_path / "hf")


def test_head_errors(tmp_path):
    cfg = EnBERTHFConfig(vocab_size=40, d_model=32, n_head=2, n_layer=1)
    cfg.problem_type = "multi_label_classification"
    with pytest.raises(ValueError, match="multi_label_classification"):
        EnBERTForSequenceClassification(cfg)
    shutil.copytree(DATA / "main_enbert", tmp_path / "m")
    raw = (tmp_path / "m" / "config.json").read_text()
    (tmp_path / "m" / "config.json").write_text(raw.rstrip().rstrip("}") + ', "finetune": {"format": "x"}}')
    with pytest.raises(ValueError, match="finetune must be an object with format 'enigma_fast.finetune'"):
        AutoConfig.from_pretrained(tmp_path / "m")
    spec = FinetuneSpec(task="classification", labels=["a", "b"], pooling="mean")
    backbone = load_model(str(DATA / "main_enigma"))
    save_finetuned(build_model(backbone, spec), spec, backbone.tokenizer, tmp_path / "f")
    with pytest.raises(TypeError, match="takes dtype and config, got device_map"):
        EnigmaForSequenceClassification.from_pretrained(tmp_path / "f", device_map="cpu")
    with pytest.raises(ValueError, match="the config's task is 'classification'"):
        EnigmaForTokenClassification.from_pretrained(tmp_path / "f")


# ---- LoRA + Trainer -------------------------------------------------------------------------------------------
def _docs_examples() -> list[str]:
    """The code blocks of docs/huggingface.md's "LoRA and the Trainer" section: training, then merging and saving."""
    text = (ROOT / "docs" / "huggingface.md").read_text()
    section = text[text.index("## LoRA and the Trainer") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_docs_lora_trainer_example_runs_and_trains_only_adapters_and_head(hf_run_final, tmp_path, monkeypatch):
    train_code, save_code = _docs_examples()
    train_code, n = re.subn(r'^folder = ".*"', f'folder = "{hf_run_final}"', train_code, count=1, flags=re.M)
    assert n == 1, "the example starts from `folder = ...` (a run folder)"
    monkeypatch.chdir(tmp_path)
    before: dict = {}
    train = Trainer.train

    def recording_train(self, *args, **kwargs):  # the weights as they were when training started
        before.update({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return train(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train", recording_train)
    scope: dict = {}
    exec(compile(train_code, "docs/huggingface.md", "exec"), scope)
    trainer = scope["trainer"]
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".lora_" in k or ".head." in k for k in changed), sorted(changed)
    assert any(".lora_B." in k for k in changed) and any(".head." in k for k in changed)
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(float(x))) for x in losses)
    tok = scope["tok"]
    batch = tok(["ACGTACGTAAGCTT", "GGCCA"], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = trainer.model.eval()(**batch).logits
    exec(compile(save_code, "docs/huggingface.md", "exec"), scope)
    saved = Path(scope["out"])  # merged and saved: a fine-tuned folder both libraries read
    with torch.no_grad():
        got = AutoModelForSequenceClassification.from_pretrained(saved)(**batch).logits
        ft = load_finetuned(saved)(batch["input_ids"], batch["attention_mask"])[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ft, want, rtol=1e-4, atol=1e-4)


def test_lora_targets_name_our_projections():
    model = AutoModelForSequenceClassification.from_pretrained(DATA / "main_enbert", num_labels=2)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["qkv", "out", "fc", "proj"], modules_to_save=["head"])
    peft_model = get_peft_model(model, lora)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert sum(".lora_A." in n for n in names) == 4 * model.config.n_layer
    # trainable: the adapters, the head, and peft's copy of backbone.lm_head ("head" matches it by suffix)
    assert all(".lora_" in n or ".head." in n or ".lm_head.modules_to_save." in n for n in names)
    tok = AutoTokenizer.from_pretrained(DATA / "main_enbert")
    batch = DataCollatorWithPadding(tok)([{**tok("ACGTAC"), "labels": 1}, {**tok("AC"), "labels": 0}])
    assert batch["input_ids"].shape == (2, 6) and batch["attention_mask"][1].tolist() == [0, 0, 0, 0, 1, 1]
    out = peft_model(**batch)
    out.loss.backward()
    grads = [n for n, p in peft_model.named_parameters() if p.grad is not None]
    assert grads and all(".lora_" in n or ".head." in n for n in grads)  # the classifier never reads lm_head
