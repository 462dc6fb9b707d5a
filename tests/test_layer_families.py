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
    for module, table in (("caffe2x.reader", "LAYERS"), ("caffe2x.ir", "SHAPE_FUNCTIONS"),
                          ("caffe2x.reference", "OPS")):
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


def test_only_the_package_init_imports_the_layer_families() -> None:
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        if "layers" in path.relative_to(PACKAGE).parts[:1]:
            continue
        if any(n == "caffe2x.layers" or n.startswith("caffe2x.layers.") for n in _imports_of(path)):
            importers.add(str(path.relative_to(PACKAGE)))
    assert importers == {"__init__.py"}


def test_every_family_module_is_imported_by_the_layers_package() -> None:
    modules = {p.stem for p in (PACKAGE / "layers").glob("*.py")} - {"__init__", "base"}
    assert modules == set(caffe2x.layers.FAMILIES)
    for name in modules:
        assert f"caffe2x.layers.{name}" in sys.modules
