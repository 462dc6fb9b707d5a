"""How the ``caffe2x`` command starts (caffe2x._command), each part 8-12 ms of a 0.18 s ``convert --to
safetensors``:

* numpy and caffe2x's own modules are imported with Python's cyclic collector paused; what they built is
  frozen and the collector runs as usual while the subcommand does (``hold_from_start``, ``collect_from_now``);
* numpy's OpenBLAS starts with one thread unless the user set its thread count, and gets one per core
  when a forward pass runs (``full_blas``); child processes see the user's environment unchanged.

A program that imports caffe2x keeps its collector and its BLAS exactly as they were."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: a sitecustomize recording numpy's BLAS threads and the environment at exit, and, for every collection that starts once the process knows it is the command
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
    from threadpoolctl import threadpool_info
    blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] if "numpy" in sys.modules else []
    with open({log!r}, "w") as f:
        json.dump({{"collections": _seen, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count(),
                   "blas": blas, "variable": os.environ.get("OPENBLAS_NUM_THREADS")}}, f)
atexit.register(_report)
"""


def _run(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    log = tmp_path / "gc.json"
    (site / "sitecustomize.py").write_text(RECORDER.format(log=str(log)))
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")}
    environment = {**base, **env, "PYTHONPATH": os.pathsep.join([str(site), os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=environment)
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


CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _convert(tiny_files, tmp_path: Path, *extra: str) -> list[str]:  # type: ignore[no-untyped-def]
    model, deploy = tiny_files
    return ["-m", "caffe2x", "convert", str(model), "--prototxt", str(deploy), "-o", str(tmp_path / "t.safetensors"),
            "-q", "--force", *extra]


def test_a_convert_runs_with_one_blas_thread_and_leaves_the_environment_as_it_was(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc, state = _run(tmp_path, *_convert(tiny_files, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert state["blas"] == [1] and state["variable"] is None


def test_a_forward_pass_in_the_command_gets_a_blas_thread_per_core(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``--dtype float16`` measures its logit change with the numpy reference in the command's process."""
    proc, state = _run(tmp_path, *_convert(tiny_files, tmp_path, "--dtype", "float16"))
    assert proc.returncode == 0, proc.stderr
    assert state["blas"] == [CORES] and state["variable"] is None


def test_a_users_blas_thread_count_is_left_alone(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One thread asked for stays one through the forward pass (which would otherwise get one per core)."""
    proc, state = _run(tmp_path, *_convert(tiny_files, tmp_path, "--dtype", "float16"), OPENBLAS_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr
    assert state["blas"] == [1] and state["variable"] == "1"


def test_a_program_importing_caffe2x_keeps_numpys_blas(tmp_path: Path) -> None:
    proc, state = _run(tmp_path, "-c", "import caffe2x")
    assert proc.returncode == 0, proc.stderr
    assert state["blas"] == [CORES] and state["variable"] is None
