"""Caffe's reshape semantics in the graph and the numpy reference: a net read at one size runs at any
size its layers take, with Caffe's numbers (OpenCV's Caffe importer, reshaped by ``setInput``, is the
oracle), and a size a layer cannot take is a one-line error naming the layer and the sizes it takes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe.reader import graph_from_text
from caffe2x.errors import Caffe2xError
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.reshape import check_input_shapes, free_input_dims, reshaped, shapes_at
from tests.helpers.fcn_net import FCN_PROTOTXT, FCN_SIZES, load_fcn, write_fcn

BLOBS = ["score", "pool1", "pool2", "score1", "up2_crop", "skip", "up1"]  # no in-place blob: OpenCV names by layer


def seeded(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def fcn_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_fcn(tmp_path_factory.mktemp("fcn"))


@pytest.fixture(scope="module")
def fcn(fcn_files: tuple[Path, Path]) -> caffe2x.graph.ir.Graph:
    return caffe2x.load(*fcn_files)


@pytest.mark.parametrize("shape", FCN_SIZES, ids=lambda s: "x".join(map(str, s)))
def test_fcn_reference_matches_opencv_reshaped_to_each_size(fcn, fcn_files, shape) -> None:
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("this OpenCV has no Caffe importer")
    net = cv2.dnn.readNetFromCaffe(str(fcn_files[1]), str(fcn_files[0]))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.enableWinograd(False)
    x = seeded(shape)
    ours = caffe2x.run(fcn, x, outputs=BLOBS)
    net.setInput(x)
    for name, theirs in zip(BLOBS, net.forward(BLOBS)):
        assert ours[name].shape == theirs.shape, name
        assert max_rel_error(ours[name], theirs) <= 1e-5, (shape, name)
    assert ours["score"].shape == (shape[0], 4, shape[2], shape[3])


def test_fcn_sizes_hit_caffes_pooling_clip_and_clipped_divisor(fcn) -> None:
    """The sizes tested include pool1's dropped last window (odd input) and pool2's overhanging AVE
    window (whose divisor Caffe clips): the hard cases are exercised, not just declared."""
    from caffe2x.graph.ir import pool_output_size

    dropped = clipped = False
    for _, _, h, w in FCN_SIZES:
        shapes = shapes_at(fcn, {"data": (1, 3, h, w)})
        for size in (h, w):
            dropped |= pool_output_size(size, 2, 2, 1) < -(-(size + 2 - 2) // 2) + 1
        for size in shapes[fcn.blobs["fuse"]][2:]:
            out = pool_output_size(size, 3, 2, 1)
            clipped |= (out - 1) * 2 - 1 + 3 > size + 1
    assert dropped and clipped


def test_fcn_input_dims_are_free_but_channels(fcn) -> None:
    (dims,) = free_input_dims(fcn).values()
    assert [(d.name, d.free) for d in dims] == [("N", True), ("C", False), ("H", True), ("W", True)]
    assert dims[1].describe() == "C fixed 3"


def test_a_classifier_takes_only_the_sizes_its_inner_product_fits() -> None:
    """googlenet_style: a 7x7 AVE pool before an InnerProduct; H and W take a window of sizes, and a
    size outside it names the layer that refuses it and the sizes the net takes."""
    graph = fixtures.graph("googlenet_style_names")
    (dims,) = free_input_dims(graph).values()
    h = dims[2]
    assert not h.free and h.size == 32 and any(lo <= 32 <= hi for lo, hi in h.accepts)
    lo, hi = h.accepts[0]
    for ok in (lo, hi):
        shapes_at(graph, {"data": (1, 3, ok, 32)})
    with pytest.raises(Caffe2xError, match=rf"layer 'loss3/classifier' \(InnerProduct\).*it takes data: N free, "
                                           rf"C fixed 3, H {lo}..{hi}, W {lo}..{hi}$"):
        caffe2x.run(graph, seeded((1, 3, lo - 1, 32)))
    with pytest.raises(Caffe2xError, match=r"layer 'pool5/7x7_s1' \(Pooling\) gives blob 'pool5/7x7_s1' the empty shape"):
        caffe2x.run(graph, seeded((1, 3, 16, 16)))


@pytest.mark.parametrize("shape, dim", [((1, 3, 0, 23), "dim 2 (H) is 0"), ((1, 3, 21, -4), "dim 3 (W) is -4")])
def test_zero_or_negative_dims_name_the_dim(fcn, shape, dim) -> None:
    with pytest.raises(Caffe2xError, match=dim.replace("(", r"\(").replace(")", r"\)")):
        check_input_shapes(fcn, {"data": shape})


def test_wrong_rank_is_one_line(fcn) -> None:
    with pytest.raises(Caffe2xError, match=r"takes a 4-D input \(read as \[1, 3, 21, 23\]\)"):
        caffe2x.run(fcn, seeded((3, 21, 23)))


def test_crop_to_a_fixed_reference_takes_only_inputs_it_fits_in() -> None:
    text = """input: "data" input_shape { dim: 1 dim: 2 dim: 10 dim: 10 }
