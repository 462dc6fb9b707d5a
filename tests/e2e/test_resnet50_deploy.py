"""ResNet-50 through the Keras and ONNX deploy paths of docs/deploy.md, and the numpy reference at a
size it was not read at against OpenCV. ResNet-50's H and W take 195..226 (every size whose pool5
output is 1x1): the reference runs at 200x200, the ONNX and Keras models keep 224x224 and take any
batch, which is their second size here. Slow: a ResNet-50 per client."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x.graph.numeric import max_rel_error

pytestmark = pytest.mark.slow

LEVELS = ["ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"]


@pytest.fixture(scope="module")
def logits(resnet50_files):  # type: ignore[no-untyped-def]
    """ResNet-50 cut at fc1000: the files' output is the logits (probabilities hide differences)."""
    return caffe2x.load(*resnet50_files, outputs=["fc1000"])


def photos(batch: int, size: int = 224) -> np.ndarray:
    return (np.random.default_rng(batch).standard_normal((batch, 3, size, size)) * 50).astype(np.float32)


def test_reference_at_200x200_matches_opencv(resnet50_files, resnet50_graph) -> None:
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("this OpenCV has no Caffe importer")
    model, deploy = resnet50_files
    net = cv2.dnn.readNetFromCaffe(str(deploy), str(model))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.enableWinograd(False)
    x = photos(2, 200)
    # OpenCV names a layer's output: res4f's Eltwise before its in-place ReLU is value res4f@res4f here
    values = {"fc1000": "fc1000", "res4f@res4f": "res4f", "pool1": "pool1"}
    ours = caffe2x.run(resnet50_graph, x, outputs=list(values))
    net.setInput(x)
    for (value, layer), theirs in zip(values.items(), net.forward(list(values.values()))):
        assert ours[value].shape == theirs.shape
        assert max_rel_error(ours[value], theirs) <= 1e-4, layer
    with pytest.raises(caffe2x.Caffe2xError, match=r"layer 'pool5' \(Pooling\).*H 195\.\.226, W 195\.\.226$"):
        caffe2x.run(resnet50_graph, photos(1, 160))


def test_onnx_at_every_optimisation_level_and_in_openvino(logits, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "resnet50.onnx"
    caffe2x.save(logits, path)
    x = photos(3)
    ref = caffe2x.run(logits, x, outputs="fc1000")
    for level in LEVELS:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, {"data": x})
        assert max_rel_error(got, ref) <= 1e-4, level
        assert (got.argmax(1) == ref.argmax(1)).all()
    if importlib.util.find_spec("openvino") is not None:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = compiled(x)[compiled.output(0)]
        assert max_rel_error(got, ref) <= 1e-4 and (got.argmax(1) == ref.argmax(1)).all()


def test_keras_file_savedmodel_and_tflite(logits, tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    import caffe2x.targets.keras  # noqa: F401

    path = tmp_path / "resnet50.keras"
    caffe2x.save(logits, path)
    model = keras.models.load_model(path)
    x = photos(2)
    ref = caffe2x.run(logits, x, outputs="fc1000")
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    assert max_rel_error(np.asarray(model(nhwc)), ref) <= 1e-4
    model.export(str(tmp_path / "sm"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "sm"))
    assert max_rel_error(served.serve(nhwc).numpy(), ref) <= 1e-4
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_content=tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm")).convert())
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], nhwc.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], nhwc)
    interpreter.invoke()
    assert max_rel_error(interpreter.get_tensor(out["index"]), ref) <= 1e-4


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_keras_file_on_the_jax_and_torch_backends(logits, tmp_path: Path, backend: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    path = tmp_path / "resnet50.keras"
    caffe2x.save(logits, path)
    x = photos(2)
    np.save(tmp_path / "x.npy", np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    code = ("import sys, numpy as np, keras, caffe2x.targets.keras\n"
            "m = keras.models.load_model(sys.argv[1])\n"
            "np.save(sys.argv[3], keras.ops.convert_to_numpy(m(np.load(sys.argv[2]))))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True, timeout=900,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert max_rel_error(np.load(tmp_path / "y.npy"), caffe2x.run(logits, x, outputs="fc1000")) <= 1e-4
