"""SSD's Normalize, PriorBox and DetectionOutput: the numpy reference against OpenCV's Caffe importer,
and against Caffe's formulas by hand where OpenCV deviates from the fork (each deviation named)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers.opencv_caffe import opencv_forward

from caffe2x.errors import Caffe2xError
from caffe2x.graph.formulas import prior_boxes
from caffe2x.graph.ir import Graph, Node
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.reference import OPS
from caffe2x.layers.detection import FLT_MAX, decode_boxes, detection_output

TOL = 1e-5


def run_op(op: str, attrs: dict, ins: list[np.ndarray], params: dict[str, np.ndarray] | None = None) -> np.ndarray:
    tensors = {f"l.{k}": v for k, v in (params or {}).items()}
    node = Node("l", op, [f"in{i}" for i in range(len(ins))], ["out"], attrs, {k: f"l.{k}" for k in params or {}})
    return OPS[op](node, ins, Graph("g", {}, [node], tensors))[0]


# --------------------------------------------------------------------------- Normalize
@pytest.mark.parametrize("across, shared", [(True, True), (False, True), (False, False)])
def test_normalize_matches_opencv(across: bool, shared: bool, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    scale = rng.uniform(0.5, 20, (1,) if shared else (5,)).astype(np.float32)
    text = f"""input: "data" input_shape {{ dim: 2 dim: 5 dim: 4 dim: 3 }}
layer {{ name: "n" type: "Normalize" bottom: "data" top: "n"
  norm_param {{ across_spatial: {str(across).lower()} channel_shared: {str(shared).lower()} eps: 0.001 }} }}"""
    (theirs,) = opencv_forward(tmp_path, text, {"data": x}, ["n"], {"n": [scale]})
    ours = run_op("Normalize", {"across_spatial": across, "channel_shared": shared, "eps": 0.001}, [x],
                  {"weight": scale})
    assert max_rel_error(ours, theirs) <= TOL


def test_normalize_across_spatial_with_per_channel_scale_follows_caffe() -> None:
    """OpenCV refuses this combination (it expects one scale per plane); Caffe divides by the norm
    of the whole image, eps inside the square root, then scales each channel."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    scale = np.array([1.0, 2.0, 3.0], np.float32)
    ours = run_op("Normalize", {"across_spatial": True, "channel_shared": False, "eps": 0.5}, [x], {"weight": scale})
    x64 = x.astype(np.float64)
    expected = x64 / np.sqrt((x64 ** 2).sum(axis=(1, 2, 3), keepdims=True) + 0.5) * scale.reshape(1, 3, 1, 1)
    assert max_rel_error(ours, expected) <= TOL


# --------------------------------------------------------------------------- PriorBox
def prior_attrs(**kw: object) -> dict:
    attrs = {"min_sizes": [30], "max_sizes": [], "aspect_ratios": [1.0], "clip": False, "variance": [0.1],
             "img": [40, 48], "step": [8.0, 8.0], "offset": 0.5}
    attrs.update(kw)
    return attrs


PRIOR_CASES = {
    "max_size_flip_4_variances": (
        "min_size: 30 max_size: 60 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: false "
        "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2",
        prior_attrs(max_sizes=[60], aspect_ratios=[1.0, 2.0, 0.5, 3.0, float(np.float32(1 / 3))],
                    variance=[0.1, 0.1, 0.2, 0.2])),
    "clip_step_offset_no_flip": (
        "min_size: 13 aspect_ratio: 2 flip: false clip: true variance: 0.1 step: 7 offset: 0.25",
        prior_attrs(min_sizes=[13], aspect_ratios=[1.0, 2.0], clip=True, step=[7.0, 7.0], offset=0.25)),
    "two_min_sizes_step_h_w": (
        "min_size: 10 min_size: 20 max_size: 15 max_size: 31 aspect_ratio: 2 clip: false step_h: 9 step_w: 11 "
        "variance: 0.1",
        prior_attrs(min_sizes=[10, 20], max_sizes=[15, 31], aspect_ratios=[1.0, 2.0, 0.5], step=[9.0, 11.0])),
    "textboxes_two_centres": (  # TextBoxes: each box also half a cell lower
        "min_size: 12 max_size: 24 aspect_ratio: 2 aspect_ratio: 5 flip: false clip: false variance: 0.1 "
        "offset_h: 0.5 offset_w: 0.5 offset_h: 1.0 offset_w: 0.5",
        prior_attrs(min_sizes=[12], max_sizes=[24], aspect_ratios=[1.0, 2.0, 5.0], offsets=[[0.5, 0.5], [1.0, 0.5]])),
}


