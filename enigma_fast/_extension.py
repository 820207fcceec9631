"""Loads the compiled extension ``enigma_fast._C`` and says which implementation each op runs.

Three outcomes at import:
  * the extension loads and matches the installed torch: ops run the C++/CUDA kernels;
  * it is absent (a pure-Python install): one warning, every op runs its pure-PyTorch reference;
  * it was built against another torch: ImportError with one sentence naming both versions and the fix.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Iterator
from types import ModuleType

import torch

__all__ = [
    "CPU_CAPABILITIES",
    "EXTENSION",
    "LOAD_ERROR",
    "backend_info",
    "cpu_capability",
    "force_reference",
    "get_cpu_capability",
    "has_kernel",
    "register_op",
    "set_cpu_capability",
    "supported_cpu_capabilities",
]

_REBUILD_HINT = "pip install --no-build-isolation --force-reinstall --no-deps ."


def _base_version(v: str) -> str:
    return v.split("+")[0]


def _built_against() -> str | None:
    try:
        from enigma_fast import _build_info  # type: ignore[attr-defined]
    except ImportError:
        return None
    return getattr(_build_info, "TORCH_VERSION", None) or None


def _load() -> tuple[ModuleType | None, str | None]:
    if os.environ.get("ENIGMA_FAST_DISABLE_EXT", "0") == "1":
        return None, "disabled by ENIGMA_FAST_DISABLE_EXT=1"
    built = _built_against()
    try:
        ext = importlib.import_module("enigma_fast._C")
    except ModuleNotFoundError:
        return None, "the compiled extension enigma_fast._C is not installed"
    except (ImportError, OSError) as err:  # undefined symbols, wrong ABI, missing libraries
        if built and _base_version(built) != _base_version(torch.__version__):
            raise ImportError(
                f"enigma_fast's compiled extension was built against torch {built} but torch {torch.__version__} "
                f"is installed; rebuild it against this torch with `{_REBUILD_HINT}` in the source tree."
            ) from err
        raise ImportError(
            f"enigma_fast's compiled extension failed to load ({err}); rebuild it with `{_REBUILD_HINT}`."
        ) from err
    compiled = ext.torch_version()
    if _base_version(compiled) != _base_version(torch.__version__):
        raise ImportError(
            f"enigma_fast's compiled extension was built against torch {compiled} but torch {torch.__version__} "
            f"is installed; rebuild it against this torch with `{_REBUILD_HINT}` in the source tree."
        )
    return ext, None


EXTENSION, LOAD_ERROR = _load()
if EXTENSION is None and not LOAD_ERROR.startswith("disabled"):
    warnings.warn(
        f"enigma_fast: {LOAD_ERROR}; all ops fall back to the pure-PyTorch reference implementations "
        f"(slow). Install with `pip install .` to build the kernels.",
        RuntimeWarning,
        stacklevel=2,
    )

if EXTENSION is not None and EXTENSION.bad_cpu_capability_env():
    warnings.warn(
        f"enigma_fast: ENIGMA_FAST_CPU_CAPABILITY must be one of default, avx2, avx512, got "
        f"{EXTENSION.bad_cpu_capability_env()!r}; the CPU kernels run at {EXTENSION.cpu_capability()!r}",
        RuntimeWarning,
        stacklevel=2,
    )

# Instruction-set levels of the CPU kernels, lowest first (PyTorch's ATEN_CPU_CAPABILITY names).
CPU_CAPABILITIES = ("default", "avx2", "avx512")


def get_cpu_capability() -> str | None:
    """The instruction-set level the CPU kernels run at now: ``"default"``, ``"avx2"`` or ``"avx512"``.

    ``"default"`` is the architecture's baseline (x86-64 SSE2; NEON on aarch64), ``"avx2"`` x86-64-v3 (AVX2 + FMA),
    ``"avx512"`` x86-64-v4. It is the best level the CPU has unless capped by ``ENIGMA_FAST_CPU_CAPABILITY`` (else
    ``ATEN_CPU_CAPABILITY``) or :func:`set_cpu_capability`. ``None`` when the compiled extension is not loaded.
    """
    return EXTENSION.cpu_capability() if EXTENSION is not None else None


def supported_cpu_capabilities() -> list[str]:
    """The levels this CPU can run, lowest first (``["default"]`` without the compiled extension)."""
    return list(EXTENSION.cpu_capabilities()) if EXTENSION is not None else ["default"]


def set_cpu_capability(level: str | None) -> str | None:
    """Cap the level the CPU kernels dispatch to; ``None`` drops the cap (the environment decides again).

    A level above what the CPU has runs the best the CPU has, as ``ATEN_CPU_CAPABILITY`` does. Returns the level
    now active (``None`` without the compiled extension). Takes effect for the next op call, in every thread.
    """
    if level is not None and (not isinstance(level, str) or level.lower() not in CPU_CAPABILITIES):
        raise ValueError(f"level must be one of {', '.join(map(repr, CPU_CAPABILITIES))} or None, got {level!r}")
    if EXTENSION is None:
        return None
    return EXTENSION.set_cpu_capability(level.lower() if level is not None else "")


@contextlib.contextmanager
def cpu_capability(level: str) -> Iterator[str | None]:
    """Within this context the CPU kernels run at ``level`` (capped to the CPU's best); yields the level in use."""
    prev = get_cpu_capability()
    active = set_cpu_capability(level)
    try:
        yield active
    finally:
        if prev is not None:
            set_cpu_capability(prev)


# op name -> {device type -> dtypes its compiled kernel takes}; filled by the ops modules.
_OPS: dict[str, dict[str, frozenset[torch.dtype]]] = {}
# op name -> the registered kernel names (enigma_fast::...) whose presence decides the backend.
_OP_KERNELS: dict[str, tuple[str, ...]] = {}

_DISPATCH_KEY = {"cpu": "CPU", "cuda": "CUDA"}


def _compiled_for(name: str, device_type: str) -> bool:
    if EXTENSION is None or device_type not in _DISPATCH_KEY:
        return False
    key = _DISPATCH_KEY[device_type]
    return all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"enigma_fast::{k}", key) for k in _OP_KERNELS.get(name, ())
    )


