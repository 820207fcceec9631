"""The package's shape: no import circle, every import goes down the layers that docs/architecture.md lists, the
command-line tools live in enigma_fast/cli (each module under 250 lines) and the ``python -m enigma_fast.<tool>``
modules only hand over to them.

Imports are read from the source (every ``import`` / ``from ... import`` anywhere in a module, function bodies
included; ``from package import name`` counts as importing the submodule when ``name`` is one). Code under
``if __name__ == "__main__":`` runs only when the file is the program, never on import: it is left out.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "enigma_fast"
DOC = ROOT / "docs" / "architecture.md"
TOOLS = ("train", "generate", "score", "embed", "vep")
GENERATED = ("enigma_fast._build_info",)  # written by setup.py when the package is built, not kept in git
MAX_CLI_LINES = 250


def _modules() -> dict[str, Path | None]:
    out: dict[str, Path | None] = dict.fromkeys(GENERATED)
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_main_guard(node: ast.AST) -> bool:
    t = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(t, ast.Compare)
        and isinstance(t.left, ast.Name)
        and t.left.id == "__name__"
        and len(t.comparators) == 1
        and isinstance(t.comparators[0], ast.Constant)
        and t.comparators[0].value == "__main__"
    )


def _import_nodes(tree: ast.AST):
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        todo.extend(child for child in ast.iter_child_nodes(node) if not _is_main_guard(child))


def _imports(name: str, path: Path | None, modules: dict[str, Path | None]) -> set[str]:
    """The enigma_fast modules ``name`` imports (resolved to the deepest module that exists)."""

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    if path is None:  # a generated module: it imports nothing of the package
        return set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            if target == "enigma_fast" or target.startswith("enigma_fast."):
                resolved = resolve(target)
                if resolved is not None and resolved != name:
                    found.add(resolved)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, and modules that import themselves (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layers() -> list[list[str]]:
    """The layers of docs/architecture.md, top first: the lines of its block fenced with ```layers, each a layer of
    comma-separated units (a package, or a module)."""
    m = re.search(r"```layers\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"{DOC} must hold the layer table in a block fenced with ```layers"
    layers = []
    for line in m.group(1).splitlines():
        units = line.split("#")[0].split(":")[-1]
        if units.strip():
            layers.append([u.strip() for u in units.split(",") if u.strip()])
    return layers


def _unit_of(module: str, units: list[str]) -> str | None:
    """The most specific unit holding ``module``: the unit itself or a module below it (the package root
    ``enigma_fast`` holds only itself, so a module left out of the table is noticed)."""
    best = None
    for u in units:
        if module == u or (u != "enigma_fast" and module.startswith(u + ".")):
            if best is None or len(u) > len(best):
                best = u
    return best


def test_no_import_circles():
    circles = _circles(_graph())
    assert not circles, "import circles in enigma_fast: " + "; ".join(" <-> ".join(c) for c in circles)


def test_every_import_goes_down_the_layers():
    layers = _layers()
    depth = {u: len(layers) - i for i, layer in enumerate(layers) for u in layer}  # bottom layer: 1
    units = list(depth)
    graph = _graph()
    unplaced = sorted(m for m in graph if _unit_of(m, units) is None)
    assert not unplaced, f"modules in no layer of docs/architecture.md: {unplaced}"
    wrong = []
    for module, targets in sorted(graph.items()):
        u = _unit_of(module, units)
        for target in sorted(targets):
            t = _unit_of(target, units)
            if t != u and depth[t] >= depth[u]:
                where = "the same layer as" if depth[t] == depth[u] else "a layer above"
                wrong.append(f"{module} imports {target} ({t}: {where} {u})")
    assert not wrong, "imports against the layer order of docs/architecture.md:\n" + "\n".join(wrong)


def test_layer_table_names_real_units_once():
    layers = _layers()
    units = [u for layer in layers for u in layer]
    modules = _modules()
    assert len(units) == len(set(units)), "a unit stands in two layers"
    missing = [u for u in units if u not in modules]
    assert not missing, f"units of docs/architecture.md that are no module or package: {missing}"


@pytest.mark.parametrize("tool", TOOLS)
def test_each_tool_lives_in_cli_and_its_module_only_hands_over(tool):
    assert (PACKAGE / "cli" / f"{tool}.py").is_file(), f"enigma_fast/cli/{tool}.py is missing"
    entry = PACKAGE / "train" / "__main__.py" if tool == "train" else PACKAGE / f"{tool}.py"
    tree = ast.parse(entry.read_text())
    defined = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    assert not defined, f"{entry.relative_to(ROOT)} defines {defined}: its code belongs in enigma_fast/cli/{tool}.py"


def test_cli_modules_stay_small():
    files = sorted((PACKAGE / "cli").glob("*.py"))
    assert {f.stem for f in files} >= set(TOOLS)
    long = {f.name: n for f in files if (n := len(f.read_text().splitlines())) >= MAX_CLI_LINES}
    assert not long, f"enigma_fast/cli modules of {MAX_CLI_LINES} lines or more: {long}"


def test_the_checks_see_what_they_check():
    """The import reader on known cases: function-level imports count, ``__main__`` blocks do not, a submodule
    named in ``from package import name`` is that submodule, and a circle is found."""
    graph = _graph()
    assert "enigma_fast.generation" in graph["enigma_fast.models.base"]
    assert "enigma_fast.tokenizers._base" in graph["enigma_fast.tokenizers.kmer"]
    assert "enigma_fast.ops.kmer" in graph["enigma_fast.tokenizers._base"]  # "from enigma_fast.ops import kmer"
    assert "enigma_fast.models" in graph["enigma_fast.cli._common"]  # imported inside load_checkpoint
    assert "enigma_fast.cli.infill_eval" not in graph["enigma_fast.train.infill_eval"]  # only under __main__
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []
