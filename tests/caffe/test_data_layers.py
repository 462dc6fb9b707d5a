"""Nets that start with a data layer instead of an input blob (SegNet's DenseImageData, train_val nets):
the data top becomes the net input, shaped from the layer's parameters or --input-shape, and label
tops only losses and accuracies read are dropped with them. Checked in every target."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers.layer_targets import RUNNERS

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe.reader import graph_from_text, read_bytes
from caffe2x.errors import Caffe2xError
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.reference import execute

BODY = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "pool1_mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "upsample1" type: "Upsample" bottom: "pool1" bottom: "pool1_mask" top: "upsample1"
  upsample_param { scale: 2 } }
layer { name: "score" type: "Convolution" bottom: "upsample1" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy" }
"""

HEADS = {
    "DenseImageData": ('dense_image_data_param { source: "train.txt" batch_size: 2 new_height: 12 new_width: 10 }',
                       (2, 3, 12, 10)),
    "DenseImageData_crop_gray": ('dense_image_data_param { source: "t.txt" batch_size: 1 is_color: false '
                                 'new_height: 30 new_width: 30 crop_height: 8 crop_width: 6 }', (1, 1, 8, 6)),
    "ImageData": ('image_data_param { source: "t.txt" batch_size: 3 new_height: 16 new_width: 14 }', (3, 3, 16, 14)),
    "ImageData_transform_crop": ('transform_param { crop_size: 8 } image_data_param { source: "t.txt" batch_size: 1 '
                                 'new_height: 16 new_width: 14 }', (1, 3, 8, 8)),
    "MemoryData": ("memory_data_param { batch_size: 2 channels: 2 height: 6 width: 8 }", (2, 2, 6, 8)),
    "DummyData": ("dummy_data_param { shape { dim: 1 dim: 3 dim: 10 dim: 6 } shape { dim: 1 } }", (1, 3, 10, 6)),
    "WindowData": ('window_data_param { source: "w.txt" batch_size: 2 crop_size: 10 }', (2, 3, 10, 10)),
}


def headed(layer_type: str) -> str:
    params, _ = HEADS[layer_type]
    kind = layer_type.split("_")[0]
    head = f'layer {{ name: "data" type: "{kind}" top: "data" top: "label" {params} }}'
    return f'name: "{layer_type}-headed"\n{head}\n{BODY}'


@pytest.mark.parametrize("layer_type", list(HEADS))
def test_data_layer_top_is_the_input_shaped_from_its_parameters(layer_type: str) -> None:
    graph = graph_from_text(headed(layer_type))
    assert graph.inputs == {"data": HEADS[layer_type][1]}
    assert [n.name for n in graph.nodes] == ["conv1", "pool1", "upsample1", "score", "prob"]  # loss, accuracy gone
    assert [graph.blob_name(v) for v in graph.outputs] == ["prob"]


@pytest.mark.parametrize("layer_type, says", [
    ("Data", "channels unknown"),
    ("HDF5Data", "HDF5 files"),
])
def test_data_layers_without_a_shape_need_input_shape_and_say_what_is_missing(layer_type: str, says: str) -> None:
    params = {"Data": 'data_param { source: "lmdb" batch_size: 4 backend: LMDB } transform_param { crop_size: 8 }',
              "HDF5Data": 'hdf5_data_param { source: "h5.txt" batch_size: 4 }'}[layer_type]
    text = f'layer {{ name: "data" type: "{layer_type}" top: "data" top: "label" {params} }}\n{BODY}'
    with pytest.raises(Caffe2xError, match=f"no shape for input 'data' \\(the top of {layer_type} layer 'data': .*{says}"):
        graph_from_text(text)
    assert read_bytes(None, text, input_shape=(1, 3, 8, 8)).inputs == {"data": (1, 3, 8, 8)}


def test_python_data_layer_is_an_input_given_input_shape() -> None:
    text = ('layer { name: "input-data" type: "Python" top: "data" top: "label" '
            'python_param { module: "roi_data_layer.layer" layer: "RoIDataLayer" param_str: "\'num_classes\': 21" } }'
            + BODY)
    with pytest.raises(Caffe2xError, match="a Python data layer"):
        graph_from_text(text)
    assert read_bytes(None, text, input_shape=(1, 3, 8, 6)).inputs == {"data": (1, 3, 8, 6)}


def test_input_shape_overrides_the_data_layers_own() -> None:
    assert read_bytes(None, headed("DenseImageData"), input_shape=(1, 3, 20, 18)).inputs == {"data": (1, 3, 20, 18)}


@pytest.mark.parametrize("framework", list(RUNNERS))
def test_a_data_headed_segnet_runs_in_every_target(framework: str, tmp_path: Path) -> None:
    text = headed("DenseImageData")
    deploy, model = tmp_path / "segnet.prototxt", tmp_path / "segnet.caffemodel"
    deploy.write_text(text)
    model.write_bytes(fixtures.synthesize(text))
    graph = caffe2x.load(model, deploy)
    x = {"data": np.random.default_rng(2).standard_normal((2, 3, 12, 10)).astype(np.float32)}
    ref = execute(graph, x)[graph.value("prob")]
    got = RUNNERS[framework](graph, x, ["prob"], tmp_path)["prob"]
    assert got.shape == ref.shape and max_rel_error(got, ref) <= 1e-5
