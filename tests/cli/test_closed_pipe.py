"""A reader that goes away (``caffe2x inspect M --json | head``) ends the command quietly, as Unix tools
do: exit 141 (128 + SIGPIPE), no ``error: internal error (BrokenPipeError …)``, no "Exception ignored"
at interpreter exit. Each case runs the real command with a real pipe whose read end is closed before
the command writes, so its first write fails for certain."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from caffe2x.cli.args import EXIT_BROKEN_PIPE


def run_into_closed_pipe(args: list[str], stream: str) -> tuple[int, str]:
    """Run ``python -m caffe2x ARGS`` with ``stream`` ("stdout" or "stderr") a pipe nobody reads; returns
    the exit code and whatever the command wrote on the other stream."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command starts
    other = subprocess.PIPE
    kwargs = {"stdout": write_end, "stderr": other} if stream == "stdout" else {"stdout": other, "stderr": write_end}
    try:
        proc = subprocess.run([sys.executable, "-m", "caffe2x", *args], text=True, timeout=300, **kwargs)
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr if stream == "stdout" else proc.stdout


@pytest.fixture(scope="module")
def tiny_safetensors(tiny_files, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import caffe2x

    out = tmp_path_factory.mktemp("pipe") / "tiny.safetensors"
    caffe2x.save(caffe2x.load(*tiny_files), out)
    return out


def test_inspect_json_into_a_closed_pipe_ends_quietly(tiny_files) -> None:
    model, deploy = tiny_files
    code, stderr = run_into_closed_pipe(["inspect", str(model), "--prototxt", str(deploy), "--json"], "stdout")
    assert (code, stderr) == (EXIT_BROKEN_PIPE, "")


def test_inspect_table_into_a_closed_pipe_ends_quietly(tiny_safetensors) -> None:
    code, stderr = run_into_closed_pipe(["inspect", str(tiny_safetensors)], "stdout")
    assert (code, stderr) == (EXIT_BROKEN_PIPE, "")


def test_help_into_a_closed_pipe_ends_quietly() -> None:
    code, stderr = run_into_closed_pipe(["--help"], "stdout")
    assert stderr == ""
    assert code in (0, EXIT_BROKEN_PIPE)  # argparse itself drops an OSError while printing help, then exits 0


def test_fixture_paths_into_a_closed_pipe_end_quietly_after_writing_the_files(tmp_path: Path) -> None:
    code, stderr = run_into_closed_pipe(["fixture", "tiny", "-o", str(tmp_path), "-q"], "stdout")
    assert (code, stderr) == (EXIT_BROKEN_PIPE, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-deploy.prototxt", "tiny.caffemodel"]


def test_convert_messages_into_a_closed_stderr_end_quietly(tiny_safetensors, tmp_path: Path) -> None:
    out = tmp_path / "tiny.onnx"
    code, stdout = run_into_closed_pipe(["convert", str(tiny_safetensors), "-o", str(out)], "stderr")
    assert (code, stdout) == (EXIT_BROKEN_PIPE, "")
    assert list(tmp_path.iterdir()) == []  # stopped at its first message, before writing: no partial file


def test_validate_table_into_a_closed_pipe_ends_quietly(tiny_safetensors) -> None:
    code, stderr = run_into_closed_pipe(["validate", str(tiny_safetensors), "--frameworks", "numpy", "-q"],
                                        "stdout")
    assert (code, stderr) == (EXIT_BROKEN_PIPE, "")


def test_an_error_message_into_a_closed_stderr_ends_quietly(tmp_path: Path) -> None:
    code, stdout = run_into_closed_pipe(["inspect", str(tmp_path / "missing.caffemodel")], "stderr")
    assert (code, stdout) == (EXIT_BROKEN_PIPE, "")
