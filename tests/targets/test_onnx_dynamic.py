"""ONNX models with symbolic N, H, W where the net takes any size: strict shape inference passes and
onnxruntime (every graph optimisation level) and OpenVINO match the numpy reference at other sizes,
including odd ones where Caffe's pooling drops or clips its last window."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.graph.numeric import max_rel_error
from tests.helpers.fcn_net import FCN_SIZES, load_fcn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from caffe2x.targets.onnx.model import to_onnx  # noqa: E402

OUTS = ["score", "pool1", "pool2", "skip"]
LEVELS = ["ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"]


def seeded(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def dims(value_info) -> list[int | str | None]:  # type: ignore[no-untyped-def]
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in value_info.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def fcn(tmp_path_factory: pytest.TempPathFactory) -> caffe2x.graph.ir.Graph:
    return load_fcn(tmp_path_factory.mktemp("fcn"))


@pytest.fixture(scope="module")
def fcn_onnx(fcn) -> bytes:
    return to_onnx(fcn, outputs=OUTS).SerializeToString()


def test_fcn_input_is_n_3_h_w_and_strict_shape_inference_passes(fcn_onnx) -> None:
    model = onnx.load_from_string(fcn_onnx)
    assert dims(model.graph.input[0]) == ["N", 3, "H", "W"]
    assert dims(model.graph.output[0]) == ["N", 4, None, None]
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def session(model: bytes, level: str):  # type: ignore[no-untyped-def]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("level", LEVELS)
def test_fcn_onnxruntime_matches_the_reference_at_every_size(fcn, fcn_onnx, level: str) -> None:
    sess = session(fcn_onnx, level)
    for shape in FCN_SIZES:
        x = seeded(shape)
        ref = caffe2x.run(fcn, x, outputs=OUTS)
        for name, got in zip(OUTS, sess.run(OUTS, {"data": x})):
            assert got.shape == ref[name].shape, (shape, name)
            assert max_rel_error(got, ref[name]) <= 1e-5, (level, shape, name)


@pytest.mark.parametrize("size", [(13, 12), (14, 15), (7, 8), (21, 30)])
def test_every_caffe_pooling_variant_at_run_time_sizes(size) -> None:
    """MAX/AVE, ceil with and without pads, the dropped last window and the clipped divisor, each
    computed in the graph from the run-time size."""
    graph = fixtures.graph("pooling_ceil_and_pads")
    names = [n.name for n in graph.nodes]
    model = to_onnx(graph, outputs=names)
    assert dims(model.graph.input[0])[2:] == ["H", "W"]
    sess = session(model.SerializeToString(), "ORT_ENABLE_ALL")
    x = seeded((2, 3, *size))
    ref = caffe2x.run(graph, x, outputs=names)
    for name, got in zip(names, sess.run(names, {"data": x})):
        assert got.shape == ref[name].shape, name
        assert max_rel_error(got, ref[name]) <= 1e-6, name


def test_a_net_with_a_fixed_size_keeps_it_and_a_dynamic_batch() -> None:
    """googlenet_style: its InnerProduct fixes H and W (only a few sizes reach it as 1x1), so they stay
    as read; the pooling is the constant-padded form, the batch symbolic."""
    graph = fixtures.graph("googlenet_style_names")
    model = to_onnx(graph)
    assert dims(model.graph.input[0]) == ["N", 3, 32, 32]
    assert not [n for n in model.graph.node if n.op_type == "Shape"]
    sess = session(model.SerializeToString(), "ORT_ENABLE_ALL")
    x = seeded((3, 3, 32, 32))
    assert max_rel_error(sess.run(None, {"data": x})[0], caffe2x.run(graph, x)) <= 1e-5


def test_fcn_in_openvino_matches_the_reference_at_every_size(fcn, fcn_onnx, tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    path = tmp_path / "fcn.onnx"
    path.write_bytes(fcn_onnx)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for shape in FCN_SIZES:
        x = seeded(shape)
        ref = caffe2x.run(fcn, x, outputs=OUTS)
        result = compiled(x)
        for name in OUTS:
            got = result[compiled.output(name)]
            assert got.shape == ref[name].shape, (shape, name)
            assert max_rel_error(got, ref[name]) <= 1e-5, (shape, name)


@pytest.fixture(scope="module")
def resize_net() -> caffe2x.graph.ir.Graph:
    from caffe2x.caffe.reader import read_bytes
    from tests.helpers.resize_net import RESIZE_PROTOTXT

    return read_bytes(fixtures.synthesize(RESIZE_PROTOTXT, seed=3), RESIZE_PROTOTXT)


@pytest.mark.parametrize("level", LEVELS)
def test_interp_lrn_reshape_and_priorbox_follow_the_run_time_size(resize_net, level: str) -> None:
    """Interp's zoom / shrink-with-crop / size-of-a-blob rules and an explicit height/width (its output
    stays 7x9 while its input varies), LRN within a channel, a 0/-1 Reshape and PriorBox's image size
    and steps are computed in the graph from the run-time shape: H and W stay symbolic, strict shape
    inference passes, and onnxruntime matches the reference at sizes the net was not read at."""
    from tests.helpers.resize_net import RESIZE_OUTPUTS, RESIZE_SIZES

    model = to_onnx(resize_net, outputs=RESIZE_OUTPUTS)
    assert dims(model.graph.input[0]) == ["N", 3, "H", "W"]
    outs = {o.name: dims(o) for o in model.graph.output}
    assert outs["fixed"] == ["N", 6, 7, 9] and outs["flat"] == ["N", 6, None]
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    sess = session(model.SerializeToString(), level)
    for shape in RESIZE_SIZES:
        x = seeded(shape)
        ref = caffe2x.run(resize_net, x, outputs=RESIZE_OUTPUTS)
        for name, got in zip(RESIZE_OUTPUTS, sess.run(RESIZE_OUTPUTS, {"data": x})):
            assert got.shape == ref[name].shape, (shape, name)
            assert max_rel_error(got, ref[name]) <= 1e-5, (level, shape, name)


def test_priorbox_with_an_image_size_keeps_the_onnx_input_size(resize_net) -> None:
    """img_size pins the size PriorBox was read at (Caffe would divide by it at any size): the ONNX
    input keeps H and W, the boxes are the constant of the read size."""
    from caffe2x.caffe.reader import graph_from_text
    from tests.helpers.resize_net import RESIZE_PROTOTXT

    graph = graph_from_text(RESIZE_PROTOTXT.replace("min_size: 3 ", "min_size: 3 img_size: 20 "))
    model = to_onnx(graph, outputs=["prior_step", "like"])
    assert dims(model.graph.input[0]) == ["N", 3, 20, 18]


def test_resize_rules_in_openvino(resize_net, tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    from tests.helpers.resize_net import RESIZE_OUTPUTS, RESIZE_SIZES

    path = tmp_path / "resize.onnx"
    path.write_bytes(to_onnx(resize_net, outputs=RESIZE_OUTPUTS).SerializeToString())
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for shape in RESIZE_SIZES[1:]:
        x = seeded(shape)
        ref = caffe2x.run(resize_net, x, outputs=RESIZE_OUTPUTS)
        result = compiled(x)
        for name in RESIZE_OUTPUTS:
            got = result[compiled.output(name)]
            assert got.shape == ref[name].shape, (shape, name)
            assert max_rel_error(got, ref[name]) <= 1e-5, (shape, name)


@pytest.mark.parametrize("level", ["ORT_DISABLE_ALL", "ORT_ENABLE_ALL"])
def test_an_ssd_without_img_size_runs_at_any_size(level: str) -> None:
    """MobileNet-SSD in miniature: PriorBox follows the data input, Permute and Flatten keep the
    run-time dims, DetectionOutput counts its priors and boxes from the run-time shapes (and its rows
    are as many as it finds, at any batch): the same detections as the reference at other sizes."""
    graph = fixtures.graph("ssd_mobilenet_style")
    names = ["mbox_loc", "mbox_conf_sigmoid", "mbox_priorbox", "detection_out"]
    model = to_onnx(graph, outputs=names)
    assert dims(model.graph.input[0]) == ["N", 3, "H", "W"]
    assert dims(model.graph.output[3]) == [1, 1, None, 7]
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    sess = session(model.SerializeToString(), level)
    for shape in [(1, 3, 48, 40), (2, 3, 37, 21), (1, 3, 64, 64)]:
        x = seeded(shape)
        ref = caffe2x.run(graph, x, outputs=names)
        for name, got in zip(names, sess.run(names, {"data": x})):
            assert got.shape == ref[name].shape, (shape, name)
            assert max_rel_error(got, ref[name]) <= 1e-5, (level, shape, name)


def _neuron_net() -> tuple[str, list[str], int]:
    from tests.helpers.neuron_net import NEURON_OUTPUTS, NEURON_PROTOTXT
    return NEURON_PROTOTXT, NEURON_OUTPUTS, 2


def _reshape_net() -> tuple[str, list[str], int]:
    from tests.helpers.resize_net import RESHAPE_OUTPUTS, RESHAPE_PROTOTXT
    return RESHAPE_PROTOTXT, RESHAPE_OUTPUTS, 1


@pytest.mark.parametrize("net, channels, shapes", [
    pytest.param(_neuron_net, 2, [(2, 2, 13, 20), (1, 2, 7, 7), (1, 2, 10, 9)],
                 id="elementwise-layers-and-nearest-upsample"),
    pytest.param(_reshape_net, 3, [(2, 3, 11, 5), (1, 3, 4, 9)], id="4d-reshapes-by-caffes-rule"),
])
def test_size_agnostic_layers_follow_the_run_time_size_in_onnx(net, channels: int, shapes) -> None:
    from caffe2x.caffe.reader import read_bytes

    prototxt, outputs, seed = net()
    graph = read_bytes(fixtures.synthesize(prototxt, seed=seed), prototxt)
    model = to_onnx(graph, outputs=outputs)
    assert dims(model.graph.input[0]) == ["N", channels, "H", "W"]
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    sess = session(model.SerializeToString(), "ORT_ENABLE_ALL")
    for shape in shapes:
        x = seeded(shape)
        ref = caffe2x.run(graph, x, outputs=outputs)
        for name, got in zip(outputs, sess.run(outputs, {"data": x})):
            assert got.shape == ref[name].shape and max_rel_error(got, ref[name]) <= 1e-5, (shape, name)


def test_an_ssd_without_img_size_in_openvino(tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    graph = fixtures.graph("ssd_mobilenet_style")
    path = tmp_path / "ssd.onnx"
    path.write_bytes(to_onnx(graph).SerializeToString())
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for shape in [(1, 3, 48, 40), (2, 3, 37, 21)]:
        x = seeded(shape)
        ref = caffe2x.run(graph, x)
        got = compiled(x)[compiled.output(0)]
        assert got.shape == ref.shape and max_rel_error(got, ref) <= 1e-5, shape
