"""Sharded checkpoints of an FSDP2 run, written and read with ``torch.distributed.checkpoint`` (DCP).

A sharded checkpoint is ``RUN/checkpoints/step_0000500/``::

    sharded/              DCP files: ``__<rank>_0.distcp`` per writing rank (its shards of the weights and of the
                          AdamW state, keyed by parameter name) and ``.metadata`` (global shapes, where each shard is)
    rng.safetensors       rank 0's torch generator states
    trainer_state.json    step, data position, config, metrics so far (as in a full checkpoint); written last

Every rank writes its own shards into ``checkpoints/.tmp-step_N/sharded`` (DCP fsyncs each file and writes the
metadata once every rank's files are complete); rank 0 then writes the other two files, fsyncs the folder and
renames it to ``step_N``. :func:`enigma_fast.train.state.latest_checkpoint` takes only folders named ``step_N``
that hold ``trainer_state.json``, so a checkpoint cut short at any point is never resumed from; the next save
removes the leftover. DCP reshards when it loads: a checkpoint written by W ranks loads into any number of ranks,
or into an unsharded model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from enigma_fast.files import install_folder
from enigma_fast.train.state import _fsync_tree, _restore_rng, _rng_tensors, list_checkpoints

__all__ = ["SHARDED_NAME", "is_sharded", "load_sharded_checkpoint", "load_sharded_model", "save_sharded_checkpoint"]

logger = logging.getLogger(__name__)

SHARDED_NAME = "sharded"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _dcp_load(state: dict[str, Any], ckpt: Path) -> None:
    """``dcp.load`` of ``ckpt/sharded`` into ``state``; without a process group, in this process alone (DCP's
    warning that it assumes so is expected then, and silenced)."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        if not dist.is_initialized():
            warnings.filterwarnings("ignore", message="torch.distributed is .*assuming the intent is to load")
        dcp.load(state, checkpoint_id=str(ckpt / SHARDED_NAME), no_dist=not dist.is_initialized())


def is_sharded(ckpt: str | os.PathLike) -> bool:
    """True when checkpoint folder ``ckpt`` holds DCP shards (written by ``--strategy fsdp``)."""
    return (Path(ckpt) / SHARDED_NAME / ".metadata").is_file()


def save_sharded_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    keep_last: int = 2,
) -> Path:
    """Write checkpoint ``step`` of the FSDP2 ``model`` and its ``optimizer``: a collective, every rank calls it and
    writes its own shards (see the module doc); rank 0 completes and installs the folder and prunes the run to the
    last ``keep_last`` checkpoints. Returns the checkpoint folder."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp-step_{step:07d}"
    if _rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step_*"):  # left by a crash mid-write
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    try:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / SHARDED_NAME))
        if _rank() == 0:
            save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
            world = dist.get_world_size() if dist.is_initialized() else 1
            state = {**trainer_state, "step": step, "checkpoint": {"format": "dcp", "world_size": world}}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1) + "\n")
            _fsync_tree(tmp)
            install_folder(tmp, final)
            _fsync_tree(root)
    except BaseException:
        if _rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if _rank() == 0:
        for _, old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved sharded checkpoint %s", final)
    _barrier()
    return final


def load_sharded_checkpoint(
    ckpt: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load weights, AdamW state and RNG states from the sharded checkpoint folder ``ckpt`` into ``model`` (FSDP2
    over any number of ranks, or a plain model) and ``optimizer``; returns trainer_state. A collective when a
    process group is up: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    ckpt = Path(ckpt)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    model_sd, optim_sd = get_state_dict(model, optimizer)
    loaded = {"model": model_sd, "optim": optim_sd}
    _dcp_load(loaded, ckpt)
    set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    _restore_rng(load_file(str(ckpt / "rng.safetensors")))
    logger.info(
        "resumed from sharded checkpoint %s (step %d, written by %s rank(s))",
        ckpt,
        state["step"],
        state.get("checkpoint", {}).get("world_size", "?"),
    )
    return state


def load_sharded_model(ckpt: str | os.PathLike, model: torch.nn.Module) -> None:
    """Load only the weights of sharded checkpoint ``ckpt`` into ``model`` (plain or FSDP2): e.g. to compare a
    run's final model folder with its last checkpoint, or to export a checkpoint with ``save_pretrained``."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    sd = {"model": get_model_state_dict(model)}
    _dcp_load(sd, Path(ckpt))
    set_model_state_dict(model, sd["model"])
