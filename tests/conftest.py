"""Test helpers: device and CPU-level parametrisation, a fixed seed per test (the CUDA skip lives in the root
conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import enigma_fast


def devices() -> list:
    """Parametrisation over devices: "cpu" always, "cuda" marked so it skips cleanly without a GPU."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=enigma_fast.supported_cpu_capabilities())
def cpu_level(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the test once per instruction-set level this CPU supports (the baseline "default" always), with the
    CPU kernels capped to that level; yields the level."""
    with enigma_fast.cpu_capability(request.param) as active:
        assert active == request.param
        yield active


@pytest.fixture(scope="session")
def hf_run_final(tmp_path_factory: pytest.TempPathFactory):
    """The final/ folder of a short `python -m enigma_fast.train` run (EnBERT, char tokenizer), shared by the
    Hugging Face interface tests (tests/test_hf*.py)."""
    from tests.hf_support import genome_fasta, train_run

    tmp = tmp_path_factory.mktemp("hf_run")
    return train_run(tmp / "run", genome_fasta(tmp / "g.fa"))
