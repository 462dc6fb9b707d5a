"""A net with two outputs (MTCNN's P-Net shape: conv trunk, heads ``conv4-2`` and ``prob1``): validate is
green in every framework, and a Keras ``.h5`` / ``.keras`` written for the whole net loads into a model
built for one head (weights by layer name into any sub-model containing those layers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import convert, fixtures
from caffe2x.errors import Caffe2xError
from caffe2x.validation.validator import validate

PNET = """name: "PNet"
input: "data" input_shape { dim: 1 dim: 3 dim: 24 dim: 24 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 10 kernel_size: 3 } }
layer { name: "PReLU1" type: "PReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 16 kernel_size: 3 } }
layer { name: "PReLU2" type: "PReLU" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3" convolution_param { num_output: 32 kernel_size: 3 } }
layer { name: "PReLU3" type: "PReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4-1" type: "Convolution" bottom: "conv3" top: "conv4-1" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "conv4-2" type: "Convolution" bottom: "conv3" top: "conv4-2" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "prob1" type: "Softmax" bottom: "conv4-1" top: "prob1" }
"""


@pytest.fixture(scope="module")
def pnet(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("pnet")
    (d / "pnet.prototxt").write_text(PNET)
    (d / "pnet.caffemodel").write_bytes(fixtures.synthesize(PNET))
    return caffe2x.load(d / "pnet.caffemodel", d / "pnet.prototxt"), d


def test_two_output_net_validates_in_every_framework(pnet) -> None:  # type: ignore[no-untyped-def]
    graph, d = pnet
    assert graph.outputs == ["conv4-2", "prob1"]
    h5 = d / "whole.h5"
    convert.write(graph, h5, "keras", overwrite=True)
    report = validate(graph, against=[h5])
    ran = {f.name: f.status for f in report.frameworks}
    assert report.passed, report.failures
    for name in ("numpy", "torch", "keras", "onnx"):
        if caffe2x.targets.get(name).available():
            assert ran[name] == "PASS"


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_file_for_the_whole_net_loads_into_a_model_of_one_head(pnet, suffix: str) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("keras")
    from caffe2x import to_keras
    from caffe2x.graph.reference import run
    from caffe2x.targets.keras.target import load_weights

    graph, d = pnet
    path = d / f"whole{suffix}"
    convert.write(graph, path, "keras", overwrite=True)
    head = to_keras(graph, outputs="conv4-2")
    for w in head.weights:
        w.assign(np.zeros(tuple(w.shape), np.float32))
    load_weights(head, path)
    x = np.random.default_rng(0).standard_normal((2, 3, 24, 24)).astype(np.float32)
    want = run(graph, {"data": x}, outputs=["conv4-2"])["conv4-2"]
    got = np.asarray(head(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))


def test_h5_lacking_a_layer_of_the_model_is_refused_naming_it(pnet) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("keras")
    from caffe2x import to_keras
    from caffe2x.targets.keras.target import load_weights

    graph, d = pnet
    cut = caffe2x.load(d / "pnet.caffemodel", d / "pnet.prototxt", outputs=["prob1"])
    path = d / "head1.h5"
    convert.write(cut, path, "keras", overwrite=True)  # has no conv4-2
    with pytest.raises(Caffe2xError, match="no weights for layer 'conv4-2'"):
        load_weights(to_keras(graph), path)
