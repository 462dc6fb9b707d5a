"""Faster R-CNN's proposal layer (py-faster-rcnn's ``rpn.proposal_layer.ProposalLayer`` and OpenCV's
``Proposal`` type): the reference against a numpy transcription of py-faster-rcnn's layer written
here, every target against the reference on a small Faster R-CNN-shaped net (conv -> RPN -> Proposal
-> ROIPooling -> fc), param_str parsing and the errors for Python layers caffe2x does not know."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers.layer_targets import RUNNERS, run_emitted_torch
from tests.helpers.opencv_caffe import opencv_forward

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe.reader import graph_from_text, read_bytes
from caffe2x.errors import Caffe2xError, cli_message
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.reference import execute
from caffe2x.layers.proposal import generate_anchors, parse_param_str

TOL = 1e-5


# --------------------------------------------------------------------------- py-faster-rcnn, transcribed
def pyfrcnn_anchors(base_size: int = 16, ratios: tuple = (0.5, 1, 2), scales: tuple = (8, 16, 32)) -> np.ndarray:
    """lib/rpn/generate_anchors.py, step by step."""
    def whctrs(anchor):  # type: ignore[no-untyped-def]
        w = anchor[2] - anchor[0] + 1
        h = anchor[3] - anchor[1] + 1
        return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)

    def mkanchors(ws, hs, x_ctr, y_ctr):  # type: ignore[no-untyped-def]
        ws, hs = ws[:, np.newaxis], hs[:, np.newaxis]
        return np.hstack((x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1), x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)))

    def ratio_enum(anchor, ratios):  # type: ignore[no-untyped-def]
        w, h, x_ctr, y_ctr = whctrs(anchor)
        size_ratios = w * h / ratios
        ws = np.round(np.sqrt(size_ratios))
        return mkanchors(ws, np.round(ws * ratios), x_ctr, y_ctr)

    def scale_enum(anchor, scales):  # type: ignore[no-untyped-def]
        w, h, x_ctr, y_ctr = whctrs(anchor)
        return mkanchors(w * scales, h * scales, x_ctr, y_ctr)

    base_anchor = np.array([1, 1, base_size, base_size]) - 1
    ratio_anchors = ratio_enum(base_anchor, np.array(ratios))
    return np.vstack([scale_enum(ratio_anchors[i, :], np.array(scales)) for i in range(ratio_anchors.shape[0])])


def pyfrcnn_nms(dets: np.ndarray, thresh: float) -> list[int]:
    """The greedy loop of nms/cpu_nms.pyx with gpu_nms's strict comparison, float32 throughout."""
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(dets), dtype=bool)
    keep = []
    for _i in range(len(dets)):
        i = order[_i]
        if suppressed[i]:
            continue
        keep.append(int(i))
        for _j in range(_i + 1, len(dets)):
            j = order[_j]
            if suppressed[j]:
                continue
            w = max(np.float32(0), min(x2[i], x2[j]) - max(x1[i], x1[j]) + np.float32(1))
            h = max(np.float32(0), min(y2[i], y2[j]) - max(y1[i], y1[j]) + np.float32(1))
            inter = np.float32(w * h)
            if np.float32(inter / (areas[i] + areas[j] - inter)) > np.float32(thresh):
                suppressed[j] = True
    return keep


