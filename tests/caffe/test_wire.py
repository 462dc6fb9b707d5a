"""Zero-copy weights (caffe2x.caffe.wire): the fast path gives exactly the plain path's graph, or steps aside."""
from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

from caffe2x import Caffe2xError, fixtures
from caffe2x.caffe import parse, reader, wire
from caffe2x.caffe.proto import caffe_pb2

from tests.caffe.test_reader import V1_ERA_NETS, to_legacy_blobs, to_v1


def plain_graph(data: bytes, text: str | None, input_shape=None):  # type: ignore[no-untyped-def]
    """The reader without the wire walker: compiled parse of everything, blobs from repeated fields."""
    net = parse.parse_caffemodel_bytes(data)
    definition = parse.parse_prototxt_text(text) if text is not None else None
    return reader.graph_from_nets(net, definition, input_shape)


def assert_same(fast, plain) -> None:  # type: ignore[no-untyped-def]
    assert fast.equals(plain)
    for key, arr in plain.tensors.items():  # bit for bit, dtype and shape included
        assert fast.tensors[key].dtype == arr.dtype and fast.tensors[key].shape == arr.shape
        assert fast.tensors[key].tobytes() == arr.tobytes(), key


def root(arr: np.ndarray) -> object:
    """The object owning an array's memory (an ``mmap`` for a view into a mapped caffemodel)."""
    while isinstance(arr, np.ndarray) and arr.base is not None:
        arr = arr.base
    return arr.obj if isinstance(arr, memoryview) else arr


FIXTURES = ["tiny", *fixtures.ZOO]


@pytest.mark.parametrize("name", FIXTURES)
def test_fast_path_equals_plain_path_on_every_fixture(name: str) -> None:
    text = fixtures.prototxt_for(name)
    data = fixtures.synthesize(text, seed=3)
    net = parse.parse_caffemodel_bytes(data)
    big = sum(4 * len(b.data) >= wire.MIN_VIEW_BYTES for layer in net.layer for b in layer.blobs)
    layout = wire.plan(data)
    assert (layout.views if layout is not None else 0) == big
    assert_same(reader.read_bytes(data, text), plain_graph(data, text))


def test_resnet50_file_is_read_through_views_of_the_map(resnet50_files: tuple[Path, Path],
                                                       resnet50_graph_session) -> None:  # type: ignore[no-untyped-def]
    model, deploy = resnet50_files
    data = model.read_bytes()
    assert_same(resnet50_graph_session, plain_graph(data, deploy.read_text()))
    layout = wire.plan(data)
    assert layout is not None and len(layout.structure) < len(data) / 1000
    # conv/fc weights and Scale blobs are untouched views; BatchNorm statistics are computed
    g = reader.read(model, deploy)
    maps = {id(root(a)) for a in g.tensors.values() if isinstance(root(a), mmap.mmap)}
    assert len(maps) == 1
    untouched = [n for n in g.nodes if n.op in ("Convolution", "InnerProduct", "Scale")]
    assert all(isinstance(root(g.param(n, "weight")), mmap.mmap) for n in untouched)
    assert all(g.tensors[k].flags.writeable for k in g.tensors)  # copy-on-write map, file never written


@pytest.mark.parametrize("name", V1_ERA_NETS)
def test_v1_files_take_the_fast_path_to_the_same_graph(name: str) -> None:
    text = fixtures.ZOO[name]
    v1 = to_v1(parse.parse_caffemodel_bytes(fixtures.synthesize(text, seed=4)))
    data = v1.SerializeToString()
    assert (wire.plan(data) is not None) == any(len(layer.blobs) for layer in v1.layers)
    assert_same(reader.read_bytes(data, text), plain_graph(data, text))
    shape = reader.read_bytes(data, text).inputs["data"]
    assert_same(reader.read_bytes(data, None, input_shape=shape), plain_graph(data, None, shape))


@pytest.mark.parametrize("double", [False, True], ids=["legacy-dims", "double-data"])
def test_legacy_dims_and_double_data_give_the_plain_result(double: bool) -> None:
    data = fixtures.synthesize(fixtures.TINY_PROTOTXT, seed=5)
    legacy = to_legacy_blobs(parse.parse_caffemodel_bytes(data), double=double).SerializeToString()
    layout = wire.plan(legacy)
    assert (layout is None) == double  # double_data blobs are left whole to the compiled parser
    assert_same(reader.read_bytes(legacy, fixtures.TINY_PROTOTXT), plain_graph(legacy, fixtures.TINY_PROTOTXT))


def _tag(number: int, wire_type: int) -> bytes:
    return wire._encode_varint(number << 3 | wire_type)


def _len_field(number: int, content: bytes) -> bytes:
    return _tag(number, 2) + wire._encode_varint(len(content)) + content


def _net(*blobs: bytes, name: str = "fc") -> bytes:
    """One InnerProduct layer (4 inputs -> 8 outputs) with the given serialized BlobProtos."""
    layer = caffe_pb2.LayerParameter(name=name, type="InnerProduct", bottom=["data"], top=[name])
    layer.inner_product_param.num_output = 8
    layer.inner_product_param.bias_term = False
    head = caffe_pb2.NetParameter(input=["data"], input_dim=[1, 4, 1, 1]).SerializeToString()
    return head + _len_field(100, layer.SerializeToString() + b"".join(_len_field(7, b) for b in blobs))


SHAPE_8x4 = _len_field(7, b"".join(_tag(1, 0) + wire._encode_varint(d) for d in (8, 4)))
VALUES = np.arange(32, dtype="<f4") - 7.5


