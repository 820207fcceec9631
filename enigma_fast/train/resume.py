"""Continuing a run: the options a resumed run trains with (``python -m enigma_fast.train --resume RUN``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from enigma_fast.files import read_json_object
from enigma_fast.train.state import latest_checkpoint

__all__ = ["resume_values"]

log = logging.getLogger("enigma_fast.train")


def resume_values(run: Path, flags: dict[str, Any]) -> dict[str, Any]:
    """The options to continue ``run`` with: those its last checkpoint ran with (``train_config.json`` when it has
    none), then ``flags``. A new ``--max-steps`` is the new length of the run: the time limits of the finished
    schedule (``time_budget``, ``max_time``) are dropped unless given again."""
    saved = run / "train_config.json"
    if not saved.is_file():
        raise FileNotFoundError(f"--resume {run}: not a run folder ({saved.name} is missing)")
    ckpt = latest_checkpoint(run)
    state = read_json_object(ckpt / "trainer_state.json") if ckpt is not None else {}
    values = state.get("config") or read_json_object(saved)
    flags = dict(flags)
    if "max_steps" in flags:
        for name in ("time_budget", "max_time"):
            if name not in flags and values.get(name):
                log.info("--max-steps on resume: %s %s of the earlier schedule no longer applies", name, values[name])
                flags[name] = 0.0
    if flags:
        log.warning("resuming with changed options %s: the run is no longer an exact continuation", sorted(flags))
    return {**values, **flags}
