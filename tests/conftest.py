"""Shared test fixtures. Nothing here touches the GPU at import or collection time."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def cuda_device() -> torch.device:
    """The current CUDA device; skips the test (at run time, not collection) when there is none."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda", torch.cuda.current_device())


def devices() -> list:
    """Parametrisation over devices: "cpu" always, "cuda" marked so it skips cleanly without a GPU."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
