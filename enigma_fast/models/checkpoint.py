"""Checkpoint folders: ``config.json`` + ``model.safetensors`` (+ ``tokenizer.json``), no pickle anywhere.

Writes go to a temporary folder beside the target, renamed into place at the end, so a crash mid-write never
leaves a half-written checkpoint where a good one was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["CONFIG_NAME", "TOKENIZER_NAME", "WEIGHTS_NAME", "load_state", "save_state"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"


def _unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without tensors that alias an earlier entry (tied embeddings); safetensors rejects aliases."""
    seen: dict[tuple[int, int], str] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if key in seen and t.numel():
            continue
        seen[key] = name
        out[name] = t.detach().contiguous().cpu()
    return out


def save_state(model: torch.nn.Module, config: dict[str, Any], path: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Write the checkpoint folder ``path`` atomically (replacing an existing one). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file(_unique_state(model), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER_NAME)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of checkpoint folder ``path`` (clear errors when missing)."""
    f = Path(path) / CONFIG_NAME
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint folder: {CONFIG_NAME} is missing")
    return json.loads(f.read_text())


def load_state(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load ``model.safetensors`` from ``path`` into ``model``; missing, unexpected or mis-shaped tensors raise one
    error that lists them all (tied weights may be absent from the file)."""
    f = Path(path) / WEIGHTS_NAME
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint folder: {WEIGHTS_NAME} is missing")
    loaded = load_file(str(f))
    expected = model.state_dict()
    tied = set(expected) - set(_unique_state(model))
    missing = sorted(set(expected) - set(loaded) - tied)
    unexpected = sorted(set(loaded) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(loaded[k].shape)}, model {tuple(expected[k].shape)}"
        for k in set(loaded) & set(expected)
        if loaded[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append("missing tensors: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected tensors: " + ", ".join(unexpected))
    if mismatched:
        problems.append("mismatched shapes: " + "; ".join(mismatched))
    if problems:
        raise ValueError(f"cannot load {f}: " + " | ".join(problems))
    with torch.no_grad():
        for k, t in loaded.items():
            expected[k].copy_(t)
