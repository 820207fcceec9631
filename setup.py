"""Build script for enigma_fast: the Python package plus its compiled torch extension ``enigma_fast._C``.

CPU kernels (``csrc/**/*.cpp``) are always built. CUDA kernels (``csrc/**/*.cu``) are built whenever the
installed torch is a CUDA build and nvcc is found (``CUDA_HOME``), whether or not a GPU is visible.

Environment switches:
  ENIGMA_FAST_SKIP_CUDA=1     build the CPU kernels only
  ENIGMA_FAST_SKIP_EXT=1      build no extension at all (pure-PyTorch reference ops)
  TORCH_CUDA_ARCH_LIST        GPU architectures; default "8.0;9.0+PTX" (sm_80, sm_90 and PTX for sm_90)
  MAX_JOBS                    parallel compile jobs (ninja)
  ENIGMA_FAST_DEBUG=1         -O0 -g host code
"""

from __future__ import annotations

import glob
import os
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _sources(pattern: str) -> list[str]:
    # Relative paths keep the build reproducible and the object names short.
    return sorted(
        os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", "**", pattern), recursive=True)
    )


def _write_build_info(torch_version: str, with_cuda: bool, arch_list: str) -> None:
    path = os.path.join(ROOT, "enigma_fast", "_build_info.py")
    with open(path, "w") as f:
        f.write(
            '"""Written by setup.py at build time: what the compiled extension was built against."""\n\n'
            f"TORCH_VERSION = {torch_version!r}\n"
            f"WITH_CUDA = {with_cuda!r}\n"
            f"CUDA_ARCH_LIST = {arch_list!r}\n"
        )


def _find_cuda_home(ce) -> bool:
    """Point torch's cpp_extension at a CUDA toolkit that has both nvcc and the runtime headers.

    torch guesses CUDA_HOME from the nvcc on PATH; when that nvcc is a stand-alone copy (e.g. /usr/local/bin/nvcc)
    the guess lacks include/cuda_runtime.h, so look at the usual toolkit folders too. Returns False (CPU-only
    build, with a message) when no usable toolkit is found.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), ce.CUDA_HOME, "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for home in candidates:
        if (
            home
            and os.path.exists(os.path.join(home, "bin", "nvcc"))
            and os.path.exists(os.path.join(home, "include", "cuda_runtime.h"))
        ):
            ce.CUDA_HOME = home
            os.environ["CUDA_HOME"] = home
            return True
    print("enigma_fast: no CUDA toolkit with nvcc and cuda_runtime.h found; building the CPU kernels only")
    return False


def _extensions():
    if _flag("ENIGMA_FAST_SKIP_EXT"):
        _write_build_info("", False, "")
        return [], {}
    import torch
    from torch.utils import cpp_extension as ce

    with_cuda = not _flag("ENIGMA_FAST_SKIP_CUDA") and torch.version.cuda is not None and _find_cuda_home(ce)
    debug = _flag("ENIGMA_FAST_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # -ffp-contract=fast: a * b + c in the CPU kernels' vector code becomes one FMA where the ISA level has it
    # (ISO C++ mode turns contraction off). -Wno-psabi: those kernels pass vectors between always_inline
    # functions, which never cross a real call (common/simd.h), so GCC's ABI notes about them do not apply.
    cxx = [
        *opt,
        "-fopenmp",
        "-ffp-contract=fast",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        "-Wno-psabi",
        "-fvisibility=hidden",
    ]
    if _flag("ENIGMA_FAST_WERROR"):
        cxx.append("-Werror")
    sources = _sources("*.cpp")
    macros: list[tuple[str, str | None]] = []
    arch_list = ""
    nvcc = []
    if with_cuda:
        arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCH_LIST
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
        sources += _sources("*.cu")
        nvcc = [
            *opt,
            "--use_fast_math",
            "--expt-relaxed-constexpr",
            "-lineinfo",
            "-Xcompiler=-Wall",
            "-Xcompiler=-Wno-unused-parameter",
        ]
        if _flag("ENIGMA_FAST_WERROR"):
            nvcc += ["-Werror=all-warnings", "-Xcompiler=-Werror"]
        if _flag("ENIGMA_FAST_PTXAS_VERBOSE"):
            nvcc.append("-Xptxas=-v")
        macros.append(("ENIGMA_FAST_WITH_CUDA", "1"))
        ext_cls = ce.CUDAExtension
    else:
        ext_cls = ce.CppExtension
    _write_build_info(torch.__version__, with_cuda, arch_list)
    ext = ext_cls(
        name="enigma_fast._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=macros,
        extra_compile_args={"cxx": cxx, "nvcc": nvcc} if with_cuda else {"cxx": cxx},
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": ce.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    packages=find_packages(include=["enigma_fast", "enigma_fast.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    include_package_data=True,
)
