"""Signal tests' common start: a ``python -c`` child that says when it reached the point to interrupt; and
the processes left running afterwards (:func:`processes`)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def start_until_ready(script: str, ready: Path, tmpdir: Path | None = None,
                      timeout: float = 120) -> subprocess.Popen[str]:
    """Start ``python -c script`` (stderr piped, ``TMPDIR`` set to ``tmpdir`` when given) and return once
    it has created ``ready``; fails with the child's stderr if it exits or times out first."""
    env = None if tmpdir is None else {**os.environ, "TMPDIR": str(tmpdir)}
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        assert child.poll() is None and time.monotonic() < deadline, child.stderr.read() if child.stderr else ""
        time.sleep(0.05)
    return child


def processes(naming: bytes, parent: int | None = None) -> list[int]:
    """The pids of the processes whose command line contains ``naming`` (and whose parent is ``parent``,
    when given), read from ``/proc``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or naming not in (entry / "cmdline").read_bytes():
                continue
            if parent is not None and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found