input: "ref" input_shape { dim: 1 dim: 1 dim: 6 dim: 6 }
layer { name: "crop" type: "Crop" bottom: "data" bottom: "ref" top: "crop" crop_param { axis: 2 offset: 2 } }
"""
    graph = graph_from_text(text)
    x = seeded((1, 2, 13, 8))
    out = caffe2x.run(graph, {"data": x, "ref": seeded((1, 1, 6, 6))})
    np.testing.assert_array_equal(out, x[:, :, 2:8, 2:8])
    with pytest.raises(Caffe2xError, match=r"layer 'crop' \(Crop\): crop of axis 3 .*runs past the input's 7"):
        caffe2x.run(graph, {"data": seeded((1, 2, 10, 7)), "ref": seeded((1, 1, 6, 6))})


def test_reshaped_graph_equals_the_graph_read_at_that_size(fcn) -> None:
    """Reshaping is what reading the prototxt at the other size gives: every value's shape."""
    other = graph_from_text(FCN_PROTOTXT, input_shape=(2, 3, 33, 29))
    assert reshaped(fcn, {"data": (2, 3, 33, 29)}).shapes == other.shapes
    assert reshaped(fcn, dict(fcn.inputs)) is fcn


INTERP = """input: "data" input_shape { dim: 1 dim: 2 dim: 9 dim: 8 }
layer { name: "zoom" type: "Interp" bottom: "data" top: "zoom" interp_param { zoom_factor: 3 } }
layer { name: "shrink" type: "Interp" bottom: "data" top: "shrink" interp_param { shrink_factor: 2 pad_beg: -1 pad_end: -1 } }
layer { name: "like" type: "Interp" bottom: "shrink" bottom: "data" top: "like" }
layer { name: "flat" type: "Reshape" bottom: "like" top: "flat" reshape_param { shape { dim: 0 dim: -1 } } }
"""


@pytest.mark.parametrize("shape", [(1, 2, 9, 8), (2, 2, 12, 7), (1, 2, 5, 16)])
def test_interp_and_reshape_follow_the_input_as_caffe_does(shape) -> None:
    """Interp's zoom, shrink, crop and size-from-a-blob rules and a 0/-1 Reshape are applied to the
    new size: the reshaped net computes what the net read at that size computes."""
    graph = graph_from_text(INTERP)
    at = graph_from_text(INTERP, input_shape=shape)
    x = seeded(shape)
    ours = caffe2x.run(graph, x, outputs=["zoom", "shrink", "like", "flat"])
    theirs = caffe2x.run(at, x, outputs=["zoom", "shrink", "like", "flat"])
    for name in ours:
        assert ours[name].shape == theirs[name].shape
        np.testing.assert_array_equal(ours[name], theirs[name])


