"""Loading the compiled extension: required in CI, clear failure modes, the reference fallback, backend_info."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import enigma_fast
from enigma_fast import _extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENIGMA_FAST_")}
    return subprocess.run(
        [sys.executable, "-W", "always::RuntimeWarning", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_extension_present_when_ci_requires_it():
    """CI sets ENIGMA_FAST_REQUIRE_EXT=1: a build that silently fell back to the reference must fail here."""
    if os.environ.get("ENIGMA_FAST_REQUIRE_EXT") != "1":
        pytest.skip("ENIGMA_FAST_REQUIRE_EXT is not set")
    assert _extension.EXTENSION is not None, _extension.LOAD_ERROR
    info = enigma_fast.backend_info()
    for op, per_device in info["ops"].items():
        assert per_device["cpu"].startswith("compiled"), (op, per_device)


def test_cuda_kernels_compiled_when_ci_requires_them():
    """CI builds the CUDA kernels even without a GPU; their registration is visible without touching a GPU."""
    if os.environ.get("ENIGMA_FAST_REQUIRE_CUDA_KERNELS") != "1":
        pytest.skip("ENIGMA_FAST_REQUIRE_CUDA_KERNELS is not set")
    info = enigma_fast.backend_info()
    assert info["cuda_kernels_compiled"]
    assert info["ops"]["rms_norm"]["cuda"].startswith("compiled")


def test_backend_info_shape():
    info = enigma_fast.backend_info()
    assert set(info) >= {"extension", "torch", "cuda_kernels_compiled", "ops"}
    assert "rms_norm" in info["ops"]
    assert set(info["ops"]["rms_norm"]) == {"cpu", "cuda"}


def test_missing_extension_falls_back_with_one_warning():
    r = _run(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "enigma_fast._C":
                    raise ModuleNotFoundError("No module named 'enigma_fast._C'", name=name)
                return None
        sys.meta_path.insert(0, Block())
        import torch, enigma_fast
        info = enigma_fast.backend_info()
        assert info["ops"]["rms_norm"] == {"cpu": "reference", "cuda": "reference"}, info
        x = torch.randn(3, 8, requires_grad=True)
        y = enigma_fast.ops.rms_norm(x, torch.ones(8), 1e-6)
        y.sum().backward()
        print("OK", info["extension"])
        """
    )
    assert r.returncode == 0, r.stderr
    assert "OK the compiled extension enigma_fast._C is not installed" in r.stdout
    assert r.stderr.count("fall back to the pure-PyTorch reference") == 1, r.stderr


@pytest.mark.skipif(_extension.EXTENSION is None, reason="compiled extension not built")
def test_extension_built_for_another_torch_says_so():
    r = _run(
        """
        import sys, types
        fake = types.ModuleType("enigma_fast._C")
        fake.torch_version = lambda: "1.0.0"
        fake.with_cuda = lambda: False
        sys.modules["enigma_fast._C"] = fake
        import enigma_fast
        """
    )
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "built against torch 1.0.0 but torch " + torch.__version__ in last
    assert "pip install --no-build-isolation" in last


def test_undefined_symbol_error_names_the_torch_versions():
    r = _run(
        """
        import sys, types, importlib.abc
        info = types.ModuleType("enigma_fast._build_info")
        info.TORCH_VERSION = "2.0.0"
        sys.modules["enigma_fast._build_info"] = info
        class Broken(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "enigma_fast._C":
                    raise ImportError("_C.so: undefined symbol: _ZN3c104impl8GPUTrace")
                return None
        sys.meta_path.insert(0, Broken())
        import enigma_fast
        """
    )
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "built against torch 2.0.0 but torch " + torch.__version__ in last


@pytest.mark.skipif(_extension.EXTENSION is None, reason="compiled extension not built")
def test_force_reference_routes_every_op_to_the_reference(monkeypatch):
    calls = []
    monkeypatch.setattr(enigma_fast.reference, "rms_norm", lambda *a: calls.append(a) or a[0])
    x = torch.randn(2, 4)
    enigma_fast.ops.rms_norm(x, None, 1e-6)
    assert not calls
    with _extension.force_reference():
        enigma_fast.ops.rms_norm(x, None, 1e-6)
    assert len(calls) == 1
    assert _extension.has_kernel("rms_norm", "cpu", torch.float32)
