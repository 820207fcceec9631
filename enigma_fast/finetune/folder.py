"""Fine-tuned model folders: self-describing, safetensors only, loaded by one function that checks everything.

A folder holds::

    config.json                  the backbone's config (as a pretrained folder's) plus a "finetune" section (below)
    model.safetensors            backbone.* (the backbone's tensors; LoRA: the frozen base weights) and head.*
    adapter_model.safetensors    LoRA only: the adapters, named as peft.get_peft_model_state_dict names them
    tokenizer.json               the backbone's tokenizer

The "finetune" section (``FinetuneSpec``)::

    {"format": "enigma_fast.finetune", "version": 1, "task": "classification" | "regression" | "token-classification",
     "labels": ["0", "1"], "num_labels": 2, "id2label": {"0": "0", "1": "1"}, "problem_type":
     "single_label_classification" | "regression" | "token_classification", "pooling": "last" | "mean" | null,
     "mode": "full" | "lora" | "probe", "head_dropout": 0.1, "label_mean": 0.0, "label_std": 1.0,
     "lora": {"r": 8, "alpha": 16.0, "dropout": 0.05, "target_modules": "..."} | null,
     "init": "pretrained" | "random", "base_model": "<path the backbone came from>"}

``load_finetuned`` refuses (one-line ValueError naming the file) a folder whose section is malformed or whose
tensors are not exactly those the config describes (missing, unexpected, mis-shaped).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from enigma_fast import tokenizers
from enigma_fast.data.tokens import check_target, install_folder
from enigma_fast.finetune.data import TASKS
from enigma_fast.finetune.heads import POOLINGS, make_head
from enigma_fast.finetune.lora import TARGETS, adapter_state, apply_lora, base_state, is_lora, load_adapter, merge_lora
from enigma_fast.models import EnBERT, Enigma, config_from_dict
from enigma_fast.models.checkpoint import load_state

__all__ = [
    "ADAPTER_NAME",
    "CONFIG_NAME",
    "MODES",
    "FinetuneSpec",
    "build_model",
    "is_finetuned_folder",
    "load_finetuned",
    "save_finetuned",
    "write_model_files",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ADAPTER_NAME = "adapter_model.safetensors"
TOKENIZER_NAME = "tokenizer.json"
MODEL_NAMES = (CONFIG_NAME, WEIGHTS_NAME, ADAPTER_NAME, TOKENIZER_NAME)
FORMAT = "enigma_fast.finetune"
MODES = ("full", "lora", "probe")
_PROBLEM = {
    "classification": "single_label_classification",
    "regression": "regression",
    "token-classification": "token_classification",
}


@dataclass
class FinetuneSpec:
    """The task and head of a fine-tuned model (the "finetune" section of config.json; see the module doc)."""

    task: str
    labels: list[str]
    pooling: str | None = "last"
    mode: str = "full"
    head_dropout: float = 0.1
    label_mean: float = 0.0
    label_std: float = 1.0
    lora: dict[str, Any] | None = None
    init: str = "pretrained"
    base_model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return 1 if self.task == "regression" else len(self.labels)

    def validate(self, where: str = "finetune") -> None:
        """ValueError naming the field when a value is not one this library writes."""
        if self.task not in TASKS:
            raise ValueError(f"{where}.task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not isinstance(self.labels, list) or not all(isinstance(x, str) and x for x in self.labels):
            raise ValueError(f"{where}.labels must be a list of class names, got {self.labels!r}")
        if self.task != "regression" and len(self.labels) < 2:
            raise ValueError(f"{where}.labels must name at least 2 classes for {self.task}, got {self.labels!r}")
        if self.task == "token-classification" and any(len(x) != 1 for x in self.labels):
            raise ValueError(f"{where}.labels of token-classification must be single characters, got {self.labels!r}")
        want_pool = None if self.task == "token-classification" else POOLINGS
        if (want_pool is None and self.pooling is not None) or (
            want_pool is not None and self.pooling not in want_pool
        ):
            raise ValueError(f"{where}.pooling must be {want_pool or 'null'} for {self.task}, got {self.pooling!r}")
        if self.mode not in MODES:
            raise ValueError(f"{where}.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if (self.mode == "lora") != isinstance(self.lora, dict):
            raise ValueError(f"{where}.lora must be an object exactly when mode is 'lora', got {self.lora!r}")
        if self.lora is not None and set(self.lora) != {"r", "alpha", "dropout", "target_modules"}:
            raise ValueError(f"{where}.lora must hold r, alpha, dropout, target_modules, got {sorted(self.lora)}")
        if self.init not in ("pretrained", "random"):
            raise ValueError(f"{where}.init must be 'pretrained' or 'random', got {self.init!r}")
        for name in ("head_dropout", "label_mean", "label_std"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"{where}.{name} must be a number, got {v!r}")
        if not self.label_std > 0:
            raise ValueError(f"{where}.label_std must be > 0, got {self.label_std}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        return {
            "format": FORMAT,
            "version": 1,
            **d,
            "num_labels": self.num_labels,
            "id2label": {str(i): c for i, c in enumerate(self.labels)},
            "problem_type": _PROBLEM[self.task],
            **extra,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "finetune") -> FinetuneSpec:
        """The spec of a parsed "finetune" section, checked (``validate``); ValueError naming the field."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{where} must be an object with format {FORMAT!r}")
        if d.get("version") != 1:
            raise ValueError(f"{where}.version must be 1, got {d.get('version')!r}")
        names = {f.name for f in fields(cls)} - {"extra"}
        missing = sorted({"task", "labels", "mode"} - set(d))
        if missing:
            raise ValueError(f"{where} is missing {', '.join(missing)}")
        derived = {"format", "version", "num_labels", "id2label", "problem_type"}
        spec = cls(
            **{k: v for k, v in d.items() if k in names},
            extra={k: v for k, v in d.items() if k not in names | derived},
        )
        spec.validate(where)
        if d.get("num_labels", spec.num_labels) != spec.num_labels:
            raise ValueError(f"{where}.num_labels must be {spec.num_labels}, got {d.get('num_labels')!r}")
        return spec


