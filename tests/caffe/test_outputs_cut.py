"""Cutting a net at chosen blobs (``outputs=`` / ``--outputs``): keep only what they need."""
from __future__ import annotations

import numpy as np
import pytest

import caffe2x
from caffe2x import Caffe2xError
from caffe2x.errors import cli_message
from caffe2x.caffe import reader

#: A Faster R-CNN shaped net: a conv trunk, then a Python layer caffe2x does not know that needs `im_info`.
FRCNN_LIKE = """
name: "frcnn_like"
input: "data"
input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
input: "im_info"
input_shape { dim: 1 dim: 3 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "rpn_score" type: "Convolution" bottom: "conv2" top: "rpn_score"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "proposal" type: "Python" bottom: "rpn_score" bottom: "im_info" top: "rois"
        python_param { module: "my.proposal_layer" layer: "MyProposalLayer" } }
layer { name: "head" type: "InnerProduct" bottom: "rois" top: "cls" inner_product_param { num_output: 4 } }
"""


def test_python_layer_inside_the_net_is_named_with_module_and_class() -> None:
    with pytest.raises(Caffe2xError, match=r"layer 'proposal' is a Python layer \(module 'my.proposal_layer', "
                                           r"class 'MyProposalLayer'\).*outputs=\['rpn_score'\]") as err:
        reader.graph_from_text(FRCNN_LIKE)
    assert "convert everything before it with --outputs rpn_score," in cli_message(err.value)


def test_cutting_before_the_python_layer_keeps_the_trunk_and_drops_inputs_only_it_needs() -> None:
    graph = reader.read_bytes(None, FRCNN_LIKE, outputs=["conv2"])
    assert [n.name for n in graph.nodes] == ["conv1", "relu1", "conv2"]
    assert list(graph.inputs) == ["data"]
    assert graph.outputs == ["conv2"]
    assert "rpn_score.weight" not in graph.tensors


def test_a_python_layer_the_requested_outputs_need_is_still_an_error() -> None:
    with pytest.raises(Caffe2xError, match="Python layer.*needed by the requested outputs"):
        reader.read_bytes(None, FRCNN_LIKE, outputs=["cls"])


def test_unknown_output_names_are_a_clear_error() -> None:
    with pytest.raises(Caffe2xError, match="no blob named 'nope'"):
        reader.read_bytes(None, FRCNN_LIKE, outputs=["nope"])
    with pytest.raises(Caffe2xError, match="does not write blob"):
        reader.read_bytes(None, FRCNN_LIKE, outputs=["conv2@conv1"])


def test_cut_resnet50_backbone_equals_the_full_nets_blob(resnet50_files, resnet50_graph_session,
                                                         image_batch) -> None:  # type: ignore[no-untyped-def]
    cut = caffe2x.load(*resnet50_files, outputs="res4f")
    assert cut.outputs == [resnet50_graph_session.value("res4f")]
    assert not any(n.name.startswith(("res5", "fc1000", "prob")) for n in cut.nodes)
    x = image_batch[:1]
    full = caffe2x.run(resnet50_graph_session, x, outputs="res4f")
    assert np.array_equal(caffe2x.run(cut, x), full)


def test_value_names_do_not_depend_on_the_cut(resnet50_files) -> None:  # type: ignore[no-untyped-def]
    cut = caffe2x.load(*resnet50_files, outputs=["conv1@bn_conv1"])
    assert [n.name for n in cut.nodes] == ["conv1", "bn_conv1"]
    assert cut.outputs == ["conv1@bn_conv1"]


def test_a_safetensors_graph_is_cut_the_same_way(tmp_path, resnet50_graph_session) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "r50.safetensors"
    caffe2x.save(resnet50_graph_session, path)
    cut = caffe2x.load(path, outputs=["pool1"])
    assert [n.name for n in cut.nodes][-1] == "pool1"
    assert cut.outputs == [resnet50_graph_session.value("pool1")]
    assert set(cut.tensors) == {k for n in cut.nodes for k in n.params.values()}


def _cli(*args: str):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "caffe2x", *args], capture_output=True, text=True, timeout=300)


def test_convert_and_validate_take_outputs_on_the_command_line(tiny_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, prototxt = tiny_files
    out = tmp_path / "trunk.safetensors"
    proc = _cli("convert", str(model), "-p", str(prototxt), "--outputs", "pool1", "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    trunk = caffe2x.load(out)
    assert trunk.outputs == [trunk.value("pool1")]
    assert all(not k.startswith(("fc", "res")) for k in trunk.tensors)
    proc = _cli("validate", str(model), "-p", str(prototxt), "--outputs", "pool1", "--frameworks", "numpy,onnx")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pool1" in proc.stdout
    proc = _cli("convert", str(model), "-p", str(prototxt), "--outputs", "nope", "-o", str(tmp_path / "x.onnx"))
    assert proc.returncode == 2 and "no blob named 'nope'" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()
