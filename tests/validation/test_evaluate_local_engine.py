"""The local engine's process pool leaves nothing on the user's terminal when a run is cut short."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

LEAK_THEN_EXIT = """
import os, sys, multiprocessing
if sys.argv[1] == "quiet":
    from caffe2x.validation.evaluate.engines.local import _start_quiet_resource_tracker
    _start_quiet_resource_tracker()
lock = multiprocessing.get_context("spawn").Lock()  # a named semaphore the tracker follows
os._exit(0)  # as an interrupted run leaves: the semaphore is never unregistered
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource tracker")
@pytest.mark.parametrize("mode", ["plain", "quiet"])
def test_an_abrupt_exit_prints_no_leaked_semaphore_warning(mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    err = subprocess.run([sys.executable, "-c", LEAK_THEN_EXIT, mode], capture_output=True, text=True,
                         timeout=120, env=env).stderr
    if mode == "plain":  # what the user saw before: the tracker's warning, with its source line
        assert "leaked semaphore" in err
    else:
        assert err == ""
