"""docs/deploy.md's PyTorch section is a tested example per deploy path: its Python blocks run as written,
in order, from an empty directory (the first block writes the synthetic ResNet-50 there)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"

#: what each deploy path's example must call
PATHS = ("torch.jit.script(", "torch.jit.trace(", "torch.fx.symbolic_trace(", "prepare_fx(", "convert_fx(",
         "torch.export.export(", "Dim(\"H\"", "Dim(\"batch\")", "torch.compile(", "fullgraph=True",
         "torch.onnx.export(", "dynamo=True", "ort.InferenceSession(", "convert_sync_batchnorm(", "fuse_conv_bn_eval(")


def _blocks():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("caffe2x_readme_blocks_deploy", ROOT / "scripts" / "readme_blocks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pytorch_code() -> str:
    blocks = _blocks()
    found = blocks.python_blocks(blocks.section(DOC.read_text(), "PyTorch"))
    assert found and all(b.no_run is None for b in found)
    return "\n".join(b.code for b in found)


def test_pytorch_section_has_an_example_per_deploy_path_and_readme_links_it() -> None:
    code = pytorch_code()
    compile(code, "docs/deploy.md", "exec")
    missing = [p for p in PATHS if p not in code]
    assert not missing, f"docs/deploy.md's PyTorch section has no example calling {missing}"
    assert "docs/deploy.md" in (ROOT / "README.md").read_text()


@pytest.mark.slow  # exports, compiles and quantizes ResNet-50: minutes on a shared 2-core machine
def test_pytorch_section_runs_as_written(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", pytorch_code()], cwd=tmp_path, capture_output=True, text=True,
                          timeout=3000, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "torch.Size([2, 1000]) torch.Size([1, 2048, 6, 8])" in lines
    assert "53 53" in lines
    assert "layer 'pool5' takes an input of at least 7x7, got 5x5" in lines
