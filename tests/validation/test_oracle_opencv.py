"""``validate --oracle opencv``: OpenCV's Caffe importer as a second, independent reference for the
compared (logits) blob. It agrees on a small ResNet (also when the deploy prototxt is written from the
caffemodel's own net), names LRN with k != 1 as a known deviation instead of failing, catches a
reference that went wrong (only OpenCV disagrees, and the failure names it), and without OpenCV the
option is a one-line error."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe2x import fixtures, load
from caffe2x.cli.main import main
from caffe2x.graph import reference
from caffe2x.graph.reference import execute
from caffe2x.validation.comparison import topk
from caffe2x.validation.oracles import run_opencv
from caffe2x.validation.validator import validate
from tests.helpers.layer_nets import NETS

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):  # OpenCV 5 removed the Caffe importer
    pytest.skip("this OpenCV has no Caffe importer (use opencv-python-headless 4.x)", allow_module_level=True)


@pytest.fixture(scope="module")
def lrn_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two LRN layers: 'across' with k = 2 (OpenCV ignores k), 'within' with Caffe's default k."""
    return fixtures.write_model("lrn", tmp_path_factory.mktemp("lrn"))


def test_opencv_agrees_on_a_small_resnet_and_the_cli_reports_it(tiny_files, tmp_path: Path, capsys) -> None:
    model, deploy = tiny_files
    report = tmp_path / "r.json"
    rc = main(["validate", str(model), "-p", str(deploy), "--frameworks", "numpy", "--oracle", "opencv",
               "--json", str(report)])
    out = capsys.readouterr().out
    assert rc == 0, out
    (oracle,) = json.loads(report.read_text())["oracles"]
    assert oracle["name"] == "opencv" and oracle["status"] == "PASS" and oracle["blob"] == "fc10"
    assert oracle["max_rel"] < 1e-5 and oracle["top5_agree"] == oracle["samples"] == 4
    assert oracle["deviations"] == [] and oracle["frameworks"][0]["name"] == "numpy"
    assert f"oracle opencv {cv2.__version__}: PASS, max rel" in out


def test_without_a_prototxt_opencv_reads_a_deploy_written_from_the_caffemodel(tiny_files) -> None:
    r = validate(tiny_files[0], input_shape=(1, 3, 32, 32), frameworks=[], oracles=["opencv"])
    (oracle,) = r.oracles
    assert oracle["status"] == "PASS", oracle["reason"]
    assert oracle["max_rel"] < 1e-5 and r.passed


def test_lrn_with_k_not_one_is_a_known_deviation_not_a_failure(lrn_files) -> None:
    r = validate(*lrn_files, frameworks=["numpy"], oracles=["opencv"], outputs="across")
    (oracle,) = r.oracles
    assert oracle["status"] == "NOT_JUDGED" and r.passed
    assert oracle["deviations"] == [{"layer": "across", "op": "LRN", "what": "LRN k=2", "why": "OpenCV ignores k"}]
    assert oracle["reason"] == ("not judged: layers across (LRN k=2) implemented differently by OpenCV "
                                "(OpenCV ignores k)")
    assert oracle["max_rel"] > 1e-2  # the difference is real, measured and reported
    assert "oracle opencv" in r.table() and "not judged: layers across (LRN k=2)" in r.table()
    assert "not judged: layers across (LRN k=2)" in r.html()
    # the same net's other LRN keeps Caffe's default k = 1: judged, and OpenCV agrees
    within = validate(*lrn_files, frameworks=[], oracles=["opencv"], outputs="within").oracles[0]
    assert within["status"] == "PASS" and within["deviations"] == []


