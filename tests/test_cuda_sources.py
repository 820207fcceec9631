"""Source rule for the CUDA side of the extension: no message formatting inside nvcc-compiled code.

On the H200 machine (torch 2.11, CUDA 13.0, its own host compiler) every error or warning message that an
nvcc-compiled file built from numbers (``TORCH_WARN_ONCE("... head dim ", D, ...)``, ``TORCH_CHECK(false, ...,
pos, ...)``) crashed the process with a segmentation fault inside ``std::ostream::operator<<(long)`` instantiated
in the extension, while the same messages built in the C++ translation units work. So the CUDA sources
(``csrc/**/*.cu``, ``*.cuh``) and every csrc header they include pass only string literals to the
``TORCH_CHECK``/``TORCH_WARN`` family and never format with streams; the checks whose messages name shapes and
values are declared in the op headers and defined in ``*_checks.cpp`` files, which nvcc never compiles.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"
MACROS = ("TORCH_CHECK", "TORCH_WARN", "TORCH_WARN_ONCE", "TORCH_INTERNAL_ASSERT", "AT_ERROR", "TORCH_CHECK_VALUE")
CONDITION_FIRST = {"TORCH_CHECK", "TORCH_INTERNAL_ASSERT", "TORCH_CHECK_VALUE"}
STREAMS = re.compile(r"\b(c10::str|std::ostringstream|std::stringstream|std::cout|std::cerr)\b")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
LITERAL = re.compile(r'^(\s*"(?:[^"\\]|\\.)*"\s*)+$')


def _strip_comments(src: str) -> str:
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", " ", src)


def _calls(src: str, macro: str) -> list[list[str]]:
    """The top-level comma-separated arguments of every ``macro(...)`` call in ``src``."""
    out = []
    for m in re.finditer(r"\b" + macro + r"\s*\(", src):
        i, depth, args, cur, in_str = m.end(), 1, [], [], False
        while depth:
            c = src[i]
            if in_str:
                cur.append(c)
                if c == "\\":
                    cur.append(src[i + 1])
                    i += 1
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
                cur.append(c)
            elif c in "([{":
                depth += 1
                cur.append(c)
            elif c in ")]}":
                depth -= 1
                if depth:
                    cur.append(c)
            elif c == "," and depth == 1:
                args.append("".join(cur))
                cur = []
            else:
                cur.append(c)
            i += 1
        args.append("".join(cur))
        out.append(args)
    return out


def _cuda_closure() -> set[Path]:
    """The CUDA sources and every csrc header they include, transitively."""
    todo = sorted(CSRC.rglob("*.cu")) + sorted(CSRC.rglob("*.cuh"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for inc in INCLUDE.findall(path.read_text()):
            dep = CSRC / inc
            if dep.exists():
                todo.append(dep)
    return seen


def _violations(path: Path) -> list[str]:
    src = _strip_comments(path.read_text())
    bad = [f"{path.name}: {m.group(1)}" for m in STREAMS.finditer(src)]
    for macro in MACROS:
        for args in _calls(src, macro):
            message = args[1:] if macro in CONDITION_FIRST else args
            for a in message:
                if a.strip() and not LITERAL.match(a):
                    bad.append(f"{path.name}: {macro}(... {a.strip()[:40]} ...)")
    return bad


def test_closure_covers_the_cuda_sources_and_their_headers() -> None:
    names = {p.name for p in _cuda_closure()}
    assert {"attention_cuda.cu", "kmer_cuda.cu", "rms_norm_cuda.cu", "attention.h", "checks.h"} <= names


@pytest.mark.parametrize("path", sorted(_cuda_closure()), ids=lambda p: str(p.relative_to(CSRC)))
def test_no_formatted_message_in_nvcc_compiled_code(path: Path) -> None:
    assert _violations(path) == []


def test_the_rule_finds_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cu"
    bad.write_text(
        'void f(long D) {\n  TORCH_CHECK(D > 0, "head dim ", D, " must be positive");\n'
        '  TORCH_WARN_ONCE("no kernel"); // TORCH_CHECK(x, y)\n  auto s = c10::str(D);\n}\n'
    )
    found = _violations(bad)
    assert any("D ..." in v for v in found) and any("c10::str" in v for v in found) and len(found) == 2
    good = tmp_path / "good.cu"
    good.write_text('void f(bool ok) { TORCH_CHECK(ok, "too many rows (B * H * Tq > 2^31 - 1) for one launch"); }\n')
    assert _violations(good) == []
