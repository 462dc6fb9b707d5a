"""SSD, resampling and region-pooling layers read from real prototxts/caffemodels: the numpy reference
matches OpenCV end to end where OpenCV implements the layer, and every target (file written, loaded back
by the framework's own loader) matches the reference <= 1e-5; detections are compared as sets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers.layer_targets import RUNNERS, run_emitted_torch

import caffe2x
from caffe2x import fixtures
from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.reference import execute

TOL = 1e-5

SSD = """name: "ssd-mini"
input: "data" input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv1_norm" type: "Normalize" bottom: "conv1" top: "conv1_norm"
  norm_param { across_spatial: false channel_shared: false eps: 1e-10 } }
layer { name: "conv1_priorbox" type: "PriorBox" bottom: "conv1_norm" bottom: "data" top: "conv1_priorbox"
  prior_box_param { min_size: 6 max_size: 12 aspect_ratio: 2 flip: true clip: false
    variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 offset: 0.5 } }
layer { name: "loc" type: "InnerProduct" bottom: "conv1_norm" top: "loc" inner_product_param { num_output: %(loc)d } }
layer { name: "conf_logits" type: "InnerProduct" bottom: "conv1_norm" top: "conf_logits"
  inner_product_param { num_output: %(conf)d } }
layer { name: "conf" type: "Sigmoid" bottom: "conf_logits" top: "conf" }
layer { name: "detection_out" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "conv1_priorbox"
  top: "detection_out"
  detection_output_param { num_classes: 3 share_location: %(share)s background_label_id: 0
    nms_param { nms_threshold: %(nms)s top_k: 40 eta: %(eta)s } code_type: %(code)s keep_top_k: 25
    confidence_threshold: %(thr)s } }
"""
PRIORS = 8 * 8 * 4


def ssd_text(share: bool = True, nms: float = 0.45, eta: float = 1.0, code: str = "CENTER_SIZE",
             thr: float = 0.3) -> str:
    return SSD % {"loc": PRIORS * 4 * (1 if share else 3), "conf": PRIORS * 3, "share": str(share).lower(),
                  "nms": nms, "eta": eta, "code": code, "thr": thr}


SEGNET = """name: "segnet-mini"
input: "data" input_shape { dim: 2 dim: 3 dim: 9 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "pool1_mask"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "upsample1" type: "Upsample" bottom: "conv2" bottom: "pool1_mask" top: "upsample1"
  upsample_param { upsample_h: 9 upsample_w: 8 } }
layer { name: "pool2" type: "Pooling" bottom: "upsample1" top: "pool2" top: "pool2_mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "upsample2" type: "Upsample" bottom: "pool2" bottom: "pool2_mask" top: "upsample2"
  upsample_param { scale: 2 pad_out_h: true } }
