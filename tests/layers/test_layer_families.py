"""The layer-family mechanism: families are registered whenever the reader, shape inference or the
reference is used, and only the package __init__ imports them (so no caffe2x module imports a module
that imports it back)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import caffe2x
import caffe2x.layers

PACKAGE = Path(caffe2x.__file__).parent


def test_families_are_registered_by_importing_any_caffe2x_submodule_alone() -> None:
    for module, table in (("caffe2x.caffe.reader", "LAYERS"), ("caffe2x.graph.ir", "SHAPE_FUNCTIONS"),
                          ("caffe2x.graph.reference", "OPS")):
        code = (f"from {module} import {table}; import sys; "
                f"assert 'Power' in {table} and 'Bias' in {table}, sorted({table})")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr


def _imports_of(path: Path) -> set[str]:
    """Absolute names of the caffe2x modules a file imports (anywhere in it, functions included)."""
    pkg = list(path.relative_to(PACKAGE.parent).parts[:-1])  # the package a relative import starts from
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return {n for n in names if n.startswith("caffe2x")}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def test_nothing_the_layer_families_import_imports_them_back() -> None:
    """The families import reader/ir/reference; none of what they reach may import caffe2x.layers
    (the package __init__, which Python runs first anyway, is the one place that does)."""
    graph = {_module_name(p): _imports_of(p) for p in PACKAGE.rglob("*.py")}
    reached, todo = set(), [m for m in graph if m.startswith("caffe2x.layers")]
    while todo:
        module = todo.pop()
        for name in graph.get(module, ()):
            target = name if name in graph else name.rpartition(".")[0]
            if target in graph and target not in reached and target != "caffe2x":
                reached.add(target)
                todo.append(target)
    back = {m for m in reached if not m.startswith("caffe2x.layers")
            and any(n == "caffe2x.layers" or n.startswith("caffe2x.layers.") for n in graph[m])}
    assert back == set()
    assert "caffe2x.caffe.reader" in reached and "caffe2x.graph.reference" in reached


def test_every_family_module_is_imported_by_the_layers_package() -> None:
    modules = {p.stem for p in (PACKAGE / "layers").glob("*.py")} - {"__init__", "base"}
    assert modules == set(caffe2x.layers.FAMILIES)
    for name in modules:
        assert f"caffe2x.layers.{name}" in sys.modules
