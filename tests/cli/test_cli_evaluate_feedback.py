"""``caffe2x evaluate``'s feedback and failures of its workers: a tqdm bar (images/s, ETA) on a terminal
only, and a killed worker process ending the run with a line saying to resume, which then completes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.evaluate_sets import colour_set
from tests.helpers.terminal import stderr_on_a_terminal


def _stderr_on_a_terminal(cmd: list[str]) -> str:
    return stderr_on_a_terminal(cmd, columns=120, timeout=300)[1].decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_terminal_gets_a_progress_bar_a_pipe_and_quiet_do_not(tmp_path: Path) -> None:
    colours = colour_set(tmp_path / "set", count=8)
    cmd = [sys.executable, "-m", "caffe2x", "evaluate", str(colours.model), "--prototxt", str(colours.prototxt),
           "--images", str(colours.root), "--frameworks", "numpy", "--workers", "1", "--batch-size", "2",
           "--journal", str(tmp_path / "j")]
    shown = _stderr_on_a_terminal(cmd)
    assert "evaluate:" in shown and "img/s" in shown  # tqdm's 'evaluate: 100%|...| 8/8 [00:00<00:00, ...img/s]'
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and "img/s" not in piped.stderr and "PASS" in piped.stdout
    assert _stderr_on_a_terminal([*cmd, "-q"]).strip() == ""


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through /proc")
def test_a_killed_worker_ends_the_run_saying_resume_and_the_resumed_run_completes(tmp_path: Path) -> None:
    many = colour_set(tmp_path / "many", count=160, size=(96, 128))
    args = [sys.executable, "-m", "caffe2x", "evaluate", str(many.model), "--prototxt", str(many.prototxt),
            "--images", str(many.root), "--list", str(many.listing), "--frameworks", "numpy", "--batch-size", "2"]
    journal = tmp_path / "journal"
    proc = subprocess.Popen([*args, "--workers", "2", "--journal", str(journal)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_dir() and len(list(journal.glob("batch-*.json"))) >= 3:
            break
        time.sleep(0.005)
    workers = [c for c in _children(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
    assert proc.poll() is None and workers, "the run ended before a worker could be killed"
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: a worker process died") and "--resume" in err
    done = len(list(journal.glob("batch-*.json")))
    assert 0 < done < 80
    resumed = subprocess.run([*args, "--workers", "1", "--journal", str(journal), "--resume", "--json",
                              str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["resumed"] == 2 * done and data["images"] == 160
    assert data["frameworks"][0]["counts"]["top1_correct"] == many.top1
