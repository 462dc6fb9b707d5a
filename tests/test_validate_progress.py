"""Feedback of ``caffe2x validate``: a tqdm bar on a terminal, none when piped or ``-q``; TensorFlow's
and absl's log lines silenced unless ``--verbose``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _validate(tiny_files: tuple[Path, Path], *extra: str, tty: bool) -> str:
    """stderr of ``caffe2x validate`` on the tiny net (numpy only), through a pseudo-terminal or a pipe."""
    model, deploy = tiny_files
    cmd = [sys.executable, "-m", "caffe2x.cli", "validate", str(model), "--prototxt", str(deploy),
           "--frameworks", "numpy", *extra]
    if not tty:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300).stderr
    import pty

    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # tqdm draws nothing in 0 columns
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_terminal_gets_a_progress_bar_a_pipe_and_quiet_do_not(tiny_files: tuple[Path, Path]) -> None:
    shown = _validate(tiny_files, tty=True)
    assert "validate:" in shown and "step" in shown  # tqdm's 'validate: 100%|...| 1/1 [...step/s]'
    piped = _validate(tiny_files, tty=False)
    assert "step" not in piped and "numpy: PASS" in piped
    assert _validate(tiny_files, "-q", tty=True).strip() == ""


def test_tensorflow_and_absl_logging_is_silenced_unless_verbose(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from caffe2x.cli_validate import quiet_frameworks

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setattr(logging.getLogger("absl"), "level", logging.NOTSET)
    quiet_frameworks()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert logging.getLogger("absl").level == logging.ERROR
