"""The import structure of caffe2x, read with ``ast`` (nothing is imported to check it).

Two rules (issue 13):

* a framework (torch, tensorflow, keras, onnx, onnxruntime) is imported only by its own target package
  ``caffe2x/targets/<fw>/``, so converting to safetensors never pulls in torch and the validator stays
  framework-free;
* no import cycle among caffe2x modules, counting imports inside functions too (a function-level
  import is how a cycle hides until the day someone moves it to the top).

Imports under ``if TYPE_CHECKING:`` never run and are left out. ``from pkg import name`` counts as an
import of ``pkg.name`` when that is a module, else of ``pkg``; a package's ``__init__`` running before
its submodules is Python's doing, not an edge.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "caffe2x"

#: framework import name -> the only target package allowed to import it
FRAMEWORK_OWNERS = {
    "torch": "caffe2x.targets.torch",
    "tensorflow": "caffe2x.targets.keras",
    "keras": "caffe2x.targets.keras",
    "onnx": "caffe2x.targets.onnx",
    "onnxruntime": "caffe2x.targets.onnx",
    "cv2": "caffe2x.oracles.opencv",  # OpenCV's Caffe importer, the optional `validate --oracle opencv`
}


@dataclass(frozen=True)
class Import:
    module: str   # importing caffe2x module
    target: str   # imported module (absolute)
    line: int

    def where(self) -> str:
        return f"{self.module.replace('.', '/')}.py:{self.line}"


def module_files() -> dict[str, Path]:
    """Module name -> file, for every module of the caffe2x package."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside an ``if TYPE_CHECKING:`` block."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skip.update(id(n) for n in ast.walk(child))
    return skip


def imports_of(module: str, path: Path, modules: set[str]) -> list[Import]:
    """Every import statement in the file (module level and inside functions), resolved to absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _type_checking_nodes(tree)
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(module, sub if sub in modules else base, node.lineno))
    return found


def all_imports() -> list[Import]:
    files = module_files()
    names = set(files)
    return [imp for name, path in files.items() for imp in imports_of(name, path, names)]


def _owner_ok(module: str, owner: str) -> bool:
    return module == owner or module.startswith(owner + ".")


def test_only_a_frameworks_own_target_package_imports_it() -> None:
    offenders = []
    for imp in all_imports():
        top = imp.target.split(".")[0]
        owner = FRAMEWORK_OWNERS.get(top)
        if owner is not None and not _owner_ok(imp.module, owner):
            offenders.append(f"{imp.where()} imports {imp.target} (only {owner} may)")
    assert offenders == [], "framework imported outside its target package:\n  " + "\n  ".join(offenders)


def find_cycles(edges: dict[str, dict[str, int]]) -> list[tuple[list[str], list[str]]]:
    """Per strongly connected component with a cycle: (its modules, the shortest cycle through its
    first module as a closed path ``[a, b, ..., a]``)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan, recursive: caffe2x has well under 1000 modules
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                strongconnect(w)
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
            if len(comp) > 1 or v in edges.get(v, {}):
                components.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    cycles = []
    for comp in components:  # shortest cycle through the component's first module, by BFS
        members, start = set(comp), comp[0]
        prev: dict[str, str] = {}
        frontier, seen, closing = [start], {start}, None
        while frontier and closing is None:
            nxt = []
            for v in frontier:
                for w in sorted(edges.get(v, {})):
                    if w == start:
                        closing = v
                        break
                    if w in members and w not in seen:
                        seen.add(w)
                        prev[w] = v
                        nxt.append(w)
                if closing is not None:
                    break
            frontier = nxt
        path = [closing]
        while path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append((comp, [*reversed(path), start]))
    return cycles


def test_no_import_cycle_among_caffe2x_modules() -> None:
    edges: dict[str, dict[str, int]] = {}
    for imp in all_imports():
        if imp.target.startswith("caffe2x") and imp.target != imp.module:
            edges.setdefault(imp.module, {}).setdefault(imp.target, imp.line)
    files = module_files()
    described = []
    for members, cycle in find_cycles(edges):
        steps = [f"{files[a].relative_to(PACKAGE_DIR.parent)}:{edges[a][b]} imports {b}" for a, b in zip(cycle, cycle[1:])]
        described.append(" -> ".join(cycle) + "\n      " + "\n      ".join(steps)
                         + (f"\n      (modules tied in this knot: {', '.join(members)})" if len(members) > len(cycle) - 1 else ""))
    assert described == [], ("import cycle(s) among caffe2x modules (function-level imports count; break "
                             "them by moving the shared part into a module both import):\n  "
                             + "\n  ".join(described))


def test_cycle_finder_names_a_cycle_and_ignores_a_diamond() -> None:
    assert find_cycles({"a": {"b": 1, "c": 1}, "b": {"d": 1}, "c": {"d": 1}}) == []
    assert find_cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "x": {"a": 1}}) == [
        (["a", "b", "c"], ["a", "b", "c", "a"])]


def test_import_walker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
                   "def f():\n    from ..reader import read\n    from . import fixtures\n    import onnx\n")
    got = {(i.target, i.line) for i in imports_of("caffe2x.targets.m", src, {"caffe2x.targets.fixtures"})}
    assert got == {("typing", 1), ("caffe2x.reader", 5), ("caffe2x.targets.fixtures", 6), ("onnx", 7)}


#: the modules that orchestrate conversion and validation: they reach frameworks only through targets
FRAMEWORK_FREE = ("validator", "comparison", "results", "artifacts", "report", "convert", "cli_validate",
                  "framework_run", "isolated")


def test_validation_and_conversion_modules_do_not_even_name_a_framework() -> None:
    pattern = re.compile(r"\b(" + "|".join(sorted(FRAMEWORK_OWNERS)) + r")\b", re.I)
    hits = [f"caffe2x/{name}.py:{i}: {line.strip()}" for name in FRAMEWORK_FREE
            for i, line in enumerate((PACKAGE_DIR / f"{name}.py").read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)]
    assert hits == [], "a framework named where only targets should know it:\n  " + "\n  ".join(hits)
