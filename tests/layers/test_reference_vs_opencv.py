"""The numpy reference executor against an independent Caffe implementation: OpenCV's dnn importer.

OpenCV names a layer's output by the *layer* name (its fused in-place ReLUs aside), so each check
compares the value that layer produces. Known deviation (shared notes): OpenCV ignores LRN's ``k``;
those nets are checked against Caffe's formula directly in test_reference.py instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.reference import execute

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):  # OpenCV 5 removed the Caffe importer
    pytest.skip("this OpenCV has no Caffe importer (use opencv-python-headless 4.x)", allow_module_level=True)


def opencv_outputs(prototxt: Path, model: Path, x: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(model))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    return dict(zip(layers, net.forward(layers)))


def test_resnet50_logits_and_mid_blobs_match_opencv(resnet50_files, resnet50_graph, image_batch) -> None:
    model, deploy = resnet50_files
    layers = ["fc1000", "res3a", "pool1", "res5c", "prob"]
    ours = execute(resnet50_graph, image_batch)
    theirs = opencv_outputs(deploy, model, image_batch, layers)
    for layer in layers:
        value = ours[resnet50_graph.node(layer).outputs[0]]
        assert max_rel_error(value, theirs[layer]) <= 1e-4, layer
    top5_ours = np.argsort(-ours["fc1000"], axis=1)[:, :5]
    top5_theirs = np.argsort(-theirs["fc1000"], axis=1)[:, :5]
    np.testing.assert_array_equal(top5_ours, top5_theirs)


# OpenCV deviates from Caffe on LRN's k and on a deconvolution's dilation / pad_h, pad_w (see fixtures.ZOO);
# those are checked against Caffe's formulas in test_reference.py. Its importer knows none of the OCR fork's
# sequence layers (crnn_style: checked against the fork's formulas in test_layers_sequence.py)
OPENCV_ZOO = [name for name in fixtures.ZOO if name not in ("lrn", "deconvolution_dilated", "crnn_style")]


@pytest.mark.parametrize("name", OPENCV_ZOO)
def test_zoo_net_matches_opencv_layer_by_layer(name: str, tmp_path: Path) -> None:
    model, deploy = fixtures.write_model(name, tmp_path)
    graph = caffe2x.load(model, deploy)
    shape = next(iter(graph.inputs.values()))
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    ours = execute(graph, x)
    layers = [n.name for n in graph.nodes]
    theirs = opencv_outputs(deploy, model, x, layers)
    for layer in layers:
        value, their = ours[graph.node(layer).outputs[0]], theirs[layer]
        if graph.node(layer).op == "DetectionOutput":  # a set of rows: OpenCV orders them by score
            value, their = detection_rows(value), detection_rows(their)
        assert value.shape == their.reshape(value.shape).shape
        assert max_rel_error(value, their.reshape(value.shape)) <= 1e-5, f"{name}: {layer}"


def detection_rows(a: np.ndarray) -> np.ndarray:
    """DetectionOutput's rows in a canonical order (image, label, descending score), without the zero
    rows OpenCV pads with up to keep_top_k."""
    rows = a.reshape(-1, 7)
    rows = rows[np.any(rows != 0, axis=1)]
    return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn_with_k_one_matches_opencv(region: str, tmp_path: Path) -> None:
    text = f"""
input: "data" input_shape {{ dim: 1 dim: 6 dim: 7 dim: 5 }}
layer {{ name: "lrn" type: "LRN" bottom: "data" top: "lrn"
  lrn_param {{ local_size: 3 alpha: 0.5 beta: 0.75 norm_region: {region} }} }}
"""
    deploy = tmp_path / "lrn.prototxt"
    deploy.write_text(text)
    model = tmp_path / "lrn.caffemodel"
    model.write_bytes(fixtures.synthesize(text))
    graph = caffe2x.load(model, deploy)
    x = np.random.default_rng(3).standard_normal((1, 6, 7, 5)).astype(np.float32) * 2
    theirs = opencv_outputs(deploy, model, x, ["lrn"])["lrn"]
    assert max_rel_error(caffe2x.run(graph, x), theirs) <= 1e-5
