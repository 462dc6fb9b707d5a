"""Reading every way a Caffe model is stored into the same graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import Caffe2xError, fixtures
from caffe2x.errors import cli_message
from caffe2x.caffe import parse, reader
from caffe2x.caffe.proto import caffe_pb2
from caffe2x.caffe.upgrade import V1_TYPES

V1_ENUM = {v: k for k, v in V1_TYPES.items() if v}


def to_v1(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """The same net in the old ``layers`` (V1) format, as Caffe before 2015 stored it."""
    old = caffe_pb2.NetParameter()
    old.name = net.name
    old.input.extend(net.input)
    for s in net.input_shape:
        old.input_dim.extend(s.dim)
    old.input_dim.extend(net.input_dim)
    v1_fields = set(caffe_pb2.V1LayerParameter.DESCRIPTOR.fields_by_name)
    for layer in net.layer:
        v1 = old.layers.add()
        v1.name = layer.name
        v1.type = caffe_pb2.V1LayerParameter.LayerType.Value(V1_ENUM[layer.type])
        v1.bottom.extend(layer.bottom)
        v1.top.extend(layer.top)
        v1.blobs.extend(layer.blobs)
        for fd, value in layer.ListFields():
            if fd.name.endswith("_param") and fd.name in v1_fields:
                getattr(v1, fd.name).CopyFrom(value)
    return old


def to_legacy_blobs(net: caffe_pb2.NetParameter, double: bool = False) -> caffe_pb2.NetParameter:
    """Blobs with ``num/channels/height/width`` instead of ``shape`` (InnerProduct weight 1x1xOxI),
    optionally stored as ``double_data``."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for layer in out.layer:
        for blob in layer.blobs:
            dims = [1] * (4 - len(blob.shape.dim)) + list(blob.shape.dim)
            values = list(blob.data)
            blob.Clear()
            blob.num, blob.channels, blob.height, blob.width = dims
            (blob.double_data if double else blob.data).extend(values)
    return out


@pytest.fixture(scope="module")
def tiny_pair() -> tuple[bytes, str]:
    return fixtures.synthesize(fixtures.TINY_PROTOTXT, seed=5), fixtures.TINY_PROTOTXT


V1_ERA_NETS = ["conv_group_dilation", "pooling_ceil_and_pads", "lrn", "eltwise", "concat_flatten_softmax",
               "conv_innerproduct"]  # V1 predates BatchNorm and Scale


@pytest.mark.parametrize("name", V1_ERA_NETS)
def test_v1_format_reads_to_the_same_graph(name: str) -> None:
    from google.protobuf import text_format

    text = fixtures.ZOO[name]
    data = fixtures.synthesize(text, seed=2)
    modern = reader.read_bytes(data, text)
    v1_net = to_v1(parse.parse_caffemodel_bytes(data))
    v1_text = text_format.MessageToString(to_v1(parse.parse_prototxt_text(text)))
    assert "layers {" in v1_text and "layer {" not in v1_text
    assert reader.read_bytes(v1_net.SerializeToString(), v1_text).equals(modern)
    # the V1 caffemodel alone (no prototxt) gives the same net too
    alone = reader.read_bytes(v1_net.SerializeToString(), None, input_shape=modern.inputs["data"])
    assert alone.equals(modern)


@pytest.mark.parametrize("double", [False, True], ids=["legacy-dims", "legacy-dims-double-data"])
def test_legacy_blob_dims_and_double_data_read_to_the_same_graph(tiny_pair, double: bool) -> None:
    data, text = tiny_pair
    modern = reader.read_bytes(data, text)
    legacy = to_legacy_blobs(parse.parse_caffemodel_bytes(data), double=double).SerializeToString()
    assert reader.read_bytes(legacy, text).equals(modern)


def test_caffemodel_without_prototxt_needs_an_input_shape(tiny_pair) -> None:
    data, _ = tiny_pair
    with pytest.raises(Caffe2xError, match=r"no shape for input 'data'.*input_shape=\(N, C, H, W\)") as err:
        reader.read_bytes(data, None)
    assert "pass --input-shape N,C,H,W" in cli_message(err.value)
    g = reader.read_bytes(data, None, input_shape=(2, 3, 32, 32))
    assert g.inputs == {"data": (2, 3, 32, 32)} and g.shapes[g.value("prob")] == (2, 10)


@pytest.mark.parametrize("declaration", [
    'input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8',
    'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }',
    'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }',
])
def test_every_input_declaration_form_gives_the_input_shape(declaration: str) -> None:
    text = declaration + '\nlayer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 3 } }'
    g = reader.graph_from_text(text)
    assert g.inputs == {"data": (1, 3, 8, 8)} and g.shapes["c"] == (1, 2, 6, 6)
    g2 = reader.graph_from_text(text, input_shape=(4, 3, 10, 12))
    assert g2.shapes["c"] == (4, 2, 8, 10)


def test_in_place_layers_give_each_value_its_own_name(resnet50_graph) -> None:
    g = resnet50_graph
    conv1 = g.node("conv1")
    bn, scale, relu = g.node("bn_conv1"), g.node("scale_conv1"), g.node("conv1_relu")
    assert conv1.outputs == ["conv1@conv1"] and bn.inputs == ["conv1@conv1"]
    assert bn.outputs == ["conv1@bn_conv1"] and scale.inputs == bn.outputs
    assert relu.outputs == ["conv1@conv1_relu"] and g.blobs["conv1"] == "conv1@conv1_relu"
    assert g.node("pool1").outputs == ["pool1"]  # written once: the blob name itself
    values = [v for n in g.nodes for v in n.outputs]
    assert len(values) == len(set(values))
    # every value is addressable: the blob name means its final value, `blob@layer` each write
    assert g.value("conv1") == "conv1@conv1_relu" and g.value("conv1@conv1") == "conv1@conv1"
    assert not set(values) & (set(g.blobs) - set(g.blobs.values()))