@pytest.mark.parametrize("case", list(PRIOR_CASES))
def test_prior_box_matches_opencv(case: str, tmp_path: Path) -> None:
    body, attrs = PRIOR_CASES[case]
    text = f"""input: "feat" input_shape {{ dim: 1 dim: 3 dim: 5 dim: 6 }}
input: "img" input_shape {{ dim: 1 dim: 3 dim: 40 dim: 48 }}
layer {{ name: "p" type: "PriorBox" bottom: "feat" bottom: "img" top: "p" prior_box_param {{ {body} }} }}"""
    rng = np.random.default_rng(3)
    feed = {"feat": rng.standard_normal((1, 3, 5, 6)), "img": rng.standard_normal((1, 3, 40, 48))}
    (theirs,) = opencv_forward(tmp_path, text, feed, ["p"])
    ours = prior_boxes(attrs, 5, 6)
    assert ours.shape == theirs.shape
    assert max_rel_error(ours, theirs) <= TOL


def test_prior_box_follows_the_fork_where_opencv_does_not() -> None:
    """OpenCV ignores img_h/img_w/img_size (it always takes the image input's size), clips by default
    and keeps a fractional min_size; the fork takes the explicit image size (also for the default
    step), does not clip by default and truncates min_size to an int. Hand-computed box of cell (0, 0)."""
    # img 50 x 70 given explicitly, feature map 5 x 6: step = (10, 70/6), centre (5, 35/6)
    attrs = prior_attrs(min_sizes=[30], img=[50, 70], step=[10.0, float(np.float32(70) / np.float32(6))])
    boxes = prior_boxes(attrs, 5, 6)[0, 0].reshape(5, 6, 1, 4)
    cx, cy = (0.5 * np.float32(70 / 6)), 5.0
    np.testing.assert_allclose(boxes[0, 0, 0], [(cx - 15) / 70, (cy - 15) / 50, (cx + 15) / 70, (cy + 15) / 50],
                               rtol=1e-6)
    assert boxes.min() < 0  # not clipped


def test_prior_box_reader_truncates_min_size_and_defaults_variance() -> None:
    from caffe2x.graph.formulas import prior_box_sizes

    sizes = prior_box_sizes(prior_attrs(min_sizes=[10], max_sizes=[20], aspect_ratios=[1.0, 4.0]))
    assert sizes == [(10.0, 10.0), (float(np.float32(np.sqrt(200))),) * 2, (20.0, 5.0)]


# --------------------------------------------------------------------------- DetectionOutput
def as_rows(a: np.ndarray) -> np.ndarray:
    """Detections in a canonical order (image, label, descending score), for set comparison."""
    rows = a.reshape(-1, 7)
    return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]


def detection_case(seed: int, share: bool, classes: int = 4, n: int = 2, loc_scale: float = 0.5
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    prior = prior_boxes(prior_attrs(min_sizes=[12], max_sizes=[20], aspect_ratios=[1.0, 2.0, 0.5],
                                    variance=[0.1, 0.1, 0.2, 0.2], img=[40, 40]), 5, 3)
    priors = prior.shape[2] // 4
    loc = (rng.standard_normal((n, priors * (1 if share else classes) * 4)) * loc_scale).astype(np.float32)
    logits = rng.standard_normal((n, priors, classes)) * 2
    conf = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).reshape(n, -1).astype(np.float32)
    return loc, conf, prior


DETECTION_CASES = {
    # name: (code_type, share_location, nms_threshold, eta, keep_top_k, top_k, confidence_threshold, background)
    "center_size": ("CENTER_SIZE", True, 0.45, 1.0, 20, 30, 0.01, 0),
    "corner": ("CORNER", True, 0.45, 1.0, 30, 400, 0.01, 0),
    "not_shared": ("CENTER_SIZE", False, 0.45, 1.0, 20, 30, 0.01, 0),
    # OpenCV ignores eta (it runs plain NMS): eta is checked by hand below
    "high_threshold": ("CENTER_SIZE", True, 0.7, 1.0, 100, 60, 0.01, 0),
    "background_2": ("CENTER_SIZE", True, 0.45, 1.0, 20, 30, 0.01, 2),
    "keep_all": ("CENTER_SIZE", True, 0.3, 1.0, 1000, 10, 0.05, 0),  # OpenCV aborts on keep_top_k -1
}


