"""Progress bars, checked by looking at the bytes: under a real pseudo-terminal (``os.openpty``) on
stderr, fixture, convert and validate draw a tqdm bar (``NN%|`` redrawn with ``\\r``); with stderr a
pipe, or with ``--quiet``, none."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers.terminal import stderr_on_a_terminal

BAR = re.compile(rb"\r[^\r\n]*\d+%\|")


def stderr_of(args: list[str], terminal: bool) -> bytes:
    """``python -m caffe2x ARGS``'s stderr, written to a pseudo-terminal (``terminal``) or a pipe."""
    if not terminal:
        return subprocess.run([sys.executable, "-m", "caffe2x", *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=600).stderr
    code, err = stderr_on_a_terminal([sys.executable, "-m", "caffe2x", *args], columns=80)
    assert code == 0, err[-2000:]
    return err


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