def test_run_returns_final_in_place_value_like_pycaffe(resnet50_graph) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    out = caffe2x.run(resnet50_graph, x, outputs=["res3a", "fc1000"])
    assert set(out) == {"res3a", "fc1000"}
    assert out["res3a"].min() >= 0  # after res3a_relu
    before_relu = caffe2x.run(resnet50_graph, x, outputs="res3a@res3a_relu")
    np.testing.assert_array_equal(before_relu, out["res3a"])
    prob = caffe2x.run(resnet50_graph, x)
    assert prob.shape == (1, 1000) and abs(float(prob.sum()) - 1) < 1e-5


def test_train_only_layers_are_filtered_by_phase() -> None:
    text = """
input: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }
layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "drop_train" type: "Dropout" bottom: "c" top: "c" include { phase: TRAIN } }
layer { name: "relu" type: "ReLU" bottom: "c" top: "c" exclude { phase: TRAIN } }
"""
    g = reader.graph_from_text(text)
    assert [n.name for n in g.nodes] == ["c", "relu"]


def test_data_and_loss_layers_of_a_train_net_are_dropped(tiny_pair) -> None:
    text = """
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" }
"""
    g = reader.graph_from_text(text, input_shape=(2, 5))
    assert [n.name for n in g.nodes] == ["fc"] and g.outputs == ["fc"]


def test_inner_product_transpose_stores_weight_out_by_in() -> None:
    text = 'input: "x" input_shape { dim: 2 dim: 6 }\nlayer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc" inner_product_param { num_output: 4 transpose: true } }'
    net = parse.parse_prototxt_text(text)
    w = np.arange(24, dtype=np.float32).reshape(6, 4)  # stored (in, out)
    blob = net.layer[0].blobs.add()
    blob.shape.dim.extend([6, 4])
    blob.data.extend(w.ravel())
    bias = net.layer[0].blobs.add()
    bias.shape.dim.append(4)
    bias.data.extend([0, 0, 0, 0])
    g = reader.read_bytes(net.SerializeToString(), None)
    np.testing.assert_array_equal(g.tensors["fc.weight"], w.T)
    x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_allclose(caffe2x.run(g, x), x @ w, rtol=1e-6)


def test_mean_binaryproto_reads_as_chw(tmp_path: Path) -> None:
    blob = caffe_pb2.BlobProto()
    blob.num, blob.channels, blob.height, blob.width = 1, 3, 4, 5
    mean = np.random.default_rng(0).uniform(0, 255, (3, 4, 5)).astype(np.float32)
    blob.data.extend(mean.ravel())
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    np.testing.assert_array_equal(reader.read_mean(path), mean)
    path.write_bytes(b"\x00garbage\xff\xff")
    with pytest.raises(Caffe2xError, match="not a Caffe mean file"):
        reader.read_mean(path)


def test_batchnorm_divides_by_the_moving_average_factor() -> None:
    text = 'input: "x" input_shape { dim: 1 dim: 2 dim: 1 dim: 1 }\nlayer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }'
    net = parse.parse_prototxt_text(text)
    for values in ([4.0, 8.0], [2.0, 18.0], [2.0]):
        b = net.layer[0].blobs.add()
        b.shape.dim.append(len(values))
        b.data.extend(values)
    g = reader.read_bytes(net.SerializeToString(), None)
    np.testing.assert_allclose(g.tensors["bn.running_mean"], [2.0, 4.0])
    np.testing.assert_allclose(g.tensors["bn.running_var"], [1.0, 9.0])
    y = caffe2x.run(g, np.array([[[[3.0]], [[10.0]]]], dtype=np.float32))
    np.testing.assert_allclose(y.ravel(), [1 / np.sqrt(1 + 1e-5), 6 / np.sqrt(9 + 1e-5)], rtol=1e-6)


def test_batchnorm_with_a_zero_factor_uses_zero_statistics_like_caffe(tmp_path: Path) -> None:
    """batch_norm_layer.cpp scales the stored statistics by 0 when the factor is 0 (never-trained
    BatchNorm): y = x / sqrt(eps). OpenCV's importer does the same; checked against it."""
    cv2 = pytest.importorskip("cv2")
    text = 'input: "x" input_shape { dim: 1 dim: 2 dim: 2 dim: 2 }\nlayer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" }\n'
    net = parse.parse_prototxt_text(text)
    for values in ([4.0, 8.0], [2.0, 18.0], [0.0]):
        b = net.layer[0].blobs.add()
        b.shape.dim.append(len(values))
        b.data.extend(values)
    g = reader.read_bytes(net.SerializeToString(), None)
    np.testing.assert_array_equal(g.tensors["bn.running_mean"], [0.0, 0.0])
    np.testing.assert_array_equal(g.tensors["bn.running_var"], [0.0, 0.0])
    x = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2) - 3
    y = caffe2x.run(g, x)
    np.testing.assert_allclose(y, x / np.sqrt(np.float32(1e-5)), rtol=1e-5)
    (tmp_path / "bn.prototxt").write_text(text)
    (tmp_path / "bn.caffemodel").write_bytes(net.SerializeToString())
    cvnet = cv2.dnn.readNetFromCaffe(str(tmp_path / "bn.prototxt"), str(tmp_path / "bn.caffemodel"))
    cvnet.setInput(x)
    np.testing.assert_allclose(cvnet.forward(), y, rtol=1e-5)
