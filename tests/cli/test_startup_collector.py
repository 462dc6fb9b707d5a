"""The ``caffe2x`` command imports numpy and its own modules with Python's cyclic collector paused, then
freezes what they built and collects as usual while the subcommand runs (caffe2x._command.hold_from_start
and collect_from_now: 8 ms of a 0.18 s ``convert --to safetensors``). A program that imports caffe2x
keeps its collector exactly as it was."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: a sitecustomize recording, for every collection that starts once the process knows it is the command
#: (the first line of caffe2x/__init__.py), whether anything was frozen by then; and, at exit, the
#: collector's state
RECORDER = """
import atexit, gc, json, os, sys
_seen = []
def _record(phase, info):
    command = sys.modules.get("caffe2x._command")
    if phase == "start" and command is not None and (command.is_command or "numpy" in sys.modules):
        _seen.append([info["generation"], gc.get_freeze_count() > 0])
gc.callbacks.append(_record)
def _report():
    with open({log!r}, "w") as f:
        json.dump({{"collections": _seen, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}}, f)
atexit.register(_report)
"""


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    log = tmp_path / "gc.json"
    (site / "sitecustomize.py").write_text(RECORDER.format(log=str(log)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env)
    return proc, json.loads(log.read_text())


def test_the_command_collects_nothing_until_its_start_up_is_frozen_then_collects_again(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, deploy = tiny_files
    out = tmp_path / "t.safetensors"
    proc, state = _run(tmp_path, "-m", "caffe2x", "convert", str(model), "--prototxt", str(deploy), "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    collections = state["collections"]
    assert collections, "the collector never ran while the subcommand did"
    assert all(frozen for _, frozen in collections), collections  # none while numpy and caffe2x were imported
    assert state["enabled"] and state["frozen"] > 10_000


def test_a_program_importing_caffe2x_keeps_its_collector(tmp_path: Path) -> None:
    proc, state = _run(tmp_path, "-c", "import caffe2x, numpy; caffe2x.load")
    assert proc.returncode == 0, proc.stderr
    assert state["enabled"] and state["frozen"] == 0
    assert not any(frozen for _, frozen in state["collections"])
