"""Pytest setup shared by tests/ and benchmarks/: CUDA cases skip at run time when there is no GPU.

Nothing here touches the GPU at import or collection time.
"""

from __future__ import annotations

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture
def cuda_device() -> torch.device:
    """The current CUDA device; skips the test (at run time, not collection) when there is none."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda", torch.cuda.current_device())