layer { name: "nearest" type: "Upsample" bottom: "upsample2" top: "nearest" upsample_param { scale: 3 } }
"""

INTERP = """name: "interp-mini"
input: "data" input_shape { dim: 1 dim: 3 dim: 9 dim: 8 }
layer { name: "zoom" type: "Interp" bottom: "data" top: "zoom" interp_param { zoom_factor: 2 } }
layer { name: "shrink" type: "Interp" bottom: "zoom" top: "shrink" interp_param { shrink_factor: 3 } }
layer { name: "crop" type: "Interp" bottom: "data" top: "crop" interp_param { zoom_factor: 3 pad_beg: -1 pad_end: -2 } }
layer { name: "sized" type: "Interp" bottom: "crop" top: "sized" interp_param { height: 5 width: 11 } }
layer { name: "like" type: "Interp" bottom: "sized" bottom: "zoom" top: "like" }
"""

REGIONS = """name: "%(name)s"
input: "data" input_shape { dim: 2 dim: 3 dim: 24 dim: 20 }
input: "rois" input_shape { dim: 6 dim: 5 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
%(layer)s
"""
ROI = REGIONS % {"name": "fast-rcnn-mini", "layer": """layer { name: "roi_pool" type: "ROIPooling" bottom: "conv"
  bottom: "rois" top: "roi_pool" roi_pooling_param { pooled_h: 3 pooled_w: 4 spatial_scale: 0.0625 } }"""}
PSROI = REGIONS % {"name": "rfcn-mini", "layer": """layer { name: "psroi_pool" type: "PSROIPooling" bottom: "conv"
  bottom: "rois" top: "psroi_pool" psroi_pooling_param { output_dim: 2 group_size: 2 spatial_scale: 0.0625 } }"""}
ROIS = np.array([[0, 3, 5, 140, 130], [1, 0, 0, 319, 383], [0, 70, 90, 72.5, 92], [1, -40, 16, 120, 800],
                 [0, 200, 200, 240, 280], [1, 400, 480, 520, 560]], np.float32)

RECURRENT = """name: "%(kind)s-mini"
input: "x" input_shape { dim: 5 dim: 2 dim: 3 dim: 2 }
input: "cont" input_shape { dim: 5 dim: 2 }
layer { name: "rec" type: "%(kind)s" bottom: "x" bottom: "cont" top: "rec" recurrent_param { num_output: 4 } }
layer { name: "head" type: "InnerProduct" bottom: "rec" top: "head" inner_product_param { num_output: 3 axis: 2 } }
"""
#: sequences: image 0 restarts at t = 2, image 1 runs through
CONT = np.array([[0, 0], [1, 1], [0, 1], [1, 1], [1, 1]], np.float32)

TEXTBOXES_PRIORS = """name: "textboxes-priors"
input: "data" input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "conv1_priorbox" type: "PriorBox" bottom: "conv1" bottom: "data" top: "conv1_priorbox"
  prior_box_param { min_size: 6 max_size: 12 aspect_ratio: 2 aspect_ratio: 5 flip: false clip: true
    variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2
    offset_h: 0.5 offset_w: 0.5 offset_h: 1.0 offset_w: 0.5 } }
