"""In the processes caffe2x owns, ``import keras`` leaves out the optional packages TensorFlow and Keras pull in
for features caffe2x never uses (JAX for TF Lite, IPython, OpenCV), and they stay importable afterwards; a
program that imports caffe2x imports them as it would without caffe2x."""
from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from caffe2x import _command
from caffe2x.targets.keras import quiet


@pytest.fixture()
def extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A stand-in optional package, importable, not yet imported, listed as unused."""
    name = "caffe2x_test_optional_extra"
    (tmp_path / f"{name}.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(quiet, "UNUSED_EXTRAS", {name: "a test's stand-in"})
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    yield name
    sys.modules.pop(name, None)


def _guarded_import(name: str) -> bool:
    """What a library's ``try: import name / except ImportError`` sees: whether the import worked."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def test_an_owned_process_hides_an_unused_extra_during_the_import_only(extra: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_command, "owns_process", True)
    with quiet.without_unused_extras():
        assert not _guarded_import(extra)
    assert extra not in sys.modules  # no ``None`` left behind
    assert _guarded_import(extra) and sys.modules[extra].VALUE == 7


def test_a_program_importing_caffe2x_imports_the_extra_as_usual(extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_command, "owns_process", False)
    with quiet.without_unused_extras():
        assert _guarded_import(extra)


def test_keras_on_jax_keeps_jax(extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_command, "owns_process", True)
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with quiet.without_unused_extras():
        assert _guarded_import(extra)


def test_an_already_imported_extra_is_left_alone(extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_command, "owns_process", True)
    module = importlib.import_module(extra)
    with quiet.without_unused_extras():
        assert sys.modules[extra] is module


def test_the_keras_convert_command_imports_none_of_the_unused_extras(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    installed = [name for name in quiet.UNUSED_EXTRAS if importlib.util.find_spec(name) is not None]
    if not installed:
        pytest.skip("none of the extras is installed: nothing to leave out")
    model, deploy = tiny_files
    out = tmp_path / "tiny.h5"
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "caffe2x", "convert", str(model), "-p", str(deploy),
                          "-o", str(out), "-q"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and out.stat().st_size > 0, run.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "keras" in imported and "tensorflow" in imported  # the import itself was seen
    # an attempt that raised ImportError is listed too (a few microseconds): a package that was really
    # imported brought its submodules (jax 220, IPython 113, cv2 4)
    assert [name for name in installed if any(m.startswith(f"{name}.") for m in imported)] == []
