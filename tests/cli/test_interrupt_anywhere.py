"""Ctrl-C at any instant of ``caffe2x convert … --to torch``: exit 130 with one line and nothing partial
left, or (the signal came after the work) exit 0 with the complete output. The only other outcome
allowed is the interpreter's own start-up, before the first line of caffe2x code runs (site-packages,
nothing read or written), where Python dies as Python does.

The instants that used to go wrong are pinned one by one (a signal inside ``atomic_output``'s critical
steps, inside an ``except`` clause of ``main``, while ``import caffe2x`` runs, right after the rename);
the slow test sweeps random instants over a whole run.
"""
from __future__ import annotations

import importlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import caffe2x
from caffe2x import fileio
from caffe2x.errors import Caffe2xError

cli_main = importlib.import_module("caffe2x.cli.main")  # the module (caffe2x.cli.main is also the function)
PACKAGE_DIR = Path(caffe2x.__file__).resolve().parent
REPO = PACKAGE_DIR.parent


# --------------------------------------------------------------------------- atomic_output's critical steps
def _signal_self() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_a_signal_while_the_temporary_file_is_created_still_removes_it(tmp_path: Path, monkeypatch) -> None:
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):  # type: ignore[no-untyped-def]
        made = real(*args, **kwargs)
        _signal_self()  # lands before atomic_output's try could note the file
        return made

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(KeyboardInterrupt):
        with fileio.atomic_output(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"never")
    assert list(tmp_path.iterdir()) == []


def test_a_signal_during_the_rename_keeps_the_complete_file_and_says_so(tmp_path: Path, monkeypatch) -> None:
    real = os.replace

    def replace(src, dst):  # type: ignore[no-untyped-def]
        _signal_self()
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    dest = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt):
        with fileio.atomic_output(dest) as tmp:
            tmp.write_bytes(b"complete")
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"] and dest.read_bytes() == b"complete"
    assert fileio.COMMITTED[-1] == dest


