"""Helpers of the Hugging Face interface tests (tests/test_hf*.py): the extra's imports (a clean skip without it,
a failure with ``ENIGMA_FAST_REQUIRE_HF=1`` as CI sets), run folders made by the trainer, models whose greedy
tokens vary (weights at 10x the init scale, so random models do not repeat one token), left-padded batches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "hf"
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def require(name: str):
    """Import ``name`` or skip the module (fail instead when ENIGMA_FAST_REQUIRE_HF=1: CI installs the extra)."""
    if os.environ.get("ENIGMA_FAST_REQUIRE_HF") == "1":
        return __import__(name)
    return pytest.importorskip(name, reason=f"the hf extra is not installed ({name})")


def genome_fasta(path: Path, n: int = 12_000, seed: int = 0) -> Path:
    """A FASTA of two records: random sequence with repeats (something a small model learns in a few steps)."""
    rng = np.random.default_rng(seed)
    unit = "".join(rng.choice(list("ACGT"), 200))
    parts: list[str] = []
    while sum(map(len, parts)) < n:
        parts.append(unit if rng.random() < 0.6 else "".join(rng.choice(list("ACGT"), 200)))
    g = "".join(parts)[:n]
    path.write_text(">chr1\n" + g[: 2 * n // 3] + "\n>chr2\n" + g[2 * n // 3 :] + "\n")
    return path


def train_run(out: Path, fasta: Path, *extra: str, steps: int = 40) -> Path:
    """``python -m enigma_fast.train`` on ``fasta`` with a small model; returns the run's ``final/`` folder."""
    args = [
        sys.executable,
        "-m",
        "enigma_fast.train",
        str(fasta),
        "--model-override",
        "d_model=32",
        "--model-override",
        "n_head=2",
        "--window",
        "48",
        "--batch-size",
        "8",
        "--threads",
        "1",
        "--sample-tokens",
        "0",
        "--warmup-steps",
        "5",
        "--time-budget",
        "0",
        "--eval-interval",
        "0",
        "--max-steps",
        str(steps),
        "--out",
        str(out),
        *extra,
    ]
    proc = subprocess.run(args, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out / "final"


def sharpen(model: torch.nn.Module, factor: float = 10.0) -> torch.nn.Module:
    """Scale every matrix of ``model`` by ``factor`` in place: random models then predict varied tokens."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(factor)
    return model


def left_padded(lengths: list[int], low: int, high: int, pad: int = 0, seed: int = 0):
    """Random prompts of ``lengths`` left-padded to the longest: ``(ids (B, T), mask (B, T), lengths (B,))``."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(low, high, (len(lengths), T), generator=g)
    n = torch.tensor(lengths)
    mask = (torch.arange(T)[None, :] >= (T - n)[:, None]).long()
    return ids.masked_fill(mask == 0, pad), mask, n
