"""Keras models with ``Input((None, None, C))`` where the net takes any size, and their deploy paths:
the model itself, ``.keras`` and full-model ``.h5`` files loaded back, ``model.export()`` SavedModel,
TFLite/LiteRT conversion and interpreter, Keras 3 on the JAX and torch backends; each at sizes the net
was not read at (odd ones among them), against the numpy reference (<= 1e-5)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x.graph.numeric import max_rel_error
from tests.helpers.fcn_net import FCN_SIZES, load_fcn

keras = pytest.importorskip("keras")

#: sizes other than the declared 1x3x21x23 the deploy paths are checked at
OTHER_SIZES = [(1, 3, 33, 29), (2, 3, 16, 16)]


def seeded(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def nchw(y: object) -> np.ndarray:
    return np.asarray(y).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def fcn(tmp_path_factory: pytest.TempPathFactory) -> caffe2x.graph.ir.Graph:
    return load_fcn(tmp_path_factory.mktemp("fcn"))


@pytest.fixture(scope="module")
def model(fcn):  # type: ignore[no-untyped-def]
    return caffe2x.to_keras(fcn)


def test_fcn_model_takes_any_size_and_matches_the_reference(fcn, model) -> None:
    assert tuple(model.inputs[0].shape) == (None, None, None, 3)
    for shape in FCN_SIZES:
        x = seeded(shape)
        got = nchw(model(nhwc(x)))
        ref = caffe2x.run(fcn, x)
        assert got.shape == ref.shape, shape
        assert max_rel_error(got, ref) <= 1e-5, shape


def test_predict_traces_caffes_pooling_at_unknown_sizes(fcn, model) -> None:
    """A tf.function over (None, None, None, 3) runs CaffePooling2D's in-graph geometry (the path a
    SavedModel and TFLite take): same numbers as the reference at odd and even sizes."""
    tf = pytest.importorskip("tensorflow")
    fn = tf.function(model, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    for shape in FCN_SIZES:
        x = seeded(shape)
        assert max_rel_error(nchw(fn(nhwc(x))), caffe2x.run(fcn, x)) <= 1e-5, shape


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_saved_model_file_loads_and_runs_at_other_sizes(fcn, tmp_path: Path, suffix: str) -> None:
    import caffe2x.targets.keras  # noqa: F401  (registers the caffe2x layers for load_model)

    path = tmp_path / f"fcn{suffix}"
    caffe2x.save(fcn, path, full_model=True) if suffix == ".h5" else caffe2x.save(fcn, path)
    loaded = keras.models.load_model(path)
    assert tuple(loaded.inputs[0].shape) == (None, None, None, 3)
    for shape in OTHER_SIZES:
        x = seeded(shape)
        assert max_rel_error(nchw(loaded(nhwc(x))), caffe2x.run(fcn, x)) <= 1e-5, (suffix, shape)


def _interpreter(content: bytes):  # type: ignore[no-untyped-def]
    """LiteRT's interpreter (ai-edge-litert) where installed, else TensorFlow's own."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_content=content)


@pytest.mark.slow
def test_savedmodel_export_and_tflite_run_at_other_sizes(fcn, model, tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    export = tmp_path / "fcn_savedmodel"
    model.export(str(export), verbose=False)
    served = tf.saved_model.load(str(export))
    for shape in OTHER_SIZES:
        x = seeded(shape)
        assert max_rel_error(nchw(served.serve(nhwc(x))), caffe2x.run(fcn, x)) <= 1e-5, shape

    converter = tf.lite.TFLiteConverter.from_saved_model(str(export))
    interpreter = _interpreter(converter.convert())
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(inp["shape_signature"]) == [-1, -1, -1, 3]
    for shape in OTHER_SIZES:
        x = seeded(shape)
        interpreter.resize_tensor_input(inp["index"], nhwc(x).shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], nhwc(x))
        interpreter.invoke()
        assert max_rel_error(nchw(interpreter.get_tensor(out["index"])), caffe2x.run(fcn, x)) <= 1e-5, shape