@pytest.mark.parametrize("blob, fast", [
    (SHAPE_8x4 + _len_field(5, VALUES.tobytes()), True),
    (_len_field(5, VALUES.tobytes()) + SHAPE_8x4, True),  # field order does not matter
    (SHAPE_8x4 + b"".join(_tag(5, 5) + v.tobytes() for v in VALUES), False),  # unpacked floats
    (SHAPE_8x4 + _len_field(5, VALUES[:16].tobytes()) + _len_field(5, VALUES[16:].tobytes()), False),  # split
    (_len_field(5, VALUES.tobytes()) + b"".join(_tag(n, 0) + wire._encode_varint(d)
                                                for n, d in ((1, 1), (2, 1), (3, 8), (4, 4))), True),  # legacy
], ids=["packed", "data-first", "unpacked", "split-data", "legacy-dims"])
def test_hand_encoded_blobs_read_identically_either_way(blob: bytes, fast: bool) -> None:
    data = _net(blob)
    assert (wire.plan(data) is not None) == fast
    g = reader.read_bytes(data, None)
    assert g.tensors["fc.weight"].tobytes() == VALUES.tobytes()
    assert_same(g, plain_graph(data, None))


def test_payload_that_disagrees_with_the_shape_gives_the_plain_error() -> None:
    data = _net(SHAPE_8x4 + _len_field(5, VALUES[:24].tobytes()))
    with pytest.raises(Caffe2xError) as fast:
        reader.read_bytes(data, None)
    with pytest.raises(Caffe2xError) as plain:
        plain_graph(data, None)
    assert str(fast.value) == str(plain.value) and "holds 24 values, expected 32" in str(fast.value)


def test_truncated_and_garbage_files_give_the_plain_errors(tmp_path: Path) -> None:
    data = fixtures.synthesize(fixtures.TINY_PROTOTXT, seed=5)
    for bad in (data[: len(data) // 2], data[:-3], b"\xff" * 100, data[:1]):
        assert wire.plan(bad) is None
        with pytest.raises(Caffe2xError) as fast:
            reader.read_bytes(bad, fixtures.TINY_PROTOTXT)
        with pytest.raises(Caffe2xError) as plain:
            plain_graph(bad, fixtures.TINY_PROTOTXT)
        assert str(fast.value) == str(plain.value)
    (tmp_path / "empty.caffemodel").write_bytes(b"")
    with pytest.raises(Caffe2xError, match="is empty"):
        reader.read(tmp_path / "empty.caffemodel", None)


def test_v0_layers_inside_v1_records_are_left_to_the_plain_path() -> None:
    v1 = caffe_pb2.V1LayerParameter(name="conv")
    v1.blobs.add().data.extend(VALUES.tolist())
    v1.layer.name = "conv"  # a V0 layer: Caffe's V0 nets nest the old layer here
    data = caffe_pb2.NetParameter(layers=[v1]).SerializeToString()
    assert wire.plan(data) is None


def test_views_survive_the_graph_that_made_them(tmp_path: Path) -> None:
    model, deploy = fixtures.write_model("conv_innerproduct", tmp_path)
    original = model.read_bytes()
    weight = reader.read(model, deploy).tensors["fc1.weight"]  # the graph is gone, its view lives on
    expected = plain_graph(original, None, (2, 3, 8, 7)).tensors["fc1.weight"]
    assert isinstance(root(weight), mmap.mmap) and weight.tobytes() == expected.tobytes()
    weight[0, 0] = 123.0  # copy-on-write: a private page, the file is never written
    assert model.read_bytes() == original
    assert reader.read(model, deploy).tensors["fc1.weight"].tobytes() == expected.tobytes()
    model.unlink()  # an unlinked file stays mapped while a view lives
    assert weight[0, 0] == 123.0 and weight.ravel()[1:].tobytes() == expected.ravel()[1:].tobytes()


def test_vgg16_fixture_is_vgg16_in_the_v1_format() -> None:
    shapes = fixtures.vgg_blob_shapes()
    assert sum(int(np.prod(s)) for blobs in shapes.values() for s in blobs) == 138_357_544
    text = fixtures.prototxt_for("vgg16")
    assert "layers {" in text and "type: CONVOLUTION" in text and "input_dim: 224" in text
    net = parse.parse_prototxt_text(text)  # upgraded from V1
    weighted = [layer.name for layer in net.layer if layer.type in ("Convolution", "InnerProduct")]
    assert weighted == list(shapes) and len(weighted) == 16


def test_streamed_v1_vgg_file_reads_through_views_identically(tmp_path: Path) -> None:
    from caffe2x.graph.counts import caffe_parameter_count

    small = {"stages": ((4,), (8, 8)), "fc": (16, 10), "input_shape": (1, 3, 32, 32)}
    model, text = tmp_path / "vgg.caffemodel", fixtures.vgg_prototxt(**small)
    written = fixtures.write_vgg(model, seed=1, **small)
    data = model.read_bytes()
    raw = caffe_pb2.NetParameter.FromString(data)  # as stored, before the reader's upgrade
    assert len(raw.layers) == len(text.split("layers {")) - 1 and not raw.layer
    assert all(b.HasField("num") and not b.HasField("shape") for l in raw.layers for b in l.blobs)
    fast = reader.read(model, None, (1, 3, 32, 32))
    assert_same(fast, plain_graph(data, None, (1, 3, 32, 32)))
    assert_same(reader.read(model, None, (1, 3, 32, 32)), plain_graph(data, text))
    assert caffe_parameter_count(fast) == written == sum(
        int(np.prod(s)) for blobs in fixtures.vgg_blob_shapes(**small).values() for s in blobs)
    assert all(isinstance(root(a), mmap.mmap) for k, a in fast.tensors.items() if k.endswith(".weight"))