def test_a_wrong_reference_is_caught_by_opencv_and_named(lrn_files, monkeypatch) -> None:
    lrn = reference.OPS["LRN"]
    monkeypatch.setitem(reference.OPS, "LRN", lambda node, xs, graph: [y * np.float32(1.01) for y in lrn(node, xs, graph)])
    r = validate(*lrn_files, frameworks=["numpy"], oracles=["opencv"], outputs="within")
    assert r.framework("numpy").status == "PASS"  # the numpy target runs the same (wrong) reference
    (oracle,) = r.oracles
    assert oracle["status"] == "FAIL" and not r.passed
    assert r.failures == [f"opencv oracle: {oracle['reason']}"]
    assert oracle["reason"].startswith("OpenCV's 'within' differs from the reference: max rel 9.9e-03")


def test_oracle_opencv_without_opencv_is_a_one_line_error(tiny_files, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    rc = main(["validate", str(tiny_files[0]), "-p", str(tiny_files[1]), "--frameworks", "numpy", "--oracle", "opencv"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines()[-1] == ("error: --oracle opencv: OpenCV is not installed: "
                                            "pip install 'caffe2x[oracle]' (opencv-python-headless 4.x)")


#: layer_nets whose every output OpenCV computes as Caffe does, and ones it does not (a known deviation,
#: a layer it lacks, a net it refuses or crashes on: BatchNorm with batch statistics segfaults it)
AGREES = ["power", "mvn", "slice"]
DIFFERS = ["log_base_scale_shift", "swish_beta", "mvn_eps", "threshold", "batchnorm_batch_statistics"]


@pytest.mark.parametrize("name", AGREES + DIFFERS)
def test_the_oracle_passes_what_opencv_implements_and_never_fails_on_what_it_does_not(name: str, tmp_path: Path) -> None:
    net = NETS[name]
    assert net.opencv == (name in AGREES)
    deploy, model = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    deploy.write_text(net.text)
    model.write_bytes(fixtures.synthesize(net.text))
    graph = load(model, deploy)
    (x,) = net.inputs(dict(graph.inputs)).values()
    statuses = {}
    for value in graph.outputs:  # every output blob (the validator compares the first), each with its own deploy
        ref = execute(graph, x, keep={value})[value]
        result = run_opencv(model, deploy, graph, x, value, ref, topk(ref), 1e-4, 0.0, {})
        statuses[value] = result["status"]
        if result["status"] == "NOT_JUDGED":
            assert result["deviations"] and result["reason"].startswith("not judged: layers ")
    expected = {"PASS"} if net.opencv else {"NOT_JUDGED", "SKIP"}
    assert set(statuses.values()) <= expected, statuses


def test_opencv_axpy_computes_caffes_numbers_once_fed_the_blob_bottoms_swapped(tmp_path: Path) -> None:
    """OpenCV 4.x's Axpy is ``a * bottom[2] + bottom[1]`` (SENet's: ``a * bottom[1] + bottom[2]``): as
    written OpenCV differs; the oracle's deploy swaps the two blob bottoms and OpenCV agrees (one
    image: OpenCV's Axpy fails on larger batches)."""
    from caffe2x.graph.numeric import max_rel_error
    from caffe2x.validation.oracles.deploy import deploy_text

    net = NETS["axpy"]
    deploy, model = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    deploy.write_text(net.text)
    model.write_bytes(fixtures.synthesize(net.text))
    graph = load(model, deploy)
    (x,) = net.inputs(dict(graph.inputs)).values()
    x = x[:1]  # OpenCV's Axpy (a two-bottom Scale inside) fails on a batch of more than one image
    value = graph.value("axpy")
    ref = execute(graph, x, keep={value})[value]
    as_written = cv2.dnn.readNetFromCaffe(str(deploy), str(model))
    as_written.setInput(x)
    assert max_rel_error(as_written.forward("axpy"), ref) > 1e-2
    swapped = tmp_path / "swapped.prototxt"
    swapped.write_text(deploy_text(model, deploy, graph, value, len(x), for_opencv=True))
    assert 'bottom: "sig"\n  bottom: "data"\n  bottom: "conv"' in swapped.read_text()
    result = run_opencv(model, deploy, graph, x, value, ref, topk(ref), 1e-4, 0.0, {})
    assert result["status"] == "PASS" and result["max_rel"] < 1e-5, result["reason"]
