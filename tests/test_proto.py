"""Tests for the committed Caffe schema: ``proto/caffe.proto`` and ``caffe2x/proto/caffe_pb2.py``.

The expected numbers below were checked against BVLC Caffe's ``src/caffe/proto/caffe.proto``
(master, commit 9b891540); they are what makes real ``.caffemodel`` files readable.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor, text_format

from caffe2x.proto import caffe_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent
GEN_SCRIPT = REPO_ROOT / "scripts" / "gen_proto.py"
COMMITTED_PB2 = REPO_ROOT / "caffe2x" / "proto" / "caffe_pb2.py"


def _field(message: type, name: str) -> descriptor.FieldDescriptor:
    return message.DESCRIPTOR.fields_by_name[name]


# --------------------------------------------------------------------------- (a) regeneration

def test_committed_pb2_matches_regenerated(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    # in a child process: grpc_tools' protoc shares C++ protobuf symbols with onnx/torch already
    # loaded by other tests, and crashes when run inside the same process
    subprocess.run([sys.executable, str(GEN_SCRIPT), "--out-dir", str(tmp_path)], check=True, timeout=120)
    generated = tmp_path / "caffe_pb2.py"
    assert generated.read_bytes() == COMMITTED_PB2.read_bytes(), (
        "caffe2x/proto/caffe_pb2.py is stale (or was made with another grpcio-tools version); "
        "run `python scripts/gen_proto.py`")


# --------------------------------------------------------------------------- (b) wire compatibility

@pytest.mark.parametrize(("message", "field", "number"), [
    (caffe_pb2.NetParameter, "layer", 100),
    (caffe_pb2.NetParameter, "layers", 2),
    (caffe_pb2.NetParameter, "input", 3),
    (caffe_pb2.NetParameter, "input_dim", 4),
    (caffe_pb2.NetParameter, "input_shape", 8),
    (caffe_pb2.LayerParameter, "blobs", 7),
    (caffe_pb2.LayerParameter, "param", 6),
    (caffe_pb2.LayerParameter, "convolution_param", 106),
    (caffe_pb2.LayerParameter, "batch_norm_param", 139),
    (caffe_pb2.LayerParameter, "scale_param", 142),
    (caffe_pb2.LayerParameter, "input_param", 143),
    (caffe_pb2.LayerParameter, "clip_param", 148),
    (caffe_pb2.BlobProto, "shape", 7),
    (caffe_pb2.BlobProto, "data", 5),
    (caffe_pb2.BlobProto, "double_data", 8),
    (caffe_pb2.PoolingParameter, "round_mode", 13),
    (caffe_pb2.ConvolutionParameter, "dilation", 18),
    (caffe_pb2.V1LayerParameter, "layer", 1),
    (caffe_pb2.V1LayerParameter, "blobs_lr", 7),
    (caffe_pb2.V1LayerParameter, "blob_share_mode", 1002),
    (caffe_pb2.V0LayerParameter, "hdf5_output_param", 1001),
])
def test_field_numbers(message: type, field: str, number: int) -> None:
    assert _field(message, field).number == number


def test_enum_values() -> None:
    assert caffe_pb2.V1LayerParameter.LayerType.Value("INNER_PRODUCT") == 14
    assert caffe_pb2.V1LayerParameter.INNER_PRODUCT == 14
    assert caffe_pb2.V1LayerParameter.CONVOLUTION == 4
    assert caffe_pb2.V1LayerParameter.DECONVOLUTION == 39
    assert caffe_pb2.PoolingParameter.RoundMode.Value("CEIL") == 0
    assert caffe_pb2.PoolingParameter.RoundMode.Value("FLOOR") == 1
    assert caffe_pb2.EltwiseParameter.SUM == 1
    assert caffe_pb2.TEST == 1


def test_types_labels_and_defaults() -> None:
    assert _field(caffe_pb2.V1LayerParameter, "layer").message_type is caffe_pb2.V0LayerParameter.DESCRIPTOR
    assert _field(caffe_pb2.LRNParameter, "k").default_value == pytest.approx(1.0)
    assert _field(caffe_pb2.BatchNormParameter, "eps").default_value == pytest.approx(1e-5)
    assert _field(caffe_pb2.BatchNormParameter, "moving_average_fraction").default_value == pytest.approx(0.999)
    assert caffe_pb2.PoolingParameter().round_mode == caffe_pb2.PoolingParameter.CEIL
    assert caffe_pb2.ConvolutionParameter().group == 1
    assert caffe_pb2.ConvolutionParameter().bias_term is True
    assert caffe_pb2.FillerParameter().type == "constant"
    assert _field(caffe_pb2.BlobShape, "dim").type == descriptor.FieldDescriptor.TYPE_INT64
    assert _field(caffe_pb2.BlobProto, "num").type == descriptor.FieldDescriptor.TYPE_INT32
    assert _field(caffe_pb2.ConvolutionParameter, "kernel_size").is_repeated
    assert not _field(caffe_pb2.ConvolutionParameter, "kernel_size").is_packed  # proto2: unpacked unless asked
    assert _field(caffe_pb2.BlobProto, "double_diff").is_packed
    assert not _field(caffe_pb2.Datum, "float_data").is_packed
    assert _field(caffe_pb2.ClipParameter, "min").is_required


def test_packed_encoding() -> None:
    # BlobProto.data is packed: tag 0x2a (field 5, length-delimited), 4 bytes, 1.0f little-endian.
    assert caffe_pb2.BlobProto(data=[1.0]).SerializeToString() == b"\x2a\x04\x00\x00\x80\x3f"
    # BlobShape.dim is packed too: tag 0x0a, 2 bytes, varints 3 and 5.
    assert caffe_pb2.BlobShape(dim=[3, 5]).SerializeToString() == b"\x0a\x02\x03\x05"


# --------------------------------------------------------------------------- (c) round trips

def test_binary_round_trip() -> None:
    net = caffe_pb2.NetParameter(name="tiny")
    layer = net.layer.add(name="fc", type="InnerProduct", bottom=["data"], top=["fc"])
    layer.inner_product_param.num_output = 2
    blob = layer.blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([0.5, -1.0, 2.0, 0.25, 3.0, -0.125])

    parsed = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert parsed == net
    assert parsed.layer[0].inner_product_param.num_output == 2
    assert list(parsed.layer[0].blobs[0].shape.dim) == [2, 3]
    assert list(parsed.layer[0].blobs[0].data) == [0.5, -1.0, 2.0, 0.25, 3.0, -0.125]


DEPLOY_PROTOTXT = """
name: "TinyNet"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 8
input_dim: 8
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param { lr_mult: 1 }
  param { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 4
    kernel_size: 3
    pad: 1
    stride: 2
    weight_filler { type: "msra" }
    bias_filler { type: "constant" value: 0.1 }
  }
}
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "conv1"
  top: "pool1"
  pooling_param { pool: AVE kernel_size: 2 round_mode: FLOOR }
}
"""


def test_parse_deploy_prototxt() -> None:
    net = text_format.Parse(DEPLOY_PROTOTXT, caffe_pb2.NetParameter())
    assert net.name == "TinyNet"
    assert list(net.input) == ["data"]
    assert list(net.input_dim) == [1, 3, 8, 8]
    conv = net.layer[0]
    assert conv.type == "Convolution"
    assert [p.lr_mult for p in conv.param] == [1.0, 2.0]
    assert conv.param[1].decay_mult == 0.0
    cp = conv.convolution_param
    assert (cp.num_output, list(cp.kernel_size), list(cp.pad), list(cp.stride)) == (4, [3], [1], [2])
    assert cp.weight_filler.type == "msra"
    assert cp.bias_filler.value == pytest.approx(0.1)
    pp = net.layer[1].pooling_param
    assert pp.pool == caffe_pb2.PoolingParameter.AVE
    assert pp.round_mode == caffe_pb2.PoolingParameter.FLOOR
    # Text -> binary -> text keeps everything.
    again = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert text_format.MessageToString(again) == text_format.MessageToString(net)


def test_parse_v1_layers() -> None:
    net = text_format.Parse(
        'layers { name: "ip" type: INNER_PRODUCT blobs_lr: 1 blobs_lr: 2 '
        'inner_product_param { num_output: 10 } }', caffe_pb2.NetParameter())
    v1 = net.layers[0]
    assert v1.type == caffe_pb2.V1LayerParameter.INNER_PRODUCT
    assert list(v1.blobs_lr) == [1.0, 2.0]
    assert v1.inner_product_param.num_output == 10