"""

NETS = {
    "textboxes_priors": TEXTBOXES_PRIORS,
    "ssd": ssd_text(),
    "ssd_eta_not_shared_corner_size": ssd_text(share=False, nms=0.7, eta=0.8, code="CORNER_SIZE"),
    "ssd_corner": ssd_text(code="CORNER"),
    "ssd_eta_keep_all": ssd_text(nms=0.7, eta=0.8).replace("keep_top_k: 25", "keep_top_k: -1"),
    "segnet": SEGNET,
    "interp": INTERP,
    "ssd_nothing_found": ssd_text(thr=0.99999),
    "roi": ROI,
    "psroi": PSROI,
    "lstm": RECURRENT % {"kind": "LSTM"},
    "rnn": RECURRENT % {"kind": "RNN"},
}

#: the ops each target implements exactly (all of them, in every target)
SUPPORTED = {
    "torch": set(NETS),
    "keras": set(NETS),
    "onnx": set(NETS),
}


def load(name: str, tmp_path: Path) -> tuple[Graph, Path, Path]:
    text = NETS[name]
    deploy, model = tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
    deploy.write_text(text)
    model.write_bytes(fixtures.synthesize(text))
    return caffe2x.load(model, deploy), model, deploy


def feeds_for(graph: Graph, seed: int = 11) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    fixed = {"rois": ROIS, "cont": CONT}
    return {k: fixed[k] if k in fixed else rng.standard_normal(s).astype(np.float32) for k, s in graph.inputs.items()}


def detections(a: np.ndarray) -> np.ndarray:
    rows = a.reshape(-1, 7)
    return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]


def compare(graph: Graph, value: str, got: np.ndarray, ref: np.ndarray) -> float:
    if graph.producers()[value].op == "DetectionOutput":
        got, ref = detections(got), detections(ref)
    assert got.shape == ref.shape, value
    return max_rel_error(got, ref)


@pytest.mark.parametrize("name", list(NETS))
def test_reader_builds_the_net_and_the_reference_runs(name: str, tmp_path: Path) -> None:
    graph, _, _ = load(name, tmp_path)
    values = execute(graph, feeds_for(graph))
    for node in graph.nodes:
        for v in node.outputs:
            assert values[v].shape[1:] == graph.shapes[v][1:] or node.op == "DetectionOutput", v
    if name == "ssd_nothing_found":
        np.testing.assert_array_equal(values["detection_out"], [[[[0, -1, -1, -1, -1, -1, -1]]]])
    elif name.startswith("ssd"):
        assert values["detection_out"].shape[2] > 3  # the net really detects something


@pytest.mark.parametrize("name", ["ssd", "ssd_corner", "roi", "psroi", "textboxes_priors"])
def test_whole_net_matches_opencv(name: str, tmp_path: Path) -> None:
    graph, model, deploy = load(name, tmp_path)
    feeds = feeds_for(graph)
    ours = execute(graph, feeds)
    layers = [n.name for n in graph.nodes if n.op not in ("ReLU",)]
    cv2 = pytest.importorskip("cv2")

    net = cv2.dnn.readNetFromCaffe(str(deploy), str(model))
    for k, v in feeds.items():
        net.setInput(v, k)
    theirs = dict(zip(layers, net.forward(layers)))
    for layer in layers:
        value = graph.node(layer).outputs[0]
        got, ref = ours[value], theirs[layer]
        if graph.node(layer).op == "DetectionOutput":
            ref = ref.reshape(-1, 7)
            ref = ref[np.any(ref != 0, axis=1)]  # OpenCV pads to keep_top_k rows with zeros
        assert compare(graph, value, got, ref.reshape(got.shape) if got.size == ref.size else ref) <= TOL, layer


@pytest.mark.parametrize("framework", list(RUNNERS))
@pytest.mark.parametrize("name", list(NETS))
def test_every_target_matches_the_reference(framework: str, name: str, tmp_path: Path) -> None:
    if name not in SUPPORTED[framework]:
        pytest.skip(f"{framework} does not implement {name}'s layers")
    graph, _, _ = load(name, tmp_path)
    feeds = feeds_for(graph)
    outputs = [v for n in graph.nodes for v in n.outputs if graph.producers()[v].op not in ("ReLU", "Convolution")]
    ref = execute(graph, feeds)
    got = RUNNERS[framework](graph, feeds, outputs, tmp_path)
    for v in outputs:
        assert compare(graph, v, got[v], ref[v]) <= TOL, f"{framework} {name}: {v}"


def test_eta_below_one_changes_the_detections_the_targets_must_match(tmp_path: Path) -> None:
    """The adaptive threshold really matters in the eta nets (so every target matching them means it
    follows eta): fewer boxes survive than with eta 1."""
    graph, _, _ = load("ssd_eta_keep_all", tmp_path)
    plain = caffe2x.caffe.reader.graph_from_text(NETS["ssd_eta_keep_all"].replace("eta: 0.8", "eta: 1.0"))
    feeds = feeds_for(graph)
    adaptive, fixed = execute(graph, feeds)["detection_out"], execute(plain, feeds)["detection_out"]
    assert 3 < adaptive.shape[2] < fixed.shape[2]


def test_mask_pooling_with_ave_is_refused(tmp_path: Path) -> None:
    text = SEGNET.replace("pool: MAX kernel_size: 3", "pool: AVE kernel_size: 3")
    with pytest.raises(Caffe2xError, match="only MAX pooling has a second"):
        caffe2x.load(None, _write(tmp_path, text))


def test_interp_output_sizes_follow_caffe(tmp_path: Path) -> None:
    graph, _, _ = load("interp", tmp_path)
    s = {n: graph.shapes[graph.node(n).outputs[0]][2:] for n in ("zoom", "shrink", "crop", "sized", "like")}
    assert s == {"zoom": (17, 15), "shrink": (6, 5), "crop": (16, 13), "sized": (5, 11), "like": (17, 15)}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["ssd", "segnet", "interp", "psroi", "textboxes_priors"])
def test_emitted_torch_code_carries_the_layers_and_matches(name: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    graph, _, _ = load(name, tmp_path)
    feeds = feeds_for(graph)
    out = run_emitted_torch(graph, feeds, tmp_path, monkeypatch)
    ref = execute(graph, feeds)
    value = graph.outputs[0]
    got = (out if not isinstance(out, dict) else out[graph.blob_name(value)]).numpy()
    assert compare(graph, value, got, ref[value]) <= TOL


def test_lstm_is_torchs_lstm_with_caffes_gate_order_and_cont_restarts_sequences(tmp_path: Path) -> None:
    """Independent check: torch.nn.LSTM (gates i, f, g, o; one bias) on each sequence Caffe's cont
    delimits (image 0: t 0-1 and t 2-4; image 1: t 0-4) gives Caffe's outputs."""
    import torch

    graph, _, _ = load("lstm", tmp_path)
    feeds = feeds_for(graph)
    ours = execute(graph, feeds)["rec"]
    node = graph.node("rec")
    wx, bx, wh = (graph.param(node, r) for r in ("x_weight", "x_bias", "h_weight"))
    reorder = np.concatenate([np.arange(0, 8), np.arange(12, 16), np.arange(8, 12)])  # i f o g -> i f g o
    lstm = torch.nn.LSTM(6, 4)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(wx[reorder]))
        lstm.weight_hh_l0.copy_(torch.from_numpy(wh[reorder]))
        lstm.bias_ih_l0.copy_(torch.from_numpy(bx[reorder]))
        lstm.bias_hh_l0.zero_()
    x = torch.from_numpy(feeds["x"].reshape(5, 2, 6))
    with torch.no_grad():
        for image, spans in ((0, [(0, 2), (2, 5)]), (1, [(0, 5)])):
            for start, end in spans:
                expected, _ = lstm(x[start:end, image:image + 1])
                np.testing.assert_allclose(ours[start:end, image:image + 1], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_rnn_follows_caffes_unrolled_formula_by_hand(tmp_path: Path) -> None:
    graph, _, _ = load("rnn", tmp_path)
    feeds = feeds_for(graph)
    ours = execute(graph, feeds)["rec"]
    node = graph.node("rec")
    wx, bx, wh, wo, bo = (graph.param(node, r).astype(np.float64)
                          for r in ("x_weight", "x_bias", "h_weight", "o_weight", "o_bias"))
    x = feeds["x"].reshape(5, 2, 6).astype(np.float64)
    for image in range(2):
        h = np.zeros(4)
        for t in range(5):
            h = np.tanh(wh @ (CONT[t, image] * h) + wx @ x[t, image] + bx)
            np.testing.assert_allclose(ours[t, image], np.tanh(wo @ h + bo), rtol=1e-5, atol=1e-6)


def test_ssd_zoo_fixture_converts_to_every_target_and_validates(tmp_path: Path) -> None:
    model, deploy = fixtures.write_model("ssd_mobilenet_style", tmp_path)
    report = caffe2x.validate(model, deploy)
    assert report.passed, report.table()
    assert {f.name for f in report.frameworks if f.status == "PASS"} >= {"numpy", "torch", "keras", "onnx"}


@pytest.mark.parametrize("name", ["roi", "psroi"])
def test_keras_region_pooling_survives_a_keras_file(name: str, tmp_path: Path) -> None:
    """The .keras file alone (keras.models.load_model, registered caffe2x layers) pools as the reference."""
    import keras

    import caffe2x.targets.keras  # noqa: F401  (registers the caffe2x layers for load_model)

    graph, _, _ = load(name, tmp_path)
    feeds = feeds_for(graph)
    path = tmp_path / "net.keras"
    caffe2x.save(graph, path)
    model = keras.models.load_model(path)
    out = np.asarray(model([feeds["data"].transpose(0, 2, 3, 1), feeds["rois"]], training=False))
    value = graph.outputs[0]
    assert max_rel_error(out.transpose(0, 3, 1, 2), execute(graph, feeds)[value]) <= TOL
