"""Nothing lost, nothing left: outputs never overwrite inputs, existing files are kept without --force,
temporary files go on errors and signals (real child processes), a full disk is an error naming the
path with the previous file intact."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.helpers.child_process import start_until_ready

import caffe2x
from caffe2x.errors import Caffe2xError
from caffe2x.fileio import OutputExistsError

CLI = [sys.executable, "-m", "caffe2x"]


def cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, **kw)


def one_error(proc: subprocess.CompletedProcess[str], pattern: str, code: int = 2) -> None:
    assert proc.returncode == code, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and pattern in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".part" in p.name)


@pytest.fixture()
def work(tiny_files, tmp_path: Path) -> tuple[Path, Path]:
    model, deploy = (shutil.copy(p, tmp_path) for p in tiny_files)
    return Path(model), Path(deploy)


# --------------------------------------------------------------------------- outputs that are inputs
def test_convert_refuses_to_write_over_its_own_safetensors_input(work, tmp_path: Path) -> None:
    model, deploy = work
    st = tmp_path / "g.safetensors"
    assert cli("convert", model, "-p", deploy, "-o", st, "-q").returncode == 0
    before = st.read_bytes()
    one_error(cli("convert", st, "--to", "safetensors", "--dtype", "float16", "--force"), "is the model of this run")
    one_error(cli("convert", model, "-p", deploy, "-o", deploy, "--to", "safetensors", "--force"),
              "is the prototxt of this run")
    assert st.read_bytes() == before


@pytest.mark.parametrize("flags,pattern", [
    (["--json", "{model}"], "the --json report {model} is the model of this run"),
    (["--html", "{deploy}"], "the --html report {deploy} is the prototxt of this run"),
    (["--json", "{out}", "--html", "{out}"], "are both"),
    (["--json", "{img}", "--images", "{img}"], "is the image of this run"),
    (["--json", "{st}", "--against", "{st}"], "is the --against file of this run"),
])
def test_validate_reports_never_overwrite_inputs(work, tmp_path: Path, flags, pattern: str) -> None:
    model, deploy = work
    st = tmp_path / "a.safetensors"
    caffe2x.save(caffe2x.load(model, deploy), st)
    img = tmp_path / "photo.jpg"
    img.write_bytes(b"not really a jpeg")
    names = dict(model=model, deploy=deploy, out=tmp_path / "r.json", img=img, st=st)
    before = {p: p.read_bytes() for p in (model, deploy, img, st)}
    args = [f.format(**names) for f in flags]
    one_error(cli("validate", model, "-p", deploy, "--frameworks", "numpy", "--force", *args), pattern.format(**names))
    assert {p: p.read_bytes() for p in before} == before


def test_kept_artifacts_are_not_overwritten_without_force(work, tmp_path: Path) -> None:
    model, deploy = work
    keep = tmp_path / "keep"
    keep.mkdir()
    mine = keep / f"{model.stem}.safetensors"
    mine.write_bytes(b"the user's own file")
    with pytest.raises(OutputExistsError, match=r"already exists; pass overwrite=True to"):
        caffe2x.validate(model, deploy, frameworks=["numpy"], keep_artifacts=keep)
    assert mine.read_bytes() == b"the user's own file"
    report = caffe2x.validate(model, deploy, frameworks=["numpy"], keep_artifacts=keep, overwrite=True)
    assert report.passed and mine.read_bytes() != b"the user's own file"


# --------------------------------------------------------------------------- existing outputs
def test_existing_output_is_kept_unless_force_and_an_identical_rerun_succeeds(work, tmp_path: Path) -> None:
    model, deploy = work
    out = tmp_path / "o.safetensors"
    assert cli("convert", model, "-p", deploy, "-o", out, "-q").returncode == 0
    first = out.read_bytes()
    again = cli("convert", model, "-p", deploy, "-o", out)  # same command twice: the same bytes, kept
    assert again.returncode == 0 and "left unchanged" in again.stderr, again.stderr
    one_error(cli("convert", model, "-p", deploy, "-o", out, "--dtype", "float16"), "already exists")
    assert out.read_bytes() == first and leftovers(tmp_path) == []
    assert cli("convert", model, "-p", deploy, "-o", out, "--dtype", "float16", "--force", "-q").returncode == 0
    assert out.read_bytes() != first
    report = tmp_path / "r.json"
    report.write_text("{}")
    one_error(cli("validate", model, "-p", deploy, "--frameworks", "numpy", "--json", report), "already exists")
    assert report.read_text() == "{}"


def test_library_save_keeps_a_different_file_unless_overwrite(tiny_files, tmp_path: Path) -> None:
    graph = caffe2x.load(*tiny_files)
    out = tmp_path / "o.pt"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        caffe2x.save(graph, out)
    assert out.read_bytes() == b"precious" and leftovers(tmp_path) == []
    caffe2x.save(graph, out, overwrite=True)
    notes = caffe2x.save(graph, out)  # torch archives differ only by their random serialization id
    assert any("left unchanged" in n for n in notes)


def test_readme_setup_commands_can_run_twice(tmp_path: Path) -> None:
    for _ in range(2):
        assert cli("fixture", "tiny", "-o", tmp_path / "demo", "-q", cwd=tmp_path).returncode == 0
        proc = cli("convert", tmp_path / "demo/tiny.caffemodel", "--prototxt", tmp_path / "demo/tiny-deploy.prototxt",
                   "--to", "safetensors", "-q")
        assert proc.returncode == 0, proc.stderr


def test_failing_dtype_measurement_leaves_no_file(tiny_files, tmp_path: Path, monkeypatch) -> None:
    import caffe2x.convert as convert

    def fail(graph, dtype, seed=0):  # type: ignore[no-untyped-def]
        raise Caffe2xError("measurement failed")

    monkeypatch.setattr(convert, "dtype_note", fail)
    out = tmp_path / "o.safetensors"
    with pytest.raises(Caffe2xError, match="measurement failed"):
        caffe2x.save(caffe2x.load(*tiny_files), out, dtype="float16")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- signals (real processes)
SLOW_WRITER = """
import pathlib, sys, time
import caffe2x.targets.safetensors as st
from caffe2x.cli import main