def detection_attrs(code: str, share: bool, nms: float, eta: float, keep: int, top_k: int, thr: float | None,
                    bg: int, classes: int = 4, encoded: bool = False) -> dict:
    return {"num_classes": classes, "share_location": share, "background_label_id": bg, "nms_threshold": nms,
            "top_k": top_k, "eta": eta, "keep_top_k": keep,
            "confidence_threshold": -FLT_MAX if thr is None else thr, "code_type": code.lower(),
            "variance_encoded_in_target": encoded}


@pytest.mark.parametrize("case", list(DETECTION_CASES))
def test_detection_output_matches_opencv_as_a_set(case: str, tmp_path: Path) -> None:
    code, share, nms, eta, keep, top_k, thr, bg = DETECTION_CASES[case]
    loc, conf, prior = detection_case(7, share, loc_scale=0.15 if code == "CORNER" else 0.5)
    nms_text = f"nms_threshold: {nms} top_k: {top_k}" + (f" eta: {eta}" if eta != 1 else "")
    text = f"""input: "loc" input_shape {{ dim: 2 dim: {loc.shape[1]} }}
input: "conf" input_shape {{ dim: 2 dim: {conf.shape[1]} }}
input: "prior" input_shape {{ dim: 1 dim: 2 dim: {prior.shape[2]} }}
layer {{ name: "d" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "d"
  detection_output_param {{ num_classes: 4 share_location: {str(share).lower()} background_label_id: {bg}
    nms_param {{ {nms_text} }} code_type: {code} keep_top_k: {keep} confidence_threshold: {thr} }} }}"""
    (theirs,) = opencv_forward(tmp_path, text, {"loc": loc, "conf": conf, "prior": prior}, ["d"])
    ours = detection_output(loc, conf, prior, detection_attrs(code, share, nms, eta, keep, top_k, thr, bg))
    theirs = theirs.reshape(-1, 7)
    theirs = theirs[np.any(theirs != 0, axis=1)]  # OpenCV pads to N * keep_top_k rows with zeros
    assert ours.shape[2] > 1 and ours.shape[2] == theirs.shape[0]
    assert max_rel_error(as_rows(ours), as_rows(theirs)) <= TOL


def test_eta_shrinks_the_nms_threshold_after_each_kept_box() -> None:
    """Three boxes in score order with IoU(0, 1) = 0.6 < 0.7 and IoU(0, 2) = 0.6: with eta 1 all three
    survive; with eta 0.8 the threshold drops to 0.56 after the first keep, so 1 and 2 go."""
    prior = np.zeros((1, 2, 12), np.float32)
    prior[0, 0] = [0, 0, 1, 1, 0, 0, 1, 0.6, 0, 0.4, 1, 1]  # IoU of box 0 with 1 and with 2: 0.6
    prior[0, 1] = 1
    loc = np.zeros((1, 12), np.float32)
    conf = np.array([[0.1, 0.9, 0.1, 0.8, 0.1, 0.7]], np.float32)
    base = detection_attrs("CORNER", True, 0.7, 1.0, -1, -1, None, 0, classes=2)
    assert detection_output(loc, conf, prior, base).shape == (1, 1, 3, 7)
    shrunk = detection_output(loc, conf, prior, {**base, "eta": 0.8})
    np.testing.assert_allclose(shrunk, [[[[0, 1, 0.9, 0, 0, 1, 1]]]], rtol=1e-6)


