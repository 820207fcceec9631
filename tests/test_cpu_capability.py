"""The CPU instruction-set levels: detection, the run-time cap (API and environment) and backend_info.

The kernels' values at every level are checked by the op tests through the ``cpu_level`` fixture (conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import enigma_fast
from enigma_fast import _extension, ops

needs_ext = pytest.mark.skipif(_extension.EXTENSION is None, reason="needs the compiled extension")

LEVELS = ("default", "avx2", "avx512")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@needs_ext
def test_supported_levels_follow_the_cpu():
    levels = enigma_fast.supported_cpu_capabilities()
    assert levels[0] == "default" and list(levels) == list(LEVELS[: len(levels)])
    flags = _cpu_flags()
    if flags and os.uname().machine == "x86_64":
        has_v3 = {"avx2", "fma", "bmi1", "bmi2"} <= flags
        has_v4 = has_v3 and {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= flags
        assert levels[-1] == ("avx512" if has_v4 else "avx2" if has_v3 else "default")
    if os.uname().machine != "x86_64":
        assert levels == ["default"]


@needs_ext
def test_cap_and_reset():
    best = enigma_fast.supported_cpu_capabilities()[-1]
    with enigma_fast.cpu_capability("default") as active:
        assert active == "default" == enigma_fast.get_cpu_capability()
        assert enigma_fast.backend_info()["cpu_capability"] == "default"
    # A level above the CPU's runs the best it has, as ATEN_CPU_CAPABILITY does.
    assert enigma_fast.set_cpu_capability("avx512") == best
    assert enigma_fast.set_cpu_capability("AVX2") == ("avx2" if best != "default" else "default")
    enigma_fast.set_cpu_capability(None)
    assert enigma_fast.get_cpu_capability() in LEVELS


@pytest.mark.parametrize("bad", ["sse", "", 2])
def test_bad_level_names_the_argument(bad):
    with pytest.raises(ValueError, match=r"level must be one of 'default', 'avx2', 'avx512' or None, got"):
        enigma_fast.set_cpu_capability(bad)


def _run(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("ENIGMA_FAST_CPU_CAPABILITY", "ATEN_CPU_CAPABILITY")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120)


@needs_ext
@pytest.mark.parametrize(
    "env,want",
    [
        ({"ENIGMA_FAST_CPU_CAPABILITY": "default"}, "default"),
        ({"ATEN_CPU_CAPABILITY": "default"}, "default"),  # torch's cap applies when ours is unset
        ({"ENIGMA_FAST_CPU_CAPABILITY": "avx512", "ATEN_CPU_CAPABILITY": "default"}, "best"),  # ours wins
    ],
)
def test_environment_caps_the_level(env, want):
    res = _run(env, "import enigma_fast, json; print(json.dumps(enigma_fast.backend_info()))")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["cpu_capability"] == (info["cpu_capabilities"][-1] if want == "best" else want)


@needs_ext
def test_bad_environment_value_warns_once_and_runs_the_best_level():
    res = _run(
        {"ENIGMA_FAST_CPU_CAPABILITY": "sse9"},
        "import warnings; warnings.simplefilter('always'); import enigma_fast; "
        "print(enigma_fast.get_cpu_capability(), enigma_fast.supported_cpu_capabilities()[-1])",
    )
    assert res.returncode == 0, res.stderr
    assert "ENIGMA_FAST_CPU_CAPABILITY must be one of default, avx2, avx512, got 'sse9'" in res.stderr
    active, best = res.stdout.split()
    assert active == best


@needs_ext
def test_levels_agree_on_one_problem():
    # The same inputs at every level: float32 results agree to rounding (only the vector width and FMA differ).
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 150, 40, generator=g) for _ in range(3))
    rel = torch.randn(3, 2 * 64 - 1, 40, generator=g) * 0.1
    x = torch.randn(33, 300, generator=g)
    w = torch.randn(300, generator=g)
    outs = []
    for level in enigma_fast.supported_cpu_capabilities():
        with enigma_fast.cpu_capability(level):
            outs.append((ops.rel_attention(q, k, v, rel, causal=True), ops.rms_norm(x, w, 1e-6)))
    for att, norm in outs[1:]:
        torch.testing.assert_close(att, outs[0][0], atol=2e-6, rtol=2e-5)
        torch.testing.assert_close(norm, outs[0][1], atol=2e-6, rtol=2e-5)