_COMPILED_CACHE: dict[tuple[str, str], bool] = {}


def register_op(name: str, kernels: tuple[str, ...], dtypes: dict[str, frozenset[torch.dtype]]) -> None:
    """Declare a public op: the registered ``enigma_fast::`` kernels it calls and the dtypes each device takes.

    Kernel availability per device is looked up here, once, at import (a dispatcher query that touches no GPU):
    ``has_kernel`` is then a dictionary read that torch.compile traces without a graph break.
    """
    _OPS[name] = dtypes
    _OP_KERNELS[name] = kernels
    for device_type in _DISPATCH_KEY:
        _COMPILED_CACHE[(name, device_type)] = _compiled_for(name, device_type)


_FORCE_REFERENCE = False


@contextlib.contextmanager
def force_reference() -> Iterator[None]:
    """Within this context every op runs its pure-PyTorch reference (for comparisons and benchmarks).

    Routing is decided when an op is called (or traced by torch.compile), so compile inside the context to get
    a compiled reference.
    """
    global _FORCE_REFERENCE
    prev, _FORCE_REFERENCE = _FORCE_REFERENCE, True
    try:
        yield
    finally:
        _FORCE_REFERENCE = prev


def has_kernel(name: str, device_type: str, dtype: torch.dtype) -> bool:
    """Whether op ``name`` runs a compiled kernel for tensors of ``dtype`` on ``device_type`` ("cpu"/"cuda")."""
    if _FORCE_REFERENCE:
        return False
    return _COMPILED_CACHE.get((name, device_type), False) and dtype in _OPS[name].get(device_type, frozenset())


def backend_info() -> dict[str, object]:
    """Which implementation each op runs on each device.

    Returns ``{"extension": "loaded" | reason, "torch": version, "cuda_kernels_compiled": bool,
    "cpu_capability": level the CPU kernels run at (None without the extension), "cpu_capabilities": levels this
    CPU runs, "ops": {op: {"cpu": desc, "cuda": desc}}}`` where desc is ``"compiled (float32, ...)"`` naming the
    dtypes the kernel takes (others use the reference), or ``"reference"``. Does not touch the GPU.
    """
    ops: dict[str, dict[str, str]] = {}
    for name, per_device in _OPS.items():
        ops[name] = {}
        for dev in ("cpu", "cuda"):
            if _compiled_for(name, dev):
                names = ", ".join(sorted(str(d).removeprefix("torch.") for d in per_device.get(dev, ())))
                ops[name][dev] = f"compiled ({names}); reference for other dtypes"
            else:
                ops[name][dev] = "reference"
    return {
        "extension": "loaded" if EXTENSION is not None else LOAD_ERROR,
        "torch": torch.__version__,
        "cuda_kernels_compiled": bool(EXTENSION is not None and EXTENSION.with_cuda()),
        "cpu_capability": get_cpu_capability(),
        "cpu_capabilities": supported_cpu_capabilities(),
        "ops": ops,
    }
