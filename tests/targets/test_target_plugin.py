"""A framework is one module (issue 13): a target defined in one file outside caffe2x
(``tests/helpers/npz_target.py``) works with ``convert --to``, ``validate --frameworks`` and ``--against``,
registered in-process with :func:`caffe2x.targets.register` (what the entry-point loader calls) and as
a real ``caffe2x.targets`` entry point of a separate distribution."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import caffe2x
from caffe2x.cli.main import main
import caffe2x.targets

HERE = Path(__file__).resolve().parents[1] / "helpers"
DOC = HERE.parents[1] / "docs" / "targets.md"


def run_main(*args: object) -> SimpleNamespace:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return SimpleNamespace(rc=rc, out=out.getvalue(), err=err.getvalue())


@pytest.fixture
def npz_registered() -> Iterator[caffe2x.targets.Target]:
    sys.path.insert(0, str(HERE))
    try:
        import tests.helpers.npz_target as npz_target
    finally:
        sys.path.remove(str(HERE))
    target = caffe2x.targets.register(npz_target.TARGET)
    try:
        yield target
    finally:
        caffe2x.targets.unregister(target.name)


def test_convert_to_a_registered_target_writes_its_file(tiny_files: tuple[Path, Path], tmp_path: Path,
                                                        npz_registered: caffe2x.targets.Target) -> None:
    model, deploy = tiny_files
    r = run_main("convert", model, "-p", deploy, "--to", "npz", "-o", tmp_path / "tiny.npz", "-q")
    assert r.rc == 0, r.err
    graph = caffe2x.load(model, deploy)
    with np.load(tmp_path / "tiny.npz") as data:
        assert sorted(data.files) == sorted(graph.tensors)
        assert all(np.array_equal(data[k], graph.tensors[k]) for k in data.files)
    r = run_main("convert", model, "-p", deploy, "-o", tmp_path / "by-suffix.npz", "-q")  # found by suffix
    assert r.rc == 0 and (tmp_path / "by-suffix.npz").is_file()


def test_validate_runs_a_registered_target_and_checks_its_artifacts(
        tiny_files: tuple[Path, Path], tmp_path: Path, npz_registered: caffe2x.targets.Target) -> None:
    model, deploy = tiny_files
    good = tmp_path / "good.npz"
    caffe2x.save(caffe2x.load(model, deploy), good)
    with np.load(good) as data:
        tensors = {k: data[k] for k in data.files}
    key = next(iter(tensors))
    tensors[key] = tensors[key] + np.float32(1e-2)
    np.savez(tmp_path / "bad.npz", **tensors)
    r = run_main("validate", model, "-p", deploy, "--frameworks", "numpy,npz", "--against", good,
                 "--against", tmp_path / "bad.npz", "--json", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert [(f["name"], f["status"]) for f in report["frameworks"]] == [("numpy", "PASS"), ("npz", "PASS")]
    assert report["frameworks"][1]["artifact"] == "tiny.npz"
    good_a, bad_a = report["artifacts"]
    assert good_a["status"] == "PASS" and good_a["framework"] == "npz"
    assert good_a["tensors_checked"] == len(tensors)
    assert bad_a["status"] == "FAIL" and [d["tensor"] for d in bad_a["differing"]] == [key]
    assert r.rc == 1


def test_a_target_from_another_distributions_entry_point_needs_no_change_to_caffe2x(
        tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    """A dist-info on sys.path declaring ``[caffe2x.targets] npz = npz_target:TARGET``: what
    ``pip install caffe2x-npz`` would leave behind."""
    site = tmp_path / "site"
    dist = site / "caffe2x_npz-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: caffe2x-npz\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[caffe2x.targets]\nnpz = npz_target:TARGET\n")
    shutil.copy(HERE / "npz_target.py", site / "npz_target.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))
    model, deploy = tiny_files
    out = tmp_path / "tiny.npz"

    def cli(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "caffe2x", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=300)

    conv = cli("convert", model, "-p", deploy, "--to", "npz", "-o", out, "-q")
    assert conv.returncode == 0, conv.stderr
    val = cli("validate", model, "-p", deploy, "--frameworks", "npz", "--against", out, "-q")
    assert val.returncode == 0, val.stdout + val.stderr
    assert val.stdout.startswith("PASS"), val.stdout


def test_docs_show_the_complete_example_target() -> None:
    source = (HERE / "npz_target.py").read_text(encoding="utf-8")
    assert source.strip() in DOC.read_text(encoding="utf-8"), "docs/targets.md must show tests/helpers/npz_target.py verbatim"


def test_numpy_target_reuses_the_reference_only_for_an_identical_graph_and_the_same_batch(
        tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    graph = caffe2x.load(*tiny_files)
    path = tmp_path / "tiny.safetensors"
    caffe2x.save(graph, path)
    numpy_target = caffe2x.targets.get("numpy")
    x = np.zeros((1, *graph.inputs[next(iter(graph.inputs))][1:]), np.float32)
    value = graph.logits()[0]
    sentinel = np.full((1, 3), 7.0, np.float32)
    runner = numpy_target.load(path, graph)
    runner.use_reference(x, {value: sentinel})
    assert runner.run(x, [value])[value] is sentinel
    assert runner.run(x.copy(), [value])[value] is not sentinel        # another batch: computed
    other = graph.copy(tensors={k: v + 1 for k, v in graph.tensors.items()})
    runner = numpy_target.load(path, other)                            # file differs from the graph
    runner.use_reference(x, {value: sentinel})
    assert runner.run(x, [value])[value] is not sentinel
