"""Layers that share a name (HED's two ``crop`` layers): Caffe's CopyTrainedLayersFrom rule (the first
layer of a name takes the caffemodel's blobs of that name, the last such caffemodel layer winning),
one warning, unique names in the graph and in every target."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from tests.helpers.layer_targets import RUNNERS

import caffe2x
from caffe2x.caffe.proto import caffe_pb2
from caffe2x.caffe.reader import read_bytes
from caffe2x.errors import Caffe2xError, DuplicateLayerNameWarning
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.reference import execute

HED_LIKE = """name: "hed-like"
input: "data" input_shape { dim: 1 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "score1" type: "Convolution" bottom: "conv1" top: "score1" convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "up1" type: "Deconvolution" bottom: "score1" top: "up1"
  convolution_param { num_output: 1 kernel_size: 4 stride: 2 bias_term: false } }
layer { name: "crop" type: "Crop" bottom: "up1" bottom: "data" top: "crop1" crop_param { offset: 1 } }
layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "score2" type: "Convolution" bottom: "pool" top: "score2" convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "up2" type: "Deconvolution" bottom: "score2" top: "up2"
  convolution_param { num_output: 1 kernel_size: 8 stride: 4 bias_term: false } }
layer { name: "crop" type: "Crop" bottom: "up2" bottom: "data" top: "crop2" crop_param { offset: 2 } }
layer { name: "fuse" type: "Concat" bottom: "crop1" bottom: "crop2" top: "fuse" }
layer { name: "sigmoid" type: "Sigmoid" bottom: "fuse" top: "out" }
"""


def caffemodel(layers: list[tuple[str, list[np.ndarray]]]) -> bytes:
    net = caffe_pb2.NetParameter()
    for name, arrays in layers:
        layer = net.layer.add()
        layer.name = name
        for a in arrays:
            blob = layer.blobs.add()
            blob.shape.dim.extend(a.shape)
            blob.data.extend(a.astype(np.float32).ravel().tolist())
    return net.SerializeToString()


def hed_weights(seed: int = 0) -> list[tuple[str, list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    shapes = {"conv1": [(4, 3, 3, 3), (4,)], "score1": [(1, 4, 1, 1), (1,)], "up1": [(1, 1, 4, 4)],
              "score2": [(1, 4, 1, 1), (1,)], "up2": [(1, 1, 8, 8)]}
    return [(name, [rng.standard_normal(s).astype(np.float32) for s in ss]) for name, ss in shapes.items()]


def test_two_crops_are_renamed_with_one_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = read_bytes(caffemodel(hed_weights()), HED_LIKE)
    dup = [w for w in caught if issubclass(w.category, DuplicateLayerNameWarning)]
    assert len(dup) == 1 and "'crop' -> 'crop_2'" in str(dup[0].message)
    names = [n.name for n in graph.nodes]
    assert names.count("crop") == 1 and "crop_2" in names and len(set(names)) == len(names)
    assert graph.node("crop").attrs != graph.node("crop_2").attrs  # each keeps its own offset


def test_phase_split_layers_of_one_name_are_not_duplicates() -> None:
    text = ('layer { name: "data" type: "Input" top: "data" include { phase: TRAIN } '
            'input_param { shape { dim: 4 dim: 3 dim: 12 dim: 12 } } }\n'
            'layer { name: "data" type: "Input" top: "data" include { phase: TEST } '
            'input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }\n' + HED_LIKE.split("\n", 2)[2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = read_bytes(caffemodel(hed_weights()), text)
    assert len([w for w in caught if issubclass(w.category, DuplicateLayerNameWarning)]) == 1  # the crops only
    assert graph.inputs == {"data": (1, 3, 12, 12)}


def test_the_first_layer_of_a_name_takes_the_blobs_and_the_last_caffemodel_layer_wins() -> None:
    """Two convolutions named 'score': the caffemodel's blobs go to the first; with two 'score' layers
    in the caffemodel, each copy overwrites the previous (Caffe copies them in order)."""
    text = """input: "data" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }
layer { name: "score" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "relu" type: "ReLU" bottom: "a" top: "b" }
"""
    first, last = np.ones((2, 2, 1, 1), np.float32), np.full((2, 2, 1, 1), 3, np.float32)
    bias = np.zeros(2, np.float32)
    text2 = text + ('layer { name: "score" type: "Convolution" bottom: "b" top: "c" '
                    'convolution_param { num_output: 2 kernel_size: 1 } }\n')
    with pytest.warns(DuplicateLayerNameWarning):
        with pytest.raises(Caffe2xError, match="later layer named 'score': Caffe copies the caffemodel's blobs"):
            read_bytes(caffemodel([("score", [first, bias])]), text2)
    graph = read_bytes(caffemodel([("score", [first, bias]), ("score", [last, bias])]), text)
    np.testing.assert_array_equal(graph.param(graph.node("score"), "weight"), last)


@pytest.mark.parametrize("framework", list(RUNNERS))
def test_a_net_with_two_crops_converts_with_unique_names_in_every_target(framework: str, tmp_path: Path) -> None:
    deploy, model = tmp_path / "hed.prototxt", tmp_path / "hed.caffemodel"
    deploy.write_text(HED_LIKE)
    model.write_bytes(caffemodel(hed_weights()))
    with pytest.warns(DuplicateLayerNameWarning):
        graph = caffe2x.load(model, deploy)
    x = {"data": np.random.default_rng(1).standard_normal((1, 3, 12, 12)).astype(np.float32)}
    ref = execute(graph, x)
    outputs = ["crop1", "crop2", "out"]
    got = RUNNERS[framework](graph, x, outputs, tmp_path)
    for blob in outputs:
        assert max_rel_error(got[blob], ref[graph.value(blob)]) <= 1e-5, blob
