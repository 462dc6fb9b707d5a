"""The Keras and ONNX examples of docs/deploy.md run as written (each in a fresh interpreter in an empty
directory: the JAX example picks its Keras backend before importing Keras)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"


def section_blocks(title: str) -> list[str]:
    """The ```python blocks under ``## <title>`` (up to the next ``## ``)."""
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/deploy.md has no '## {title}' section"
    return re.findall(r"```python\n(.*?)```", match.group(1), re.S)


def run_example(code: str, tmp_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_the_onnx_example_runs(tmp_path: Path) -> None:
    (code,) = section_blocks("ONNX")
    out = run_example(code, tmp_path)
    assert "['N', 3, 'H', 'W']" in out and "agree with the reference" in out


@pytest.mark.slow
def test_the_keras_example_runs(tmp_path: Path) -> None:
    keras_code, _ = section_blocks("Keras")
    assert "keras, SavedModel, TFLite agree" in run_example(keras_code, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_keras_backend_example_runs(tmp_path: Path, backend: str) -> None:
    """The JAX example as written, and with ``torch`` as the backend; a backend that is not installed
    (the 'jax' extra) skips."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (the '{backend}' extra)")
    _, backend_code = section_blocks("Keras")
    out = run_example(backend_code.replace('os.environ["KERAS_BACKEND"] = "jax"',
                                           f'os.environ["KERAS_BACKEND"] = "{backend}"'), tmp_path)
    assert f"{backend} agrees with the reference" in out
