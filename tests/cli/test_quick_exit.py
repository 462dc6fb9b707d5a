"""``convert``, ``inspect`` and ``fixture`` end their process as soon as their work is done: every output
and line written, every ``atexit`` handler run, but no interpreter finalisation (0.02 s of a 0.23 s
conversion). Anything else finalises as Python does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: a sitecustomize that records what the end of the process ran: an atexit handler, and the finaliser of
#: an object only interpreter finalisation destroys
RECORDER = """
import atexit, os
_fd = os.open({log!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
_write = os.write
atexit.register(lambda: _write(_fd, b"atexit\\n"))
class _Finalised:
    def __del__(self, write=_write, fd=_fd):
        write(fd, b"finalised\\n")
import builtins
builtins._caffe2x_test_finalised = _Finalised()
"""


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    log = tmp_path / "end.log"
    log.unlink(missing_ok=True)
    (site / "sitecustomize.py").write_text(RECORDER.format(log=str(log)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "caffe2x", *args], capture_output=True, text=True, timeout=300,
                          env=env)
    return proc, log.read_text().split() if log.exists() else []


def test_convert_ends_after_its_output_and_atexit_without_finalising(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, deploy = tiny_files
    out = tmp_path / "t.safetensors"
    proc, ended = _run(tmp_path, "convert", str(model), "--prototxt", str(deploy), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "done in" in proc.stderr and out.stat().st_size > 0  # its last line and its file are all there
    assert ended == ["atexit"]


def test_a_failed_convert_ends_the_same_way_with_its_error_line(tmp_path: Path) -> None:
    proc, ended = _run(tmp_path, "convert", str(tmp_path / "missing.caffemodel"), "--input-shape", "1,3,8,8",
                       "-o", str(tmp_path / "x.safetensors"))
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1, proc.stderr
    assert ended == ["atexit"]


@pytest.mark.parametrize("command", [["--version"], ["fixture", "--help"]])
def test_commands_that_never_ran_a_subcommand_finalise_as_python_does(tmp_path: Path, command: list[str]) -> None:
    proc, ended = _run(tmp_path, *command)
    assert proc.returncode == 0, proc.stderr
    assert ended == ["atexit", "finalised"]