def pyfrcnn_proposals(cls_prob: np.ndarray, bbox_pred: np.ndarray, im_info: np.ndarray, feat_stride: int = 16,
                      scales: tuple = (8, 16, 32), ratios: tuple = (0.5, 1, 2), pre: int = 6000, post: int = 300,
                      thresh: float = 0.7, min_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """ProposalLayer.forward at test time, transcribed."""
    anchors0 = pyfrcnn_anchors(16, ratios, scales)
    num_anchors = anchors0.shape[0]
    scores = cls_prob[:, num_anchors:, :, :]
    info = im_info[0, :]
    height, width = scores.shape[-2:]
    shift_x, shift_y = np.meshgrid(np.arange(0, width) * feat_stride, np.arange(0, height) * feat_stride)
    shifts = np.vstack((shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel())).transpose()
    anchors = (anchors0.reshape((1, num_anchors, 4)) + shifts.reshape((1, -1, 4)).transpose((1, 0, 2))).reshape((-1, 4))
    deltas = bbox_pred.transpose((0, 2, 3, 1)).reshape((-1, 4))
    scores = scores.transpose((0, 2, 3, 1)).reshape((-1, 1))
    # bbox_transform_inv
    boxes = anchors.astype(deltas.dtype, copy=False)
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    pred_ctr_x = deltas[:, 0::4] * widths[:, np.newaxis] + ctr_x[:, np.newaxis]
    pred_ctr_y = deltas[:, 1::4] * heights[:, np.newaxis] + ctr_y[:, np.newaxis]
    pred_w = np.exp(deltas[:, 2::4]) * widths[:, np.newaxis]
    pred_h = np.exp(deltas[:, 3::4]) * heights[:, np.newaxis]
    proposals = np.zeros(deltas.shape, dtype=deltas.dtype)
    proposals[:, 0::4] = pred_ctr_x - 0.5 * pred_w
    proposals[:, 1::4] = pred_ctr_y - 0.5 * pred_h
    proposals[:, 2::4] = pred_ctr_x + 0.5 * pred_w
    proposals[:, 3::4] = pred_ctr_y + 0.5 * pred_h
    # clip_boxes
    for c, limit in ((0, info[1]), (1, info[0]), (2, info[1]), (3, info[0])):
        proposals[:, c::4] = np.maximum(np.minimum(proposals[:, c::4], limit - 1), 0)
    # _filter_boxes
    ws = proposals[:, 2] - proposals[:, 0] + 1
    hs = proposals[:, 3] - proposals[:, 1] + 1
    keep = np.where((ws >= min_size * info[2]) & (hs >= min_size * info[2]))[0]
    proposals, scores = proposals[keep, :], scores[keep]
    order = np.argsort(-scores.ravel(), kind="stable")  # argsort()[::-1], equal scores in index order
    if pre > 0:
        order = order[:pre]
    proposals, scores = proposals[order, :], scores[order]
    keep = pyfrcnn_nms(np.hstack((proposals, scores)), thresh)
    if post > 0:
        keep = keep[:post]
    proposals, scores = proposals[keep, :], scores[keep]
    return np.hstack((np.zeros((len(keep), 1), dtype=np.float32), proposals.astype(np.float32))), scores


# --------------------------------------------------------------------------- nets
FRCNN = """name: "faster-rcnn-mini"
input: "data" input_shape { dim: 1 dim: 3 dim: 160 dim: 192 }
input: "im_info" input_shape { dim: 1 dim: 3 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 4 stride: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 16 kernel_size: 4 stride: 4 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "rpn_conv" type: "Convolution" bottom: "conv2" top: "rpn_conv"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "rpn_relu" type: "ReLU" bottom: "rpn_conv" top: "rpn_conv" }
layer { name: "rpn_cls_score" type: "Convolution" bottom: "rpn_conv" top: "rpn_cls_score"
  convolution_param { num_output: %(scores)d kernel_size: 1 } }
layer { name: "rpn_bbox_pred" type: "Convolution" bottom: "rpn_conv" top: "rpn_bbox_pred"
  convolution_param { num_output: %(deltas)d kernel_size: 1 } }
layer { name: "rpn_cls_score_reshape" type: "Reshape" bottom: "rpn_cls_score" top: "rpn_cls_score_reshape"
  reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 0 } } }
layer { name: "rpn_cls_prob" type: "Softmax" bottom: "rpn_cls_score_reshape" top: "rpn_cls_prob" }
layer { name: "rpn_cls_prob_reshape" type: "Reshape" bottom: "rpn_cls_prob" top: "rpn_cls_prob_reshape"
  reshape_param { shape { dim: 0 dim: %(scores)d dim: -1 dim: 0 } } }
%(proposal)s
layer { name: "roi_pool" type: "ROIPooling" bottom: "conv2" bottom: "rois" top: "roi_pool"
  roi_pooling_param { pooled_w: 3 pooled_h: 3 spatial_scale: 0.0625 } }
layer { name: "fc6" type: "InnerProduct" bottom: "roi_pool" top: "fc6" inner_product_param { num_output: 32 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "cls_score" type: "InnerProduct" bottom: "fc6" top: "cls_score" inner_product_param { num_output: 4 } }
layer { name: "bbox_pred" type: "InnerProduct" bottom: "fc6" top: "bbox_pred" inner_product_param { num_output: 16 } }
layer { name: "cls_prob" type: "Softmax" bottom: "cls_score" top: "cls_prob" }
"""
PYTHON = """layer { name: "proposal" type: "Python" bottom: "rpn_cls_prob_reshape" bottom: "rpn_bbox_pred"
  bottom: "im_info" top: "rois"%(tops)s python_param { module: "rpn.proposal_layer" layer: "ProposalLayer"
  param_str: "%(param_str)s" } }"""
OPENCV = """layer { name: "proposal" type: "Proposal" bottom: "rpn_cls_prob_reshape" bottom: "rpn_bbox_pred"
  bottom: "im_info" top: "rois" proposal_param { feat_stride: 16 %(extra)s } }"""


def frcnn_text(param_str: str = "'feat_stride': 16", anchors: int = 9, scores_top: bool = False) -> str:
    layer = PYTHON % {"param_str": param_str, "tops": ' top: "scores"' if scores_top else ""}
    return FRCNN % {"scores": 2 * anchors, "deltas": 4 * anchors, "proposal": layer}


NETS = {
    "defaults": frcnn_text(),
    "post_20_pre_200_with_scores": frcnn_text("'feat_stride': 16, 'pre_nms_topN': 200, 'post_nms_topN': 20",
                                              scores_top=True),
    "scales_tuple_ratios": frcnn_text("'feat_stride': 16\\n'scales': !!python/tuple [4, 8]\\n'ratios': [0.5, 2]",
                                      anchors=4),
    "nms_05_min_size_32": frcnn_text("{'feat_stride': 16, 'nms_thresh': 0.5, 'min_size': 32}"),
}


def feeds(seed: int = 3, scale: float = 1.6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"data": (rng.standard_normal((1, 3, 160, 192)) * 0.05).astype(np.float32),
            "im_info": np.array([[160, 192, scale]], np.float32)}


def load(name: str, tmp_path: Path) -> caffe2x.Graph:
    text = NETS[name]
    deploy, model = tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
    deploy.write_text(text)
    model.write_bytes(fixtures.synthesize(text))
    return caffe2x.load(model, deploy)


SETTINGS = {"defaults": {}, "post_20_pre_200_with_scores": {"pre": 200, "post": 20},
            "scales_tuple_ratios": {"scales": (4, 8), "ratios": (0.5, 2)},
            "nms_05_min_size_32": {"thresh": 0.5, "min_size": 32}}


# --------------------------------------------------------------------------- reference
def test_anchors_are_py_faster_rcnns() -> None:
    """The nine default anchors py-faster-rcnn's generate_anchors prints (its "+1" convention)."""
    expected = [[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199], [-56, -56, 71, 71],
                [-120, -120, 135, 135], [-248, -248, 263, 263], [-36, -80, 51, 95], [-80, -168, 95, 183],
                [-168, -344, 183, 359]]
    np.testing.assert_array_equal(generate_anchors(), expected)
    np.testing.assert_array_equal(generate_anchors(16, (0.5, 2), (4, 8)), pyfrcnn_anchors(16, (0.5, 2), (4, 8)))


@pytest.mark.parametrize("name", list(NETS))
def test_reference_equals_py_faster_rcnns_proposal_layer(name: str, tmp_path: Path) -> None:
    graph = load(name, tmp_path)
    x = feeds()
    values = execute(graph, x)
    node = graph.node("proposal")
    cls_prob, bbox_pred = (values[v] for v in node.inputs[:2])
    rois, scores = pyfrcnn_proposals(cls_prob, bbox_pred, x["im_info"], **SETTINGS[name])
    np.testing.assert_array_equal(values[graph.value("rois")], rois)
    if "scores" in graph.blobs:
        np.testing.assert_array_equal(values[graph.value("scores")], scores)
    assert 10 < len(rois) < graph.shapes[graph.value("rois")][0] or len(rois) == 20  # NMS really suppresses
    assert values[graph.value("cls_prob")].shape == (len(rois), 4)


def test_min_size_scales_with_im_info(tmp_path: Path) -> None:
    graph = load("defaults", tmp_path)
    counts = []
    for scale in (1.0, 4.0, 8.0):
        x = feeds(scale=scale)
        values = execute(graph, x)
        node = graph.node("proposal")
        rois, _ = pyfrcnn_proposals(*(values[v] for v in node.inputs[:2]), x["im_info"])
        np.testing.assert_array_equal(values[graph.value("rois")], rois)
        counts.append(len(rois))
    assert counts[0] > counts[1] > counts[2] > 0


def test_equal_scores_keep_the_earlier_box_first() -> None:
    """A proposal-only net fed scores with ties (values in {0.25, 0.5, 0.75}): the stable order."""
    text = """input: "p" input_shape { dim: 1 dim: 18 dim: 4 dim: 5 }
input: "d" input_shape { dim: 1 dim: 36 dim: 4 dim: 5 }
input: "im_info" input_shape { dim: 1 dim: 3 }
""" + PYTHON % {"param_str": "'feat_stride': 16", "tops": ""}
    text = text.replace('"rpn_cls_prob_reshape"', '"p"').replace('"rpn_bbox_pred"', '"d"')
    graph = graph_from_text(text)
    x = tie_feeds()
    rois, _ = pyfrcnn_proposals(x["p"], x["d"], x["im_info"])
    np.testing.assert_array_equal(execute(graph, x)[graph.value("rois")], rois)


def tie_feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {"p": rng.choice(np.array([0.25, 0.5, 0.75], np.float32), (1, 18, 4, 5)),
            "d": (rng.standard_normal((1, 36, 4, 5)) * 0.2).astype(np.float32),
            "im_info": np.array([[64, 80, 1.0]], np.float32)}


# --------------------------------------------------------------------------- targets
@pytest.mark.parametrize("framework", list(RUNNERS))
@pytest.mark.parametrize("name", ["defaults", "post_20_pre_200_with_scores", "scales_tuple_ratios"])
def test_every_target_matches_the_reference(framework: str, name: str, tmp_path: Path) -> None:
    graph = load(name, tmp_path)
    x = feeds()
    outputs = [v for v in ("rois", "scores", "cls_prob", "bbox_pred") if v in graph.blobs]
    ref = execute(graph, x)
    got = RUNNERS[framework](graph, x, outputs, tmp_path)
    for blob in outputs:
        want = ref[graph.value(blob)]
        assert got[blob].shape == want.shape, f"{framework} {name}: {blob}"
        assert max_rel_error(got[blob], want) <= TOL, f"{framework} {name}: {blob}"


@pytest.mark.parametrize("framework", list(RUNNERS))
def test_every_target_orders_equal_scores_stably(framework: str, tmp_path: Path) -> None:
    text = """input: "p" input_shape { dim: 1 dim: 18 dim: 4 dim: 5 }
input: "d" input_shape { dim: 1 dim: 36 dim: 4 dim: 5 }
input: "im_info" input_shape { dim: 1 dim: 3 }
""" + PYTHON % {"param_str": "'feat_stride': 16", "tops": ' top: "scores"'}
    graph = graph_from_text(text.replace('"rpn_cls_prob_reshape"', '"p"').replace('"rpn_bbox_pred"', '"d"'))
    x = tie_feeds()
    ref = execute(graph, x)
    got = RUNNERS[framework](graph, x, ["rois", "scores"], tmp_path)
    np.testing.assert_array_equal(got["scores"], ref[graph.value("scores")])  # the fed scores, in order
    assert got["rois"].shape == ref[graph.value("rois")].shape
    assert max_rel_error(got["rois"], ref[graph.value("rois")]) <= TOL  # exp() may differ by an ulp


# --------------------------------------------------------------------------- param_str and errors
@pytest.mark.parametrize("text, expected", [
    ("'feat_stride': 16", {"feat_stride": 16}),
    ("{'feat_stride': 16, 'scales': [8, 16, 32]}", {"feat_stride": 16, "scales": [8, 16, 32]}),
    ("'feat_stride': 16\n'scales': !!python/tuple [4, 8, 16, 32]", {"feat_stride": 16, "scales": [4, 8, 16, 32]}),
    ("feat_stride: 8; ratios: (0.5, 1)", {"feat_stride": 8, "ratios": (0.5, 1)}),
    ("", {}),
])
def test_param_str_grammar(text: str, expected: dict) -> None:
    assert parse_param_str(text) == expected


@pytest.mark.parametrize("param_str, message", [
    ("'feat_stride': __import__('os').getcwd()", "cannot be read"),
    ("'feat_stride' 16", "cannot be read"),
    ("{'feat_stride': 16", "cannot be read"),
    ("'feat_stride': [16", "cannot be read"),
    ("'feat_stride': 'sixteen'", "cannot be read"),
    ("'scales': [8, 16]", "needs feat_stride"),
    ("'feat_stride': 16, 'num_classes': 21", "unknown setting"),
    ("'feat_stride': 16.5", "positive integer"),
])
def test_malformed_param_str_is_one_line_naming_layer_module_and_class(param_str: str, message: str) -> None:
    with pytest.raises(Caffe2xError) as info:
        graph_from_text(frcnn_text(param_str))
    text = str(info.value)
    assert "\n" not in text and message in text
    assert "'proposal'" in text and "'rpn.proposal_layer'" in text and "'ProposalLayer'" in text


def test_unknown_python_layer_names_module_class_and_the_cut_before_it() -> None:
    text = FRCNN % {"scores": 18, "deltas": 36, "proposal": PYTHON % {"param_str": "'feat_stride': 16", "tops": ""}}
    text = text.replace('module: "rpn.proposal_layer" layer: "ProposalLayer"', 'module: "my.layers" layer: "Mine"')
    with pytest.raises(Caffe2xError) as info:
        graph_from_text(text)
    message = str(info.value)
    assert "\n" not in message
    assert "layer 'proposal'" in message and "'my.layers'" in message and "'Mine'" in message
    assert "outputs=['conv2', 'rpn_bbox_pred', 'rpn_cls_prob_reshape']" in message  # the library's words
    assert "--outputs conv2,rpn_bbox_pred,rpn_cls_prob_reshape" in cli_message(info.value)  # the CLI's
    cut = read_bytes(None, text, outputs=["conv2", "rpn_bbox_pred", "rpn_cls_prob_reshape"])
    assert "proposal" not in [n.name for n in cut.nodes] and list(cut.inputs) == ["data"]


def test_opencv_proposal_type_reads_proposal_param() -> None:
    text = FRCNN % {"scores": 8, "deltas": 16, "proposal": OPENCV % {
        "extra": "ratio: 0.5 ratio: 2 scale: 4 scale: 8 pre_nms_topn: 100 post_nms_topn: 10 nms_thresh: 0.6 "
                 "min_size: 8"}}
    node = graph_from_text(text).node("proposal")
    a = node.attrs
    assert (a["pre_nms_topn"], a["post_nms_topn"], a["min_size"]) == (100, 10, 8.0)
    assert a["nms_thresh"] == pytest.approx(0.6)
    np.testing.assert_array_equal(a["anchors"], pyfrcnn_anchors(16, (0.5, 2), (4, 8)))
    assert graph_from_text(text).shapes[node.outputs[0]] == (10, 5)


def test_reference_matches_opencvs_proposal_layer_where_no_box_is_too_small(tmp_path: Path) -> None:
    """OpenCV's ``Proposal`` (4.x) builds py-faster-rcnn's anchors and NMS from its PriorBox and
    DetectionOutput layers but skips the minimum-size filter and pads its rois with zeros to
    ``post_nms_topn`` rows: with boxes all larger than ``min_size`` it gives the reference's rois."""
    text = """input: "p" input_shape { dim: 1 dim: 18 dim: 6 dim: 7 }
input: "d" input_shape { dim: 1 dim: 36 dim: 6 dim: 7 }
input: "im_info" input_shape { dim: 1 dim: 3 }
layer { name: "proposal" type: "Proposal" bottom: "p" bottom: "d" bottom: "im_info" top: "rois" top: "scores"
  proposal_param { feat_stride: 16 ratio: 0.5 ratio: 1 ratio: 2 scale: 8 scale: 16 scale: 32 %s } }"""
    rng = np.random.default_rng(1)
    x = {"p": rng.uniform(0, 1, (1, 18, 6, 7)).astype(np.float32),
         "d": (rng.standard_normal((1, 36, 6, 7)) * 0.1).astype(np.float32),
         "im_info": np.array([[96, 112, 1.0]], np.float32)}
    for extra, rows in (("", 300), ("post_nms_topn: 10 nms_thresh: 0.5", 10)):
        graph = graph_from_text(text % extra)
        ref = execute(graph, x)[graph.value("rois")]
        ws = ref[:, 3] - ref[:, 1] + 1
        assert ws.min() > 16 * 2  # the min-size filter, which OpenCV lacks, removes nothing here
        (theirs,) = opencv_forward(tmp_path, text % extra, x, ["proposal"])
        assert theirs.shape == (rows, 5) and np.all(theirs[len(ref):] == 0)
        assert max_rel_error(theirs[:len(ref)], ref) <= TOL


def test_emitted_torch_code_and_the_keras_file_carry_the_proposal_layer(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``--emit-code`` copies CaffeProposal (torch only, no caffe2x import) and a ``.keras`` file
    reloads with ``keras.models.load_model``: both give the reference's detections."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    graph = load("post_20_pre_200_with_scores", tmp_path)
    x = feeds()
    ref = execute(graph, x)
    emitted = run_emitted_torch(graph, x, tmp_path, monkeypatch)
    path = tmp_path / "net.keras"
    caffe2x.save(graph, path)
    reloaded = keras.models.load_model(path)
    outs = reloaded([x["data"].transpose(0, 2, 3, 1), x["im_info"]])
    by_name = dict(zip([graph.blob_name(v) for v in graph.outputs], outs))
    for blob in ("scores", "cls_prob", "bbox_pred"):
        want = ref[graph.value(blob)]
        assert max_rel_error(emitted[blob].numpy(), want) <= TOL, f"emitted {blob}"
        assert np.asarray(by_name[blob]).shape == want.shape and max_rel_error(np.asarray(by_name[blob]), want) <= TOL
