"""What a fine-tuning run keeps: checkpoints for exact resume, and ``metrics.csv`` over steps.

A checkpoint is ``OUT/checkpoints/step_0000500/``::

    trainable.safetensors   the trainable tensors now (full: backbone and head; lora: adapters and head; probe: head)
    best.safetensors        the trainable tensors of the best validation so far (what the run ends with)
    optimizer.safetensors   AdamW's state, as the trainer stores it
    rng.safetensors         torch generator states
    trainer_state.json      step, planned steps, best metric and step, validations since the best, elapsed time,
                            the data fingerprint

written to ``.tmp-step_*`` and renamed into place after an fsync of every file (the trainer's rules, reusing its
helpers), so a crash mid-write leaves the earlier checkpoints as they were. Frozen tensors are not stored: they are
the pretrained folder's (or, with ``init="random"``, regenerated from the seed). The batches of step s are a
function of ``(seed, s)``, so a checkpoint's data position is its step.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from enigma_fast.data.tokens import install_folder
from enigma_fast.train.state import _fsync_tree, _load_optimizer, _optimizer_tensors, _restore_rng, _rng_tensors

__all__ = ["COLUMNS", "MetricsCSV", "latest", "load", "save", "trainable_state"]

COLUMNS = (
    "step",
    "epoch",
    "kind",
    "lr",
    "loss",
    "accuracy",
    "mcc",
    "f1",
    "auroc",
    "pearson",
    "spearman",
    "elapsed_s",
    "examples_per_s",
)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the module's trainable parameters, by name."""
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into the module's trainable parameters; ValueError naming ``source`` unless the names and
    shapes are exactly those."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    bad = sorted(set(params) ^ set(tensors)) + sorted(
        n for n in set(params) & set(tensors) if params[n].shape != tensors[n].shape
    )
    if bad:
        raise ValueError(f"{source} does not hold this run's trainable tensors: {', '.join(bad[:5])}")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[n])


def _steps(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.name.startswith("step_") and p.name[5:].isdigit() and (p / "trainer_state.json").is_file():
            out.append((int(p.name[5:]), p))
    return sorted(out)


def latest(run: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of the run folder, or None."""
    found = _steps(Path(run) / "checkpoints")
    return found[-1][1] if found else None


def save(
    run: str | os.PathLike,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    best: dict[str, torch.Tensor],
    state: dict[str, Any],
    keep_last: int = 1,
) -> Path:
    """Write checkpoint ``step`` atomically and keep the newest ``keep_last``; returns its folder."""
    root = Path(run) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step_*"):
        shutil.rmtree(stale, ignore_errors=True)
    final, tmp = root / f"step_{step:07d}", root / f".tmp-step_{step:07d}"
    tmp.mkdir()
    try:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        save_file(best, str(tmp / "best.safetensors"))
        tensors, groups = _optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps({**state, "step": step, "param_groups": groups}) + "\n")
        _fsync_tree(tmp)
        install_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in _steps(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict]:
    """Restore the model's trainable tensors, the optimizer and the RNG from ``ckpt``; returns (trainer state, best
    tensors)."""
    state = json.loads((ckpt / "trainer_state.json").read_text())
    load_trainable(model, load_file(str(ckpt / "trainable.safetensors")), str(ckpt))
    best = load_file(str(ckpt / "best.safetensors"))
    _load_optimizer(optimizer, load_file(str(ckpt / "optimizer.safetensors")), state.pop("param_groups"))
    _restore_rng(load_file(str(ckpt / "rng.safetensors")))
    return state, best


class MetricsCSV:
    """Rows of ``OUT/metrics.csv`` (``COLUMNS``; a value a row has not is left empty). On resume the rows after
    ``resume_step`` are dropped first, so the file reads as if the run had never stopped."""

    def __init__(self, run: str | os.PathLike, resume_step: int | None = None) -> None:
        self.path = Path(run) / "metrics.csv"
        rows = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
        self._f = open(self.path, "a", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=COLUMNS, extrasaction="ignore")

    def log(self, **row: Any) -> None:
        self._w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
        self._f.flush()

    def close(self) -> None:
        self._f.close()
