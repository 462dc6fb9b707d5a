"""Writing a ``.onnx`` file with every initializer's ``raw_data`` taken straight from its array.

``onnx.save_model`` needs the weights inside the message: each ``raw_data = arr.tobytes()`` is one
copy of the weights and ``SerializeToString`` a second, on top of the mapped caffemodel's pages
(measured on ResNet-50, 98 MiB: the write peaked at ``import onnx`` + 3 x the file). Here protobuf
serializes everything but the weights -- the model without its graph, the graph without its
initializers, each initializer without ``raw_data`` -- and the file is those bytes with the
length-delimited frames around them and each array's buffer written in between. Protobuf puts fields
in field-number order, so splitting each message at the nested field's number gives exactly the bytes
``SerializeToString`` would (``tests/targets/test_onnx_stream.py`` compares them).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import IO, Any

import numpy as np

#: field numbers in onnx.proto: ModelProto.graph, GraphProto.initializer, TensorProto.raw_data
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
_LEN = 2  # wire type of a length-delimited field
#: bytes per element of the TensorProto data types caffe2x stores (FLOAT, FLOAT16, BFLOAT16, INT64, INT32)
_ITEMSIZE = {1: 4, 10: 2, 16: 2, 7: 8, 6: 4}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _frame(field: int, length: int) -> bytes:
    """Tag and length of a length-delimited field (the payload follows)."""
    return _varint(field << 3 | _LEN) + _varint(length)


def _split(message: Any, field: int) -> tuple[bytes, bytes]:
    """``message`` serialized without ``field``, cut where ``field`` goes: (fields before it, after it)."""
    head, tail = type(message)(), type(message)()
    head.CopyFrom(message)
    tail.CopyFrom(message)
    for fd, _ in message.ListFields():
        (tail if fd.number < field else head).ClearField(fd.name)
    head.ClearField(message.DESCRIPTOR.fields_by_number[field].name)
    tail.ClearField(message.DESCRIPTOR.fields_by_number[field].name)
    return head.SerializeToString(), tail.SerializeToString()


def weightless(model: Any) -> Any:
    """A copy of ``model`` whose initializers have zero elements: what ``onnx.checker.check_model``
    checks of everything but the weights, at the size of the model's structure."""
    copy = type(model)()
    copy.CopyFrom(model)
    for t in copy.graph.initializer:
        del t.dims[:]
        t.dims.append(0)
    return copy


def streamable(model: Any) -> bool:
    """Whether :func:`write_model` can frame this model: no initializer sets a field numbered after
    ``raw_data`` (which would have to follow it) and none holds data yet."""
    return all(fd.number < _TENSOR_RAW_DATA for t in model.graph.initializer for fd, _ in t.ListFields())


def write_model(model: Any, payloads: dict[str, np.ndarray], out: IO[bytes]) -> int:
    """Write ``model`` with each initializer's ``raw_data`` = ``payloads[name]``'s bytes (little-endian,
    C order, as ``tobytes`` gives them) to ``out``; returns the bytes written. The model is left as it
    was (initializers without data); ``payloads`` are read, never copied."""
    model_head, model_tail = _split(model, _MODEL_GRAPH)
    graph_head, graph_tail = _split(model.graph, _GRAPH_INITIALIZER)
    records: list[tuple[bytes, memoryview]] = []
    for t in model.graph.initializer:
        data = _bytes_of(payloads[t.name])
        want = math.prod(t.dims) * _ITEMSIZE.get(t.data_type, 0)
        if data.nbytes != want:  # what onnx.checker checks of raw_data; a bug here, never bad input
            raise ValueError(f"initializer {t.name!r}: {data.nbytes} bytes for dims {list(t.dims)}, need {want}")
        body = t.SerializeToString()
        raw = _frame(_TENSOR_RAW_DATA, data.nbytes)
        records.append((_frame(_GRAPH_INITIALIZER, len(body) + len(raw) + data.nbytes) + body + raw, data))
    graph_len = len(graph_head) + sum(len(r) + d.nbytes for r, d in records) + len(graph_tail)
    written = 0
    for chunk in _chunks(model_head, _frame(_MODEL_GRAPH, graph_len), graph_head, records, graph_tail, model_tail):
        written += out.write(chunk)
    return written


def _chunks(model_head: bytes, graph_frame: bytes, graph_head: bytes, records: list[tuple[bytes, memoryview]],
            graph_tail: bytes, model_tail: bytes) -> Iterable[bytes | memoryview]:
    yield model_head + graph_frame + graph_head
    for record, data in records:
        yield record
        yield data
    yield graph_tail + model_tail


def _bytes_of(arr: np.ndarray) -> memoryview:
    """The array's buffer as bytes in ``tobytes`` order, without a copy where it is already laid out so."""
    a = np.asarray(arr)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and np.little_endian is False):
        a = a.astype(a.dtype.newbyteorder("<"))
    return memoryview(np.ascontiguousarray(a)).cast("B")


