"""Checkpoint folders: ``config.json`` + ``model.safetensors`` (+ ``tokenizer.json``), no pickle anywhere.

Writes go to a temporary folder beside the target, renamed into place at the end, so a crash mid-write never
leaves a half-written checkpoint where a good one was. An existing target is replaced only when it is a checkpoint
folder this module wrote (nothing but its three files -- and the ``generation_config.json`` that ``transformers``
writes for these models -- with a ``config.json`` of an enigma_fast model); an empty folder
is filled; anything else -- a file, a folder holding other files -- is refused, never removed or renamed.

Loading checks the file against the model its config builds: the tensor names must be exactly the model's (a tied
LM head absent, an untied one present), with the model's shapes and floating-point dtypes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from enigma_fast.files import check_target, install_folder, read_json_object
from enigma_fast.models.config import EnBERTConfig, EnigmaConfig

__all__ = ["CONFIG_NAME", "TOKENIZER_NAME", "WEIGHTS_NAME", "load_state", "read_config", "save_state"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"
_CONFIG_CLASSES = {c.model_type: c for c in (EnBERTConfig, EnigmaConfig)}

# generation_config.json: what transformers' save_pretrained writes beside the others for these models (enigma_fast.hf)
_OWN_NAMES = {CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_NAME, "generation_config.json"}


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


def _is_own_save(path: Path) -> bool:
    """True when ``path/config.json`` is the config of one of this library's models (written by save_state)."""
    try:
        config = json.loads((path / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") in _CONFIG_CLASSES


def save_state(model: torch.nn.Module, config: dict[str, Any], path: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Write the checkpoint folder ``path`` atomically; returns the path.

    ``path`` may be absent, an empty folder, or a checkpoint folder written here before (then replaced); anything
    else raises ``FileExistsError`` and is left as it was. A failure mid-write leaves ``path`` as it was.
    """
    path = Path(path)
    target = Path(os.path.realpath(path))  # "." gets a name and a parent; a symlink, its folder
    check_target(target, _OWN_NAMES, _is_own_save, "save_pretrained")  # before any work: fail early
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp.", dir=target.parent))
    try:
        save_file(_unique_state(model), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        check_target(target, _OWN_NAMES, _is_own_save, "save_pretrained")  # again: it may have changed meanwhile
        install_folder(tmp, target, last=CONFIG_NAME)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of checkpoint folder ``path``, checked by the config class its ``model_type`` names
    (every field of its type and a valid value: ``"false"`` is not ``false``). FileNotFoundError when missing,
    ValueError naming the file otherwise. An unknown ``model_type`` is left for the caller to report."""
    f = Path(path) / CONFIG_NAME
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint folder: {CONFIG_NAME} is missing")
    config = read_json_object(f)
    cls = _CONFIG_CLASSES.get(config.get("model_type"))
    if cls is not None:
        try:
            cls.from_dict(config)  # the checks of models/config.py; a wrong type may raise TypeError there
        except (TypeError, ValueError) as err:
            raise ValueError(f"{f}: {err}") from None
    return config


def _dtype_ok(got: torch.dtype, want: torch.dtype) -> bool:
    """The same dtype, or both floating point: a save in another precision is a conversion, not another model."""
    return got == want or (got.is_floating_point and want.is_floating_point)


def load_state(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load ``model.safetensors`` from ``path`` into ``model`` (built from the folder's config).

    The file must hold exactly the model's distinct tensors: none missing, none unexpected -- a tensor the config
    ties to another (``lm_head.weight`` with ``tie_embeddings``) must be absent, or it would be loaded over the one
    it shares storage with -- each of the model's shape and of a floating-point dtype where the model's is floating
    point (else its exact dtype). One ValueError lists every offending tensor; the model is left untouched then.
    """
    f = Path(path) / WEIGHTS_NAME
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint folder: {WEIGHTS_NAME} is missing")
    try:
        loaded = load_file(str(f))
    except SafetensorError as err:  # a damaged or foreign file
        raise ValueError(f"{f} is not a readable safetensors file ({err})") from None
    expected = model.state_dict()
    distinct = _unique_state(model)
    tied = {
        k: next(n for n in distinct if expected[n].data_ptr() == expected[k].data_ptr())
        for k in set(expected) - set(distinct)
    }
    missing = sorted(set(distinct) - set(loaded))
    unexpected = sorted(
        f"{k} (the config ties it to {tied[k]})" if k in tied else k for k in set(loaded) - set(distinct)
    )
    mismatched = sorted(
        f"{k}: checkpoint {tuple(loaded[k].shape)}, model {tuple(expected[k].shape)}"
        for k in set(loaded) & set(distinct)
        if loaded[k].shape != expected[k].shape
    )
    wrong_dtype = sorted(
        f"{k}: checkpoint {loaded[k].dtype}, model {expected[k].dtype}"
        for k in set(loaded) & set(distinct)
        if not _dtype_ok(loaded[k].dtype, expected[k].dtype)
    )
    problems = []
    if missing:
        problems.append("missing tensors: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected tensors: " + ", ".join(unexpected))
    if mismatched:
        problems.append("mismatched shapes: " + "; ".join(mismatched))
    if wrong_dtype:
        problems.append("mismatched dtypes: " + "; ".join(wrong_dtype))
    if problems:
        raise ValueError(
            f"cannot load {f}: its tensors are not those of the model its config describes: " + " | ".join(problems)
        )
    with torch.no_grad():
        for k, t in loaded.items():
            expected[k].copy_(t)
