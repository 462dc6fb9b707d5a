"""The ONNX file written from the arrays is byte for byte what protobuf serializes the filled message to."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

import caffe2x  # noqa: E402
from caffe2x import fixtures  # noqa: E402
from caffe2x.targets.onnx import to_onnx  # noqa: E402
from caffe2x.targets.onnx.model import build  # noqa: E402
from caffe2x.targets.onnx.stream import streamable, weightless, write_model  # noqa: E402


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", ["tiny", "ssd_mobilenet_style", "googlenet"])
def test_streamed_file_is_the_serialized_filled_model_byte_for_byte(name: str, dtype: str, tmp_path: Path) -> None:
    graph = fixtures.graph(name)
    path = tmp_path / f"{name}.onnx"
    caffe2x.save(graph, path, dtype=dtype)
    assert path.read_bytes() == to_onnx(graph, dtype=dtype).SerializeToString()


def test_streaming_leaves_the_model_without_weights_and_reads_the_graph_arrays_in_place() -> None:
    graph = fixtures.graph("tiny")
    model, payloads = build(graph)
    assert streamable(model)
    out = io.BytesIO()
    n = write_model(model, payloads, out)
    assert n == len(out.getvalue())
    assert all(not t.raw_data for t in model.graph.initializer)
    parsed = onnx.ModelProto.FromString(out.getvalue())
    for t in parsed.graph.initializer:
        assert np.array_equal(onnx.numpy_helper.to_array(t), graph.tensors[t.name])


def test_a_payload_that_does_not_fill_its_dims_is_refused() -> None:
    model, payloads = build(fixtures.graph("tiny"))
    key = next(iter(payloads))
    payloads[key] = payloads[key].ravel()[:-1]
    with pytest.raises(ValueError, match=key):
        write_model(model, payloads, io.BytesIO())


def test_an_initializer_with_a_field_after_raw_data_is_not_streamed() -> None:
    model, _ = build(fixtures.graph("tiny"))
    model.graph.initializer[0].doc_string = "after raw_data in field order"
    assert not streamable(model)


def test_the_weightless_check_still_catches_a_broken_node() -> None:
    model, _ = build(fixtures.graph("tiny"))
    onnx.checker.check_model(weightless(model))
    model.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(weightless(model))
