"""Checkpoints of a run: the model folder plus everything exact resumption needs, written atomically.

A checkpoint is ``RUN/checkpoints/step_0000500/``::

    model/                    config.json, model.safetensors, tokenizer.json (loadable by from_pretrained)
    optimizer.safetensors     every optimizer state tensor, keyed "state.<param index>.<name>"
    trainer_state.json        step, optimizer param groups (hyper-parameters), data position, metrics so far
    rng.safetensors           torch CPU (and CUDA) generator states

No pickle is involved. The folder is written as ``.tmp-step_...`` and renamed into place once complete, after
an fsync of every file, so a crash mid-write leaves the previous checkpoints as they were; leftover temporary
folders are removed by the next save. Only the last ``keep_last`` checkpoints are kept. Nothing outside
``RUN/checkpoints/step_*`` and ``RUN/checkpoints/.tmp-step_*`` is ever removed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from enigma_fast.files import install_folder

__all__ = ["latest_checkpoint", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d+)$")


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")) + [path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"state.{idx}.{name}"] = t.detach().contiguous().cpu()
    return tensors, sd["param_groups"]


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = t
    for g in groups:  # JSON turns tuples into lists
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i in range(torch.cuda.device_count()):
            out[f"torch_cuda_{i}"] = torch.cuda.get_rng_state(i)
    return out


def _restore_rng(rng: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(rng["torch_cpu"])
    for key, t in rng.items():
        if key.startswith("torch_cuda_") and torch.cuda.is_available():
            i = int(key.rsplit("_", 1)[1])
            if i < torch.cuda.device_count():
                torch.cuda.set_rng_state(t, i)


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as ``(step, folder)``, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder of ``run_dir``, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model: Any,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    keep_last: int = 2,
) -> Path:
    """Write checkpoint ``step`` of ``model`` (an EnBERT/Enigma, unwrapped) atomically; prune to ``keep_last``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step_*"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp-step_{step:07d}"
    try:
        model.save_pretrained(tmp / "model")
        tensors, groups = _optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
        state = {**trainer_state, "step": step, "param_groups": groups}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1) + "\n")
        _fsync_tree(tmp)
        install_folder(tmp, final)  # an earlier save of this step is renamed aside, then removed
        _fsync_tree(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved checkpoint %s", final)
    return final


def load_checkpoint(ckpt: str | os.PathLike, model: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load weights, optimizer state and RNG states from checkpoint folder ``ckpt``; returns trainer_state."""
    from enigma_fast.models import checkpoint as model_io  # models sit below train

    ckpt = Path(ckpt)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    model_io.load_state(model, ckpt / "model")
    _load_optimizer(optimizer, load_file(str(ckpt / "optimizer.safetensors")), state.pop("param_groups"))
    _restore_rng(load_file(str(ckpt / "rng.safetensors")))
    logger.info("resumed from %s (step %d)", ckpt, state["step"])
    return state
