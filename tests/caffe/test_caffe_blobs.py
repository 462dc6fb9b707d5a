"""``validate --caffe-blobs blobs.npz --inputs x.npy``: blobs from an independent Caffe implementation
(OpenCV's importer, saved as pycaffe's ``net.blobs[name].data`` would be) are the reference; a wrong
blob is named in the report."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x.cli.main import main
from caffe2x.validation.validator import validate

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):
    pytest.skip("this OpenCV has no Caffe importer (use opencv-python-headless 4.x)", allow_module_level=True)

WRONG = "res2a"


@pytest.fixture(scope="module")
def dumped(tiny_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Every blob of the tiny net after OpenCV's forward pass, keyed by blob name, plus the batch."""
    model, deploy = tiny_files
    graph = caffe2x.load(model, deploy)
    (name, shape), = graph.inputs.items()
    x = np.random.default_rng(3).standard_normal((2, *shape[1:])).astype(np.float32)
    producers = graph.producers()
    blobs = {b: producers[v].name for b, v in graph.blobs.items() if b not in graph.inputs}
    net = cv2.dnn.readNetFromCaffe(str(deploy), str(model))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.enableFusion(False)
    net.setInput(x)
    outs = dict(zip(blobs, net.forward(list(blobs.values()))))
    d = tmp_path_factory.mktemp("caffe-blobs")
    np.save(d / "x.npy", x)
    np.savez(d / "good.npz", **{name: x}, **outs)
    wrong = dict(outs)
    wrong[WRONG] = wrong[WRONG] * 1.05
    np.savez(d / "wrong.npz", **wrong)
    import h5py

    with h5py.File(d / "good.h5", "w") as f:
        for k, v in outs.items():
            f[k] = v
    return graph, model, deploy, d, outs


def test_blobs_from_an_independent_forward_pass_pass_and_become_the_logits_reference(dumped) -> None:  # type: ignore[no-untyped-def]
    graph, model, deploy, d, outs = dumped
    report = validate(model, deploy, frameworks=["numpy", "onnx"], caffe_blobs=d / "good.npz")
    assert report.passed, report.failures
    assert report.input["kind"] == "array" and report.input["shape"][0] == 2
    assert {c["blob"] for c in report.caffe_blobs} == set(outs)
    assert all(c["status"] == "PASS" for c in report.caffe_blobs)
    # the .h5 form with the batch given separately
    report = validate(model, deploy, frameworks=["numpy"], caffe_blobs=d / "good.h5", inputs=d / "x.npy")
    assert report.passed, report.failures


def test_a_wrong_blob_fails_the_run_and_is_named(dumped) -> None:  # type: ignore[no-untyped-def]
    graph, model, deploy, d, outs = dumped
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = main(["validate", str(model), "--prototxt", str(deploy), "--frameworks", "numpy",
                   "--caffe-blobs", str(d / "wrong.npz"), "--inputs", str(d / "x.npy"), "-q"])
    assert rc == 1
    assert f"Caffe blob {WRONG!r}" in out.getvalue()
    report = validate(model, deploy, frameworks=["numpy"], caffe_blobs=d / "wrong.npz", inputs=d / "x.npy")
    failed = [c["blob"] for c in report.caffe_blobs if c["status"] == "FAIL"]
    assert failed == [WRONG]
