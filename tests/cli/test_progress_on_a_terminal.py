"""Progress bars, checked by looking at the bytes: under a real pseudo-terminal (``os.openpty``) on
stderr, fixture, convert and validate draw a tqdm bar (``NN%|`` redrawn with ``\\r``); with stderr a
pipe, or with ``--quiet``, none."""
from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

BAR = re.compile(rb"\r[^\r\n]*\d+%\|")


def stderr_of(args: list[str], terminal: bool) -> bytes:
    """``python -m caffe2x ARGS``'s stderr, written to a pseudo-terminal (``terminal``) or a pipe."""
    if not terminal:
        return subprocess.run([sys.executable, "-m", "caffe2x", *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=600).stderr
    master, slave = os.openpty()
    # a terminal of 80 x 24, as a real one has a size (tqdm draws nothing on a 0-column terminal)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "caffe2x", *args], stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=600) == 0, b"".join(chunks)[-2000:]
        return b"".join(chunks)
    finally:
        os.close(master)


@pytest.fixture(scope="module")
def commands(tiny_files, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    model, deploy = tiny_files
    out = tmp_path_factory.mktemp("progress")
    return {
        "fixture": ["fixture", "tiny", "-o", str(out / "fx"), "--force"],
        "convert": ["convert", str(model), "-p", str(deploy), "-o", str(out / "t.safetensors"), "--force"],
        "validate": ["validate", str(model), "-p", str(deploy), "--frameworks", "numpy"],
    }


@pytest.mark.parametrize("name", ["fixture", "convert", "validate"])
def test_a_terminal_gets_a_progress_bar(name: str, commands) -> None:
    assert BAR.search(stderr_of(commands[name], terminal=True))


@pytest.mark.parametrize("name", ["fixture", "convert", "validate"])
def test_a_pipe_gets_no_progress_bar(name: str, commands) -> None:
    err = stderr_of(commands[name], terminal=False)
    assert not BAR.search(err) and b"\r" not in err, err


@pytest.mark.parametrize("name", ["fixture", "convert", "validate"])
def test_quiet_draws_no_bar_even_on_a_terminal(name: str, commands) -> None:
    err = stderr_of([*commands[name], "--quiet"], terminal=True)
    assert not BAR.search(err) and b"%|" not in err, err
