"""Tests for the committed Caffe schema: ``proto/caffe.proto`` and ``caffe2x/caffe/proto/caffe_pb2.py``.

The expected numbers below were checked against BVLC Caffe's ``src/caffe/proto/caffe.proto``
(master, commit 9b891540); they are what makes real ``.caffemodel`` files readable.
"""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor, descriptor_pb2, text_format

from caffe2x.caffe.proto import caffe_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
GEN_SCRIPT = REPO_ROOT / "scripts" / "gen_proto.py"
COMMITTED_PB2 = REPO_ROOT / "caffe2x" / "caffe" / "proto" / "caffe_pb2.py"


def _load_gen_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("caffe2x_gen_proto", GEN_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports only the standard library; grpc_tools is loaded lazily
    return module


gen_proto = _load_gen_script()


def _field(message: type, name: str) -> descriptor.FieldDescriptor:
    return message.DESCRIPTOR.fields_by_name[name]


# FieldDescriptor.is_repeated/is_required arrived in protobuf 6.x and ``label`` is gone in 7.x;
# the package supports runtimes on both sides (docs/protobuf.md), so ask whichever exists.
def _is_repeated(fd: descriptor.FieldDescriptor) -> bool:
    return bool(fd.is_repeated) if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED


def _is_required(fd: descriptor.FieldDescriptor) -> bool:
    return bool(fd.is_required) if hasattr(fd, "is_required") else fd.label == fd.LABEL_REQUIRED


def _is_packed(fd: descriptor.FieldDescriptor) -> bool:
    return bool(fd.is_packed) if hasattr(fd, "is_packed") else fd.GetOptions().packed


def _serialized_file_descriptor(pb2_source: Path) -> descriptor_pb2.FileDescriptorProto:
    """The ``FileDescriptorProto`` a generated module passes to ``AddSerializedFile``."""
    for node in ast.walk(ast.parse(pb2_source.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "AddSerializedFile"):
            arg = node.args[0]
            assert isinstance(arg, ast.Constant) and isinstance(arg.value, bytes)
            return descriptor_pb2.FileDescriptorProto.FromString(arg.value)
    raise AssertionError(f"no AddSerializedFile(...) call in {pb2_source}")


# --------------------------------------------------------------------------- (a) regeneration

def _regenerate(out_dir: Path) -> Path:
    # in a child process: grpc_tools' protoc shares C++ protobuf symbols with onnx/torch already
    # loaded by other tests, and crashes when run inside the same process
    subprocess.run([sys.executable, str(GEN_SCRIPT), "--out-dir", str(out_dir)], check=True, timeout=120)
    return out_dir / "caffe_pb2.py"


def test_committed_pb2_matches_regenerated(tmp_path: Path) -> None:
    """Byte-for-byte, with the grpcio-tools release that made the committed module."""
    installed = gen_proto.installed_grpcio_tools_version()
    if installed is None:
        pytest.skip("grpcio-tools is not installed")
    if installed != gen_proto.GRPCIO_TOOLS_VERSION:
        pytest.skip(
            f"caffe_pb2.py is grpcio-tools {gen_proto.GRPCIO_TOOLS_VERSION} output (protobuf 5.26.1 gencode, "
            f"chosen so it imports on protobuf 3.20.3-7.x); grpcio-tools {installed} is installed and writes "
            f"other gencode, so only test_committed_pb2_schema_matches_proto applies. grpcio-tools "
            f"{gen_proto.GRPCIO_TOOLS_VERSION} needs protobuf<6: run this in a venv of its own "
            f"(see scripts/gen_proto.py)")
    generated = _regenerate(tmp_path)
    assert generated.read_bytes() == COMMITTED_PB2.read_bytes(), (
        "caffe2x/caffe/proto/caffe_pb2.py is stale; run `python scripts/gen_proto.py`")


def test_committed_pb2_schema_matches_proto(tmp_path: Path) -> None:
    """With any grpcio-tools: the schema embedded in the committed module is proto/caffe.proto's.

    Every protoc release serializes the same FileDescriptorProto (checked from grpcio-tools 1.62
    to 1.85), so this catches a .proto edit that was not regenerated even when the installed
    grpcio-tools is not the one that made the committed file.
    """
    pytest.importorskip("grpc_tools")
    generated = _regenerate(tmp_path)
    expected = _serialized_file_descriptor(generated)
    committed = _serialized_file_descriptor(COMMITTED_PB2)
    # private names: pycaffe registers "caffe.proto" / package "caffe" and both must coexist (issue 9)
    assert committed.name == "caffe2x/caffe/proto/caffe.proto" and committed.package == "caffe2x_caffe"
    assert committed == expected, (
        "caffe2x/caffe/proto/caffe_pb2.py does not match proto/caffe.proto; regenerate it with grpcio-tools "
        f"{gen_proto.GRPCIO_TOOLS_VERSION} (see scripts/gen_proto.py)")


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
    assert _is_repeated(_field(caffe_pb2.ConvolutionParameter, "kernel_size"))
    assert not _is_packed(_field(caffe_pb2.ConvolutionParameter, "kernel_size"))  # proto2: unpacked unless asked
    assert _is_packed(_field(caffe_pb2.BlobProto, "double_diff"))
    assert not _is_packed(_field(caffe_pb2.Datum, "float_data"))
    assert _is_required(_field(caffe_pb2.ClipParameter, "min"))


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
