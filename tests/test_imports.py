"""The import structure of caffe2x, read with ``ast`` (nothing is imported to check it).

Three rules:

* a framework (torch, tensorflow, keras, onnx, onnxruntime) is imported only by its own target package
  ``caffe2x/targets/<fw>/`` (and its fine-tuning helpers, ``caffe2x/finetune/<fw>.py``), so converting to
  safetensors never pulls in torch and the validator stays framework-free;
* no import cycle among caffe2x modules, counting imports inside functions too (a function-level
  import is how a cycle hides until the day someone moves it to the top);
* the folders are the pipeline and data flows one way: each stage imports only the stages below it
  (``STAGE_MAY_IMPORT``, drawn in docs/architecture.md), no cycle between stages, and nothing inside
  the package imports the package root.

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

#: framework import name -> the only modules (or packages) allowed to import it
FRAMEWORK_OWNERS = {
    "torch": ("caffe2x.targets.torch", "caffe2x.finetune.torch"),
    "tensorflow": ("caffe2x.targets.keras", "caffe2x.finetune.keras"),
    "keras": ("caffe2x.targets.keras", "caffe2x.finetune.keras"),
    "onnx": ("caffe2x.targets.onnx",),
    "onnxruntime": ("caffe2x.targets.onnx",),
    # OpenCV's Caffe importer, the optional `validate --oracle opencv`
    "cv2": ("caffe2x.validation.oracles.opencv",),
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


def _owner_ok(module: str, owners: tuple[str, ...]) -> bool:
    return any(module == owner or module.startswith(owner + ".") for owner in owners)


def test_only_a_frameworks_own_target_package_imports_it() -> None:
    offenders = []
    for imp in all_imports():
        top = imp.target.split(".")[0]
        owner = FRAMEWORK_OWNERS.get(top)
        if owner is not None and not _owner_ok(imp.module, owner):
            offenders.append(f"{imp.where()} imports {imp.target} (only {' and '.join(owner)} may)")
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
FRAMEWORK_FREE = ("validation/validator", "validation/comparison", "validation/results", "validation/artifacts",
                  "validation/report", "convert", "cli/validate", "validation/framework_run", "validation/isolated")


def test_validation_and_conversion_modules_do_not_even_name_a_framework() -> None:
    pattern = re.compile(r"\b(" + "|".join(sorted(FRAMEWORK_OWNERS)) + r")\b", re.I)
    hits = [f"caffe2x/{name}.py:{i}: {line.strip()}" for name in FRAMEWORK_FREE
            for i, line in enumerate((PACKAGE_DIR / f"{name}.py").read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)]
    assert hits == [], "a framework named where only targets should know it:\n  " + "\n  ".join(hits)


#: root modules every stage may use: they know no stage
BASE = {"errors", "fileio", "_version", "_command"}
#: each stage (a package under caffe2x/, or a root module) and the stages it may import besides
#: itself and BASE; docs/architecture.md draws the same picture
STAGE_MAY_IMPORT: dict[str, set[str]] = {
    **{base: set() for base in BASE},
    "graph": set(),
    "caffe": {"graph"},
    "layers": {"caffe", "graph"},
    "targets": {"graph"},
    # root modules that span stages: the model file of either kind, plugin registration, conversion
    "loading": {"caffe", "layers", "graph", "targets"},
    "plugins": {"caffe", "graph", "targets"},
    "convert": {"graph", "targets"},
    "validation": {"caffe", "layers", "graph", "targets", "loading", "plugins", "convert"},
    # the public API above the stages
    "fixtures": {"caffe", "layers", "graph", "loading"},
    "finetune": {"graph", "targets", "validation"},
    "__init__": {"caffe", "layers", "graph", "targets", "validation", "loading", "plugins", "convert", "finetune"},
    "cli": {"caffe", "layers", "graph", "targets", "validation", "loading", "plugins", "convert", "fixtures"},
    "__main__": {"cli"},
}


def stage_of(module: str) -> str:
    """``caffe2x.graph.ir`` -> ``graph``; ``caffe2x.loading`` -> ``loading``; ``caffe2x`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def stage_violations(imports: list[Import]) -> list[str]:
    broken = []
    for imp in imports:
        if imp.target.split(".")[0] != "caffe2x":
            continue
        own, theirs = stage_of(imp.module), stage_of(imp.target)
        allowed = STAGE_MAY_IMPORT.get(own)
        if allowed is None:
            broken.append(f"{imp.where()}: stage {own!r} is not in STAGE_MAY_IMPORT (add it, and to the docs)")
        elif imp.target == "caffe2x":
            if own != "__main__":
                broken.append(f"{imp.where()} imports the package root")
        elif theirs != own and theirs not in BASE and theirs not in allowed:
            broken.append(f"{imp.where()} ({own}) imports {imp.target} ({theirs})")
    return broken


def test_each_stage_imports_only_the_stages_below_it() -> None:
    broken = stage_violations(all_imports())
    assert broken == [], "imports against the layout (docs/architecture.md):\n  " + "\n  ".join(broken)


def test_the_stage_rule_reports_upward_lazy_and_root_imports(tmp_path: Path) -> None:
    cases = {"caffe2x.graph.fake": "def f():\n    from caffe2x.validation import comparison\n",
             "caffe2x.targets.fake": "from ..caffe.reader import read\n",
             "caffe2x.caffe.fake": "import caffe2x\n",
             "caffe2x.caffe.fine": "from caffe2x.graph.ir import Graph\nfrom . import wire\n"}
    imports = []
    for i, (module, source) in enumerate(cases.items()):
        (tmp_path / f"m{i}.py").write_text(source)
        imports += imports_of(module, tmp_path / f"m{i}.py", {"caffe2x.validation.comparison", "caffe2x.caffe.wire"})
    assert stage_violations(imports) == [
        "caffe2x/graph/fake.py:2 (graph) imports caffe2x.validation.comparison (validation)",
        "caffe2x/targets/fake.py:1 (targets) imports caffe2x.caffe.reader (caffe)",
        "caffe2x/caffe/fake.py:1 imports the package root",
    ]


def test_no_import_cycle_between_stages() -> None:
    edges: dict[str, set[str]] = {}
    for imp in all_imports():
        if imp.target.split(".")[0] == "caffe2x" and imp.target != "caffe2x":
            own, theirs = stage_of(imp.module), stage_of(imp.target)
            if own != theirs:
                edges.setdefault(own, set()).add(theirs)
    cycles = [c for _, c in find_cycles({k: {v: 1 for v in vs} for k, vs in edges.items()})]
    assert cycles == [], f"stages in an import cycle: {cycles}"


def test_the_root_holds_the_api_and_few_modules_beside_the_stage_packages() -> None:
    modules = sorted(p.stem for p in PACKAGE_DIR.glob("*.py"))
    assert len(modules) <= 9, modules
    packages = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").exists()}
    assert {"caffe", "graph", "layers", "targets", "validation", "cli"} <= packages
    tests = Path(__file__).resolve().parent
    assert all(any((tests / stage).glob("test_*.py")) for stage in ("caffe", "graph", "layers", "targets",
                                                                       "validation", "cli", "e2e"))
    assert len(list(tests.glob("test_*.py"))) <= 8
