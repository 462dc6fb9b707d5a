"""Feedback of ``caffe2x validate``: a tqdm bar on a terminal, none when piped or ``-q``; TensorFlow's
and absl's log lines silenced unless ``--verbose``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.terminal import stderr_on_a_terminal


def _validate(tiny_files: tuple[Path, Path], *extra: str, tty: bool) -> str:
    """stderr of ``caffe2x validate`` on the tiny net (numpy only), through a pseudo-terminal or a pipe."""
    model, deploy = tiny_files
    cmd = [sys.executable, "-m", "caffe2x", "validate", str(model), "--prototxt", str(deploy),
           "--frameworks", "numpy", *extra]
    if not tty:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300).stderr
    return stderr_on_a_terminal(cmd, timeout=300)[1].decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_terminal_gets_a_progress_bar_a_pipe_and_quiet_do_not(tiny_files: tuple[Path, Path]) -> None:
    shown = _validate(tiny_files, tty=True)
    assert "validate:" in shown and "step" in shown  # tqdm's 'validate: 100%|...| 1/1 [...step/s]'
    piped = _validate(tiny_files, tty=False)
    assert "step" not in piped and "numpy: PASS" in piped
    assert _validate(tiny_files, "-q", tty=True).strip() == ""


def test_tensorflow_and_absl_logging_is_silenced_unless_verbose(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from caffe2x.cli.validate import quiet_frameworks

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setattr(logging.getLogger("absl"), "level", logging.NOTSET)
    quiet_frameworks()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert logging.getLogger("absl").level == logging.ERROR


QUIET_PROBE = """
import os, sys
import importlib.util
os.environ["TF_CPP_MIN_LOG_LEVEL"] = {level!r}
# the module alone, by its path: importing its package would import Keras (and print the real lines)
spec = importlib.util.spec_from_file_location("quiet", {path!r})
quiet = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quiet)
quiet_import = quiet.quiet_import
try:
    with quiet_import():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
        os.write(2, b"I0000 00:00:1795974122.940871   18428 port.cc:153] oneDNN custom operations are on.\\n")
        os.write(2, b"a line of the user's own\\n")
        if {fail!r}:
            raise ImportError("broken")
except ImportError:
    pass
"""


@pytest.mark.parametrize(("level", "fail", "shown"), [
    ("3", False, ["a line of the user's own"]),
    ("0", False, ["WARNING: All log", "I0000", "a line of the user's own"]),  # --verbose
    ("3", True, ["WARNING: All log", "I0000", "a line of the user's own"]),  # a failed import keeps everything
])
def test_tensorflows_import_time_lines_are_dropped_from_descriptor_2(level: str, fail: bool, shown: list[str]) -> None:
    """TensorFlow writes them from C++ before its log level applies; only they are dropped."""
    import caffe2x

    path = str(Path(caffe2x.__file__).parent / "targets" / "keras" / "quiet.py")
    code = QUIET_PROBE.format(level=level, fail=fail, path=path)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == len(shown) and all(l.startswith(s) for l, s in zip(lines, shown)), proc.stderr


def test_quiet_validate_with_keras_prints_only_the_verdict(tiny_files: tuple[Path, Path]) -> None:
    model, deploy = tiny_files
    proc = subprocess.run([sys.executable, "-m", "caffe2x", "validate", str(model), "-p", str(deploy),
                           "--frameworks", "keras", "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("PASS: keras agrees")
