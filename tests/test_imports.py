"""The package's import graph has no cycle, and no import hides in a function.

Read statically with ast, so an import deferred into a function or written under
TYPE_CHECKING still counts: a cycle that only runs because one of its imports is
deferred is a cycle all the same (it breaks as soon as someone moves that import).
Importing a package (`from . import cells`, `from charlstm import x`) counts as
importing its __init__.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import charlstm

ROOT = Path(charlstm.__file__).parent

# Imports of charlstm modules inside functions (with the packages they lie in), each with
# its reason: an optional extra, or matplotlib, that only the command asking for it loads.
DEFERRED = {
    ("charlstm.commands.export", "charlstm.interop.onnx"): "onnx is an optional extra",
    ("charlstm.commands.sample", "charlstm.interop.onnx"): "onnxruntime is an optional extra",
    ("charlstm.commands.plot", "charlstm.plots"): "matplotlib loads only for plot",
}
ALLOWED = set(DEFERRED) | {(m, t.rsplit(".", 1)[0]) for m, t in DEFERRED if "." in t}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_in(name: str, tree: ast.AST, is_package: bool, known) -> set[str]:
    """The charlstm modules that the import statements anywhere under `tree` import,
    for code in module `name` (is_package: its file is an __init__.py).

    Importing a.b.c runs the __init__ of a and a.b first: those count too, except the
    packages `name` itself lies in (they are already running when it is imported);
    a name taken from one of those (`from .. import __version__`) still counts."""
    own = name.split(".") if is_package else name.split(".")[:-1]
    direct = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            direct += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package this file is in, up level - 1
                base = own[:len(own) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import x` imports the module pkg.x, or takes the name x from pkg
            direct += [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source
                       for a in node.names]
    ancestors = {".".join(own[:k]) for k in range(1, len(own) + 1)}
    implied = {".".join(t.split(".")[:k]) for t in direct for k in range(1, t.count(".") + 1)}
    return (set(direct) | (implied - ancestors)) & set(known)


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_in(name, parse(path), path.name == "__init__.py", known) - {name}
            for name, path in known.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_imports_resolve_anywhere_in_a_file():
    """What the graph is built from: a TYPE_CHECKING import, a deferred one, `from . import
    x` naming a module, `from .. import name` naming a package's __init__, absolute ones,
    and the __init__ of a package a module is imported from."""
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .config import A\n"
              "def f():\n    from . import engine\n    from .. import __version__\n"
              "import charlstm.text\nimport numpy\n")
    known = {"charlstm", "charlstm.cells", "charlstm.cells.config", "charlstm.cells.engine",
             "charlstm.text", "charlstm.engine", "charlstm.cells.lstm"}
    assert imports_in("charlstm.cells.example", ast.parse(source), False, known) == {
        "charlstm", "charlstm.cells.config", "charlstm.cells.engine", "charlstm.text"}
    assert imports_in("charlstm.cells", ast.parse("from . import engine"), True, known) == {
        "charlstm.cells.engine"}
    assert imports_in("charlstm.model", ast.parse("from .cells import lstm"), False,
                      known) == {"charlstm.cells", "charlstm.cells.lstm"}


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_charlstm_module_is_imported_inside_a_function():
    """A function-level import is how a cycle hides; only the optional extras may wait."""
    known = modules()
    deferred = set()
    for name, path in known.items():
        for fn in ast.walk(parse(path)):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = ast.Module(body=fn.body, type_ignores=[])
                deferred |= {(name, t) for t in imports_in(
                    name, inner, path.name == "__init__.py", known)}
    assert deferred <= ALLOWED, sorted(deferred - ALLOWED)