def test_an_interp_stored_without_its_rule_keeps_the_size_it_was_read_at() -> None:
    """A graph from an older .safetensors has Interp's sizes but not Caffe's rule: refused elsewhere."""
    graph = graph_from_text(INTERP)
    for node in graph.nodes:
        node.attrs.pop("rule", None)
    caffe2x.run(graph, seeded((3, 2, 9, 8)))
    with pytest.raises(Caffe2xError, match=r"layer 'zoom' \(Interp\) was resolved for an input shaped \[1, 2, 9, 8\]"):
        caffe2x.run(graph, seeded((1, 2, 10, 8)))


@pytest.mark.parametrize("shape", [(1, 3, 48, 40), (2, 3, 37, 21)])
def test_priorbox_follows_the_image_input_as_caffe_does(shape) -> None:
    """Without img_size, Caffe's PriorBox reads the image size from its image input and derives the
    steps from it at every forward: the reshaped SSD computes what the SSD read at that size does."""
    graph = fixtures.graph("ssd_mobilenet_style")
    at = graph_from_text(fixtures.ZOO["ssd_mobilenet_style"], input_shape=shape)
    names = ["conv1_mbox_priorbox", "conv2_mbox_priorbox", "mbox_priorbox"]
    ours = caffe2x.run(graph, seeded(shape), outputs=names)
    theirs = caffe2x.run(at, seeded(shape), outputs=names)
    for name in names:
        np.testing.assert_array_equal(ours[name], theirs[name])


@pytest.mark.parametrize("shape", [(1, 3, 48, 40), (1, 3, 37, 21)])
def test_reshaped_priorbox_matches_opencv_read_at_that_size(tmp_path: Path, shape) -> None:
    """OpenCV's Caffe importer is the oracle, read at each size: reshaped by ``setInput`` after a first
    forward it keeps the steps it derived at the first size (its ``_stepX`` is set once), where Caffe's
    ``PriorBoxLayer::Forward`` derives them from the current sizes at every call, as caffe2x does."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("this OpenCV has no Caffe importer")
    model, deploy = fixtures.write_model("ssd_mobilenet_style", tmp_path)
    graph = caffe2x.load(model, deploy)
    sized = tmp_path / "sized.prototxt"
    sized.write_text(deploy.read_text().replace("dim: 32 dim: 32", f"dim: {shape[2]} dim: {shape[3]}"))
    net = cv2.dnn.readNetFromCaffe(str(sized), str(model))
    names = ["conv1_mbox_priorbox", "conv2_mbox_priorbox"]
    x = seeded(shape)
    net.setInput(x)
    ours = caffe2x.run(graph, x, outputs=names)
    for name, theirs in zip(names, net.forward(names)):
        assert ours[name].shape == theirs.shape, name
        assert max_rel_error(ours[name], theirs) <= 1e-6, name


def test_priorbox_with_an_image_size_keeps_the_size_it_was_read_at() -> None:
    text = fixtures.ZOO["ssd_mobilenet_style"].replace("min_size: 6 ", "min_size: 6 img_size: 32 ")
    graph = graph_from_text(text)
    with pytest.raises(Caffe2xError, match=r"layer 'conv1_mbox_priorbox' \(PriorBox\) was resolved for an input "
                                           r"shaped \[1, 16, 8, 8\].*it takes data: N free, C fixed 3, H 29..32, W 29..32$"):
        caffe2x.run(graph, seeded((1, 3, 64, 64)))
    assert caffe2x.run(graph, seeded((2, 3, 32, 32))).shape[0] == 1  # another batch is fine


def test_explicit_reshape_dims_fix_the_size() -> None:
    text = INTERP.replace("shape { dim: 0 dim: -1 }", "shape { dim: 1 dim: 144 }").replace(
        'layer { name: "zoom"', '# layer { name: "zoom"')
    graph = graph_from_text(text)
    with pytest.raises(Caffe2xError, match=r"layer 'flat' \(Reshape\)"):
        caffe2x.run(graph, seeded((1, 2, 10, 8)))