_BACKEND_RUN = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    import caffe2x.targets.keras.layers, caffe2x.targets.keras.shape  # register the caffe2x layers
    model = keras.models.load_model(sys.argv[1])
    data = np.load(sys.argv[2])
    outs = {k: np.asarray(keras.ops.convert_to_numpy(model(data[k]))) for k in data.files}
    np.savez(sys.argv[3], **outs)
    print(json.dumps({"backend": keras.backend.backend(), "input": list(model.inputs[0].shape)}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_keras_file_runs_on_the_jax_and_torch_backends(fcn, tmp_path: Path, backend: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (the '{backend}' extra)")
    path = tmp_path / "fcn.keras"
    caffe2x.save(fcn, path)
    inputs = {"x" + "x".join(map(str, s)): seeded(s) for s in [*OTHER_SIZES, (1, 3, 9, 7)]}
    np.savez(tmp_path / "in.npz", **{k: nhwc(v) for k, v in inputs.items()})
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.run([sys.executable, "-c", _BACKEND_RUN, str(path), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, env=env, timeout=600,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"backend": backend, "input": [None, None, None, 3]}
    outs = np.load(tmp_path / "out.npz")
    for key, x in inputs.items():
        assert max_rel_error(nchw(outs[key]), caffe2x.run(fcn, x)) <= 1e-5, (backend, key)


def test_a_net_with_a_fixed_size_keeps_its_keras_input_size() -> None:
    """googlenet_style: its InnerProduct fixes H and W, so the Keras input is (None, 32, 32, 3) and the
    pooling keeps its static Keras form; any batch still runs."""
    from caffe2x import fixtures

    graph = fixtures.graph("googlenet_style_names")
    model = caffe2x.to_keras(graph)
    assert tuple(model.inputs[0].shape) == (None, 32, 32, 3)
    x = seeded((3, 3, 32, 32))
    assert max_rel_error(np.asarray(model(nhwc(x))), caffe2x.run(graph, x)) <= 1e-5


@pytest.fixture(scope="module")
def resize_net() -> caffe2x.graph.ir.Graph:
    from caffe2x.caffe.reader import read_bytes
    from caffe2x.fixtures import synthesize
    from tests.helpers.resize_net import RESIZE_PROTOTXT

    return read_bytes(synthesize(RESIZE_PROTOTXT, seed=3), RESIZE_PROTOTXT)


def caffe_layout(y: object, ref: np.ndarray) -> np.ndarray:
    """A Keras output in the reference's layout (4-D outputs are NHWC)."""
    y = np.asarray(keras.ops.convert_to_numpy(y))
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


def assert_resize_outputs(graph, run, sizes, names) -> None:  # type: ignore[no-untyped-def]
    for shape in sizes:
        x = seeded(shape)
        ref = caffe2x.run(graph, x, outputs=names)
        for name, got in zip(names, run(nhwc(x))):
            got = caffe_layout(got, ref[name])
            assert got.shape == ref[name].shape, (shape, name)
            assert max_rel_error(got, ref[name]) <= 1e-5, (shape, name)


def test_interp_lrn_reshape_and_priorbox_follow_the_run_time_size_in_keras(resize_net) -> None:
    """Interp's zoom / shrink-with-crop / size-of-a-blob rules and an explicit height/width (its output
    stays 7x9), LRN within a channel, a 0/-1 Reshape and PriorBox's image size and steps follow the
    input: the Keras input is (None, None, None, 3), eager calls and a tf.function traced at unknown
    sizes (the path of SavedModel and TFLite) match the reference at sizes it was not read at."""
    from tests.helpers.resize_net import RESIZE_OUTPUTS, RESIZE_SIZES

    model = caffe2x.to_keras(resize_net, outputs=RESIZE_OUTPUTS)
    assert tuple(model.inputs[0].shape) == (None, None, None, 3)
    shapes = dict(zip(RESIZE_OUTPUTS, (tuple(o.shape) for o in model.outputs)))
    assert shapes["fixed"] == (None, 7, 9, 6) and shapes["prior"] == (1, 2, None)
    assert_resize_outputs(resize_net, model, RESIZE_SIZES, RESIZE_OUTPUTS)
    tf = pytest.importorskip("tensorflow")
    fn = tf.function(model, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    assert_resize_outputs(resize_net, fn, RESIZE_SIZES[1:], RESIZE_OUTPUTS)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_resize_rules_survive_the_keras_files(resize_net, tmp_path: Path, suffix: str) -> None:
    import caffe2x.targets.keras  # noqa: F401  (registers the caffe2x layers for load_model)
    from tests.helpers.resize_net import RESIZE_SIZES

    path = tmp_path / f"resize{suffix}"
    caffe2x.save(resize_net, path, full_model=True) if suffix == ".h5" else caffe2x.save(resize_net, path)
    loaded = keras.models.load_model(path, compile=False)
    assert tuple(loaded.inputs[0].shape) == (None, None, None, 3)
    assert_resize_outputs(resize_net, loaded, RESIZE_SIZES[1:3], list(resize_net.outputs))


@pytest.mark.slow
def test_resize_rules_through_savedmodel_and_tflite(resize_net, tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    from tests.helpers.resize_net import RESIZE_SIZES

    model = caffe2x.to_keras(resize_net)
    export = tmp_path / "resize_savedmodel"
    model.export(str(export), verbose=False)
    served = tf.saved_model.load(str(export))
    names = list(resize_net.outputs)
    assert_resize_outputs(resize_net, served.serve, RESIZE_SIZES[1:], names)

    interpreter = _interpreter(tf.lite.TFLiteConverter.from_saved_model(str(export)).convert())
    inp = interpreter.get_input_details()[0]
    assert list(inp["shape_signature"]) == [-1, -1, -1, 3]
    signature = interpreter.get_signature_runner()  # resizes the input to each call's shape

    def run(x: np.ndarray) -> list[np.ndarray]:
        outs = signature(data=x)  # the SavedModel's outputs, in the model's order
        return [outs[f"output_{i}"] for i in range(len(names))]

    assert_resize_outputs(resize_net, run, RESIZE_SIZES[1:], names)


_BACKEND_RUN_ALL = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    import caffe2x.targets.keras  # registers the caffe2x layers
    model = keras.models.load_model(sys.argv[1], compile=False)
    data = np.load(sys.argv[2])
    outs = {}
    for k in data.files:
        for i, y in enumerate(model(data[k])):
            outs[f"{k}/{i}"] = np.asarray(keras.ops.convert_to_numpy(y))
    np.savez(sys.argv[3], **outs)
    print(keras.backend.backend())
""")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_resize_rules_on_the_jax_and_torch_backends(resize_net, tmp_path: Path, backend: str) -> None:
    """The .keras file written on TensorFlow, read on JAX / torch, where every size is a Python int:
    the layers take Caffe's numpy formulas at the size of each call."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (the '{backend}' extra)")
    from tests.helpers.resize_net import RESIZE_SIZES

    path = tmp_path / "resize.keras"
    caffe2x.save(resize_net, path)
    inputs = {"x" + "x".join(map(str, s)): seeded(s) for s in RESIZE_SIZES[1:]}
    np.savez(tmp_path / "in.npz", **{k: nhwc(v) for k, v in inputs.items()})
    proc = subprocess.run([sys.executable, "-c", _BACKEND_RUN_ALL, str(path), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": backend}, timeout=600,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == backend
    outs = np.load(tmp_path / "out.npz")
    names = list(resize_net.outputs)
    for key, x in inputs.items():
        ref = caffe2x.run(resize_net, x, outputs=names)
        for i, name in enumerate(names):
            got = caffe_layout(outs[f"{key}/{i}"], ref[name])
            assert got.shape == ref[name].shape, (backend, key, name)
            assert max_rel_error(got, ref[name]) <= 1e-5, (backend, key, name)


def test_an_ssd_without_img_size_runs_at_any_size_in_keras(tmp_path: Path) -> None:
    """MobileNet-SSD in miniature: PriorBox follows the data input, Permute / Flatten / Normalize /
    Concat of the heads keep the run-time dims, DetectionOutput counts its priors at run time: the
    model, a tf.function traced at unknown sizes and the reloaded .keras file give the reference's
    detections at sizes the net was not read at."""
    import caffe2x.targets.keras  # noqa: F401  (registers the caffe2x layers for load_model)
    from caffe2x import fixtures

    graph = fixtures.graph("ssd_mobilenet_style")
    names = ["mbox_loc", "mbox_conf_sigmoid", "mbox_priorbox", "detection_out"]
    model = caffe2x.to_keras(graph, outputs=names)
    assert tuple(model.inputs[0].shape) == (None, None, None, 3)
    sizes = [(1, 3, 48, 40), (2, 3, 37, 21), (1, 3, 64, 64)]
    assert_resize_outputs(graph, model, sizes, names)
    tf = pytest.importorskip("tensorflow")
    fn = tf.function(model, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    assert_resize_outputs(graph, fn, sizes, names)
    caffe2x.save(graph, tmp_path / "ssd.keras")
    loaded = keras.models.load_model(tmp_path / "ssd.keras", compile=False)
    assert tuple(loaded.inputs[0].shape) == (None, None, None, 3)
    assert_resize_outputs(graph, lambda x: [loaded(x)], sizes[1:2], ["detection_out"])


def test_elementwise_layers_and_nearest_upsample_take_any_size() -> None:
    """AbsVal, Power, Log, Exp, BNLL, Swish, Clip, Threshold and the YOLO ports' Upsample only use
    their constants: the Keras input is (None, None, None, 2), eager and traced calls match."""
    from caffe2x.caffe.reader import read_bytes
    from caffe2x.fixtures import synthesize
    from tests.helpers.neuron_net import NEURON_OUTPUTS, NEURON_PROTOTXT

    graph = read_bytes(synthesize(NEURON_PROTOTXT, seed=2), NEURON_PROTOTXT)
    model = caffe2x.to_keras(graph, outputs=NEURON_OUTPUTS)
    assert tuple(model.inputs[0].shape) == (None, None, None, 2)
    sizes = [(2, 2, 13, 20), (1, 2, 7, 7)]
    assert_resize_outputs(graph, model, sizes, NEURON_OUTPUTS)
    tf = pytest.importorskip("tensorflow")
    assert_resize_outputs(graph, tf.function(model, input_signature=[tf.TensorSpec([None, None, None, 2], tf.float32)]),
                          sizes, NEURON_OUTPUTS)


@pytest.mark.slow
def test_an_ssd_savedmodel_runs_at_other_sizes(tmp_path: Path) -> None:
    """``model.export()`` of the SSD: the served signature gives the reference's detections at sizes
    it was not read at (its TFLite conversion needs TensorFlow's select ops: a strided slice in
    DetectionOutput)."""
    tf = pytest.importorskip("tensorflow")
    from caffe2x import fixtures

    graph = fixtures.graph("ssd_mobilenet_style")
    caffe2x.to_keras(graph).export(str(tmp_path / "ssd"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "ssd"))
    assert_resize_outputs(graph, lambda x: [served.serve(x)], [(1, 3, 48, 40), (2, 3, 37, 21)], ["detection_out"])


def test_4d_reshapes_by_caffes_rule_follow_the_run_time_size_in_keras() -> None:
    """(N, 6, H, W) -> (N, 2, 3H, W) and (N, 6, H*W, 1), the first convolved again: the Keras model
    takes each in Caffe's order at run time (NHWC -> NCHW, rule, back)."""
    from caffe2x.caffe.reader import read_bytes
    from caffe2x.fixtures import synthesize
    from tests.helpers.resize_net import RESHAPE_OUTPUTS, RESHAPE_PROTOTXT

    graph = read_bytes(synthesize(RESHAPE_PROTOTXT, seed=1), RESHAPE_PROTOTXT)
    model = caffe2x.to_keras(graph, outputs=RESHAPE_OUTPUTS)
    assert tuple(model.inputs[0].shape) == (None, None, None, 3)
    assert_resize_outputs(graph, model, [(2, 3, 11, 5), (1, 3, 4, 9)], RESHAPE_OUTPUTS)