def lora_section(r: int, alpha: float, dropout: float) -> dict[str, Any]:
    """The ``lora`` entry of a spec."""
    return {"r": int(r), "alpha": float(alpha), "dropout": float(dropout), "target_modules": TARGETS}


def build_model(backbone: nn.Module, spec: FinetuneSpec) -> nn.Module:
    """The head module of ``spec`` on ``backbone`` (LoRA applied when the spec's mode is lora)."""
    model = make_head(
        spec.task,
        backbone,
        spec.num_labels,
        pooling=spec.pooling,
        dropout=spec.head_dropout,
        label_mean=spec.label_mean,
        label_std=spec.label_std,
    )
    if spec.mode == "lora":
        lo = spec.lora
        model.backbone = apply_lora(model.backbone, int(lo["r"]), float(lo["alpha"]), float(lo["dropout"]))
    model.frozen_backbone = spec.mode == "probe"
    return model


def _dedupe(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop entries that alias an earlier one (tied embeddings); safetensors stores no aliases."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, t in tensors.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if key in seen and t.numel():
            continue
        seen.add(key)
        out[k] = t.detach().contiguous().cpu()
    return out


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The content of model.safetensors: every tensor of the module under its plain (un-wrapped) name, the
    backbone's base weights in LoRA mode, tied tensors once."""
    state = {}
    for k, v in model.state_dict().items():
        if not k.startswith("backbone."):
            state[k] = v
    backbone = model.backbone
    inner = base_state(backbone) if is_lora(backbone) else backbone.state_dict()
    state.update({f"backbone.{k}": v for k, v in inner.items()})
    return _dedupe(state)


def write_model_files(model: nn.Module, spec: FinetuneSpec, tokenizer: Any, folder: str | os.PathLike) -> None:
    """Write the model files of the module doc into the existing folder ``folder`` (config.json last)."""
    folder = Path(folder)
    save_file(model_tensors(model), str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    if is_lora(model.backbone):
        save_file(adapter_state(model.backbone), str(folder / ADAPTER_NAME), metadata={"format": "pt"})
    tokenizer.save(folder / TOKENIZER_NAME)
    config = {**model.backbone.config.to_dict(), "finetune": spec.to_dict()}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def is_finetuned_folder(path: str | os.PathLike) -> bool:
    """True when ``path/config.json`` has a "finetune" section of this library."""
    try:
        d = json.loads((Path(path) / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and isinstance(d.get("finetune"), dict) and d["finetune"].get("format") == FORMAT


def save_finetuned(model: nn.Module, spec: FinetuneSpec, tokenizer: Any, path: str | os.PathLike) -> Path:
    """Write a fine-tuned model folder at ``path`` atomically (a temporary sibling renamed into place). ``path`` may
    be absent, an empty folder or a fine-tuned folder written here before (then replaced); anything else raises
    FileExistsError and is left untouched."""
    target = Path(os.path.realpath(path))
    check_target(target, set(MODEL_NAMES), is_finetuned_folder, "save_finetuned")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp.", dir=target.parent))
    try:
        write_model_files(model, spec, tokenizer, tmp)
        check_target(target, set(MODEL_NAMES), is_finetuned_folder, "save_finetuned")
        install_folder(tmp, target, last=CONFIG_NAME)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(path)


def read_spec(path: str | os.PathLike) -> tuple[dict[str, Any], FinetuneSpec]:
    """``(backbone config dict, spec)`` of the fine-tuned folder ``path``; FileNotFoundError / ValueError (one line,
    naming the file) otherwise."""
    f = Path(path) / CONFIG_NAME
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not a model folder: {CONFIG_NAME} is missing")
    try:
        raw = json.loads(f.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{f} must be a JSON object, got unreadable JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{f} must be a JSON object, got a JSON {type(raw).__name__}")
    if "finetune" not in raw:
        raise ValueError(
            f"{f} has no 'finetune' section: {path} is not a fine-tuned model (a pretrained model folder is "
            "loaded with enigma_fast.models.load_model)"
        )
    ft = raw.pop("finetune")
    try:
        spec = FinetuneSpec.from_dict(ft)
        config_from_dict(raw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{f}: {err}") from None
    return raw, spec


def load_finetuned(path: str | os.PathLike, device: torch.device | str = "cpu", merge: bool = False) -> nn.Module:
    """Load the fine-tuned model folder ``path``: the head module (``SequenceClassifier`` or ``TokenClassifier``)
    in eval mode on ``device``, with ``.spec`` (its ``FinetuneSpec``) and ``.tokenizer``. A LoRA folder needs peft;
    ``merge=True`` merges its adapters into the backbone weights (a plain backbone, the same outputs).

    Raises FileNotFoundError for a missing file and a one-line ValueError for a folder whose config is malformed
    or whose tensors disagree with it (every missing, unexpected or mis-shaped tensor is named)."""
    raw, spec = read_spec(path)
    cfg = config_from_dict(raw)
    backbone = (EnBERT if cfg.model_type == "enbert" else Enigma)(cfg)
    plain = FinetuneSpec(**{**spec.__dict__, "mode": "full", "lora": None})
    model = build_model(backbone, plain)  # base weights first, under the backbone's own names
    load_state(model, path)
    if spec.mode == "lora":
        f = Path(path) / ADAPTER_NAME
        if not f.is_file():
            raise FileNotFoundError(f"{path}: {ADAPTER_NAME} is missing (the config's mode is lora)")
        try:
            tensors = load_file(str(f))
        except SafetensorError as err:
            raise ValueError(f"{f} is not a readable safetensors file ({err})") from None
        lo = spec.lora
        model.backbone = apply_lora(model.backbone, int(lo["r"]), float(lo["alpha"]), float(lo["dropout"]))
        load_adapter(model.backbone, tensors, str(f))
        if merge:
            model.backbone = merge_lora(model.backbone)
    elif (Path(path) / ADAPTER_NAME).exists():
        raise ValueError(f"{path}: {ADAPTER_NAME} is present but the config's mode is {spec.mode!r}, not lora")
    model.frozen_backbone = spec.mode == "probe"
    tok_file = Path(path) / TOKENIZER_NAME
    if not tok_file.is_file():
        raise FileNotFoundError(f"{path}: {TOKENIZER_NAME} is missing")
    model.tokenizer = tokenizers.from_file(str(tok_file))
    model.spec = spec
    return model.to(device).eval()