def test_corner_size_and_variance_in_target_decode_by_hand() -> None:
    """OpenCV knows neither CORNER_SIZE nor a prior blob without variances; Caffe's formulas by hand."""
    prior = np.array([[0.1, 0.2, 0.5, 0.6]], np.float32)
    var = np.array([[0.1, 0.1, 0.2, 0.2]], np.float32)
    loc = np.array([[1.0, -2.0, 0.5, 3.0]], np.float32)
    w, h = 0.4, 0.4
    np.testing.assert_allclose(decode_boxes(loc, prior, var, "corner_size", False),
                               [[0.1 + 0.1 * 1 * w, 0.2 + 0.1 * -2 * h, 0.5 + 0.2 * 0.5 * w, 0.6 + 0.2 * 3 * h]],
                               rtol=1e-6)
    np.testing.assert_allclose(decode_boxes(loc, prior, var, "corner_size", True),
                               [[0.1 + w, 0.2 - 2 * h, 0.5 + 0.5 * w, 0.6 + 3 * h]], rtol=1e-6)
    cx, cy = 1.0 * w + 0.3, -2.0 * h + 0.4
    bw, bh = np.exp(0.5) * w, np.exp(3.0) * h
    np.testing.assert_allclose(decode_boxes(loc, prior, var, "center_size", True),
                               [[cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]], rtol=1e-6)
    np.testing.assert_allclose(decode_boxes(loc, prior, var, "corner", True), prior + loc, rtol=1e-6)


def test_no_detection_gives_one_placeholder_row_per_image() -> None:
    """Caffe writes ``[i, -1, -1, -1, -1, -1, -1]`` per image (OpenCV instead pads to keep_top_k rows)."""
    loc, conf, prior = detection_case(3, True)
    out = detection_output(loc, conf, prior, detection_attrs("CENTER_SIZE", True, 0.45, 1.0, 20, 30, 0.99, 0))
    np.testing.assert_array_equal(out, [[[[0] + [-1] * 6, [1] + [-1] * 6]]])


def test_keep_top_k_keeps_the_best_scores_over_all_classes() -> None:
    loc, conf, prior = detection_case(5, True)
    attrs = detection_attrs("CENTER_SIZE", True, 0.45, 1.0, -1, 30, 0.01, 0)
    everything = detection_output(loc, conf, prior, attrs)[0, 0]
    kept = detection_output(loc, conf, prior, {**attrs, "keep_top_k": 7})[0, 0]
    for i in range(2):
        mine = everything[everything[:, 0] == i]
        best = mine[np.argsort(-mine[:, 2], kind="stable")[:7]]
        np.testing.assert_array_equal(as_rows(kept[kept[:, 0] == i]), as_rows(best))


def test_prior_box_offsets_repeat_every_size_at_each_centre_by_hand() -> None:
    """Three centres (OpenCV sizes its output for at most two): cell (1, 2), step 8, one 10 x 10 box
    at (2 + 0.25, 1 + 0.5), (2 + 0.5, 1 + 1.0), (2 + 0.75, 1 + 0.0) cells, in that order."""
    attrs = prior_attrs(min_sizes=[10], img=[32, 40], offsets=[[0.5, 0.25], [1.0, 0.5], [0.0, 0.75]])
    from caffe2x.graph.formulas import num_priors

    assert num_priors(attrs) == 3
    boxes = prior_boxes(attrs, 4, 5)[0, 0].reshape(4, 5, 3, 4)
    for j, (oh, ow) in enumerate([(0.5, 0.25), (1.0, 0.5), (0.0, 0.75)]):
        cx, cy = (2 + ow) * 8, (1 + oh) * 8
        np.testing.assert_allclose(boxes[1, 2, j], [(cx - 5) / 40, (cy - 5) / 32, (cx + 5) / 40, (cy + 5) / 32],
                                   rtol=1e-6)


def test_prior_box_offsets_are_read_in_pairs() -> None:
    from caffe2x.caffe.reader import graph_from_text

    net = """input: "feat" input_shape {{ dim: 1 dim: 3 dim: 5 dim: 6 }}
input: "img" input_shape {{ dim: 1 dim: 3 dim: 40 dim: 48 }}
layer {{ name: "p" type: "PriorBox" bottom: "feat" bottom: "img" top: "p" prior_box_param {{ min_size: 8 {} }} }}"""
    graph = graph_from_text(net.format("offset_h: 0.5 offset_w: 0.5 offset_h: 1 offset_w: 0.5"))
    assert graph.node("p").attrs["offsets"] == [[0.5, 0.5], [1.0, 0.5]]
    assert graph.shapes["p"] == (1, 2, 5 * 6 * 2 * 4)
    with pytest.raises(Caffe2xError, match="2 offset_h for 1 offset_w"):
        graph_from_text(net.format("offset_h: 0.5 offset_w: 0.5 offset_h: 1"))
    with pytest.raises(Caffe2xError, match="offset or offset_h/offset_w, not both"):
        graph_from_text(net.format("offset: 0.5 offset_h: 0.5 offset_w: 0.5"))