def test_a_signal_during_the_cleanup_does_not_skip_it(tmp_path: Path, monkeypatch) -> None:
    real = Path.unlink

    def unlink(self, missing_ok=False):  # type: ignore[no-untyped-def]
        _signal_self()
        real(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(KeyboardInterrupt):
        with fileio.atomic_output(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"half")
            raise ValueError("the writer failed")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- main()
def test_an_interrupt_inside_an_except_clause_is_still_one_line_and_130(monkeypatch, capsys) -> None:
    class Interrupting(Caffe2xError):
        def __str__(self) -> str:  # runs inside main's `except Caffe2xError` clause
            raise KeyboardInterrupt()

    def run(args):  # type: ignore[no-untyped-def]
        raise Interrupting()

    monkeypatch.setattr(cli_main.subcommand("inspect"), "run", run)
    assert cli_main.main(["inspect", "model.caffemodel"]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # a calling program gets it back


# --------------------------------------------------------------------------- the command's own process
def convert_command(tiny_files: tuple[Path, Path], out: Path) -> list[str]:
    model, deploy = tiny_files
    return [sys.executable, "-m", "caffe2x", "convert", str(model), "--prototxt", str(deploy), "--to", "torch",
            "-o", str(out), "-q"]


def start(cmd: list[str], tmpdir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def mapped(pid: int, needle: str) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def caffe2x_frames(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.search(rf'File "{re.escape(str(PACKAGE_DIR))}/', line)]


def judge(proc: subprocess.Popen[str], out: Path, reference: Path, tmpdir: Path) -> str:
    """The outcome of one interrupted run, or an AssertionError saying what was wrong."""
    _, err = proc.communicate(timeout=120)
    left = sorted(p.name for p in out.parent.iterdir())
    leftover_tmp = sorted(p.name for p in tmpdir.iterdir())
    assert leftover_tmp == [], (leftover_tmp, err)
    if proc.returncode == 130:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: interrupted"), err
        if left:  # only a complete output, named as such
            assert left == [out.name] and "had been written in full" in lines[0], (left, err)
            assert fileio.same_content(out, reference)
            return "130 after the output was complete"
        return "130"
    if proc.returncode == 0:
        assert err == "" and left == [out.name] and fileio.same_content(out, reference), (left, err)
        return "0 (signal after the work)"
    # the interpreter's own start-up: killed by the default action, or site's import interrupted
    assert proc.returncode in (-signal.SIGINT, 1), (proc.returncode, err)
    assert left == [] and caffe2x_frames(err) == [], err
    assert err == "" or "KeyboardInterrupt" in err, err
    return "interpreter start-up"


@pytest.fixture()
def reference_pt(tiny_files, tmp_path: Path) -> Path:
    ref = tmp_path / "reference.pt"
    caffe2x.save(caffe2x.load(*tiny_files), ref)
    return ref


def test_sigint_while_caffe2x_imports_is_130_and_one_line(tiny_files, tmp_path: Path, reference_pt: Path) -> None:
    """Lands during ``import caffe2x`` (numpy's core is being loaded), before main() runs."""
    (out_dir := tmp_path / "out").mkdir()
    (tmpdir := tmp_path / "tmp").mkdir()
    out = out_dir / "tiny.pt"
    proc = start(convert_command(tiny_files, out), tmpdir)
    deadline = time.monotonic() + 60
    while not mapped(proc.pid, "_multiarray_umath") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    proc.send_signal(signal.SIGINT)
    assert judge(proc, out, reference_pt, tmpdir) == "130"


def test_sigint_right_after_the_rename_keeps_a_complete_output(tiny_files, tmp_path: Path,
                                                              reference_pt: Path) -> None:
    """Lands as the command finishes (the window where the interpreter used to die by the signal)."""
    (out_dir := tmp_path / "out").mkdir()
    (tmpdir := tmp_path / "tmp").mkdir()
    out = out_dir / "tiny.pt"
    proc = start(convert_command(tiny_files, out), tmpdir)
    deadline = time.monotonic() + 120
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    proc.send_signal(signal.SIGINT)
    assert judge(proc, out, reference_pt, tmpdir) in ("130 after the output was complete", "0 (signal after the work)")


@pytest.mark.slow
def test_sigint_at_random_instants_of_a_whole_run(tiny_files, tmp_path: Path, reference_pt: Path) -> None:
    """20 instants spread over one run's duration (measured first), each jittered at random."""
    (tmpdir := tmp_path / "tmp").mkdir()
    t = time.monotonic()
    first = tmp_path / "timing" / "tiny.pt"
    first.parent.mkdir()
    proc = start(convert_command(tiny_files, first), tmpdir)
    assert judge(proc, first, reference_pt, tmpdir) == "0 (signal after the work)"
    duration = time.monotonic() - t
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    for i in range(20):
        delay = (i + rng.random()) / 20 * duration * 1.15
        out = tmp_path / f"run{i}" / "tiny.pt"
        out.parent.mkdir()
        proc = start(convert_command(tiny_files, out), tmpdir)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        try:
            outcome = judge(proc, out, reference_pt, tmpdir)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, run {i}, SIGINT at {delay:.3f} s of {duration:.2f} s: {exc}") from None
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"seed {seed}, run of {duration:.2f} s: {outcomes}")
    assert outcomes.get("130", 0) >= 10, outcomes


@pytest.mark.slow
@pytest.mark.parametrize("command", ["fixture", "validate"])
def test_sigint_at_random_instants_of_fixture_and_validate(command: str, tiny_files, tmp_path: Path) -> None:
    """The same rule for the other writing commands: 130 and one line that names no scratch file (validate's
    artifacts go with its work directory), nothing in TMPDIR or the output directory, or a finished run."""
    model, deploy = tiny_files

    def cmd(out: Path) -> list[str]:
        if command == "fixture":
            return [sys.executable, "-m", "caffe2x", "fixture", "resnet50", "-o", str(out), "-q"]
        return [sys.executable, "-m", "caffe2x", "validate", str(model), "-p", str(deploy), "--frameworks",
                "numpy,torch,onnx", "--json", str(out / "r.json"), "-q"]

    (tmpdir := tmp_path / "tmp").mkdir()
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    outcomes: dict[int, int] = {}
    for i in range(8):
        (out := tmp_path / f"run{i}").mkdir()
        delay = (i + rng.random()) / 8 * 4.0
        proc = subprocess.Popen(cmd(out), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO,
                                env={**os.environ, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"})
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
        where = f"seed {seed}, run {i}, SIGINT at {delay:.2f} s: rc {proc.returncode}, {err!r}"
        assert sorted(p.name for p in tmpdir.iterdir()) == [], where
        if proc.returncode == 130:
            assert err.count("\n") == 1 and err.startswith("error: interrupted"), where
            assert str(tmpdir) not in err, where
            assert all(p.suffix != ".part" and not p.name.startswith(".") for p in out.iterdir()), where
        elif proc.returncode == 0:
            assert err == "" and any(out.iterdir()), where
        else:
            assert proc.returncode in (-signal.SIGINT, 1) and caffe2x_frames(err) == [] and not any(out.iterdir()), where
        outcomes[proc.returncode] = outcomes.get(proc.returncode, 0) + 1
    print(f"{command}: seed {seed}: {outcomes}")
    assert outcomes.get(130, 0) >= 4, outcomes