def slow(graph, path, options):
    pathlib.Path(path).write_bytes(b"half a file")
    pathlib.Path({ready!r}).write_text("writing")
    {body}
    return []

st.write = slow
sys.exit(main(["convert", {model!r}, "-p", {deploy!r}, "-o", {out!r}, "-q", "--force"]))
"""


@pytest.mark.parametrize("sig,code,body", [
    (signal.SIGTERM, 143, "time.sleep(60)"),
    (signal.SIGINT, 130, "time.sleep(60)"),
    # a library that swallows the KeyboardInterrupt must not make the run "succeed"
    (signal.SIGINT, 130, "try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass"),
])
def test_signal_during_a_write_removes_the_temporary_file(work, tmp_path: Path, sig, code: int, body: str) -> None:
    model, deploy = work
    out, ready = tmp_path / "o.safetensors", tmp_path / "ready"
    out.write_bytes(b"previous")
    script = SLOW_WRITER.format(model=str(model), deploy=str(deploy), out=str(out), ready=str(ready), body=body)
    child = start_until_ready(script, ready)
    child.send_signal(sig)
    _, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: ")
    assert out.read_bytes() == b"previous"
    assert leftovers(tmp_path) == []


SLOW_ARTIFACT_CHECK = """
import pathlib, sys, time
import caffe2x.validation.artifacts as artifacts
from caffe2x.cli import main

def slow(*args, **kwargs):
    pathlib.Path({ready!r}).write_text("checking")
    time.sleep(60)

artifacts.check_artifact = slow
sys.exit(main(["validate", {model!r}, "-p", {deploy!r}, "--frameworks", "numpy", "--against", {art!r}, "-q"]))
"""


def test_sigterm_during_validate_leaves_no_temporary_directory(work, tmp_path: Path) -> None:
    """validate's work directory (converted files), its run directory (the reference's spilled values, child
    processes' files) and its scratch directory for expected artifacts all go when the run is terminated,
    as they do when it ends."""
    model, deploy = work
    art = tmp_path / "a.safetensors"
    assert cli("convert", model, "-p", deploy, "-o", art, "-q").returncode == 0
    tmp, ready = tmp_path / "tmp", tmp_path / "ready"
    tmp.mkdir()
    script = SLOW_ARTIFACT_CHECK.format(model=str(model), deploy=str(deploy), art=str(art), ready=str(ready))
    child = start_until_ready(script, ready, tmp)
    # caffe2x-expected-*, caffe2x-validate-* (converted files), caffe2x-validate-run-* (reference spill, child files)
    assert sorted(p.name.split("-")[1] for p in tmp.iterdir()) == ["expected", "validate", "validate"]
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    assert "Traceback" not in err
    assert list(tmp.iterdir()) == []


# --------------------------------------------------------------------------- full disk
def test_enospc_from_any_writer_is_an_error_naming_the_path(tiny_files, tmp_path: Path, monkeypatch) -> None:
    import caffe2x.targets.safetensors as st

    out = tmp_path / "o.safetensors"
    out.write_bytes(b"previous")

    def full(graph, path, options):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(st, "write", full)
    with pytest.raises(Caffe2xError, match=f"cannot write {out}: no space left on device"):
        caffe2x.save(caffe2x.load(*tiny_files), out, overwrite=True)

    def torch_like(graph, path, options):  # type: ignore[no-untyped-def]
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed (No space left on device)")

    monkeypatch.setattr(st, "write", torch_like)
    with pytest.raises(Caffe2xError, match="no space left on device"):
        caffe2x.save(caffe2x.load(*tiny_files), out, overwrite=True)
    assert out.read_bytes() == b"previous" and leftovers(tmp_path) == []


@pytest.fixture()
def small_tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("suffix", [".safetensors", ".h5"])  # HDF5 used to crash (exit 139)
def test_full_tmpfs_is_an_error_and_keeps_the_previous_file(work, small_tmpfs: Path, suffix: str) -> None:
    model, deploy = work
    out = small_tmpfs / f"o{suffix}"
    out.write_bytes(b"previous")
    one_error(cli("convert", model, "-p", deploy, "-o", out, "--force"), f"cannot write {out}: no space left on device")
    assert out.read_bytes() == b"previous" and leftovers(small_tmpfs) == []
