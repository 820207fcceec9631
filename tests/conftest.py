"""Test helpers: device parametrisation and a fixed seed per test (the CUDA skip lives in the root conftest.py)."""

from __future__ import annotations

import pytest
import torch


def devices() -> list:
    """Parametrisation over devices: "cpu" always, "cuda" marked so it skips cleanly without a GPU."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
