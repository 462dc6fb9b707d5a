"""Writing a ``.onnx`` file with the weights streamed from the graph's arrays.

Why: an ONNX file is one protobuf ``ModelProto``, and the Python protobuf runtime (upb) holds a model
as one more copy of every weight, serializes it into a second one, and ``ByteSize`` or
``check_model`` of an in-memory model serialize it again: writing VGG-16 (553 MB) peaked at four
times the file. Here the model is serialized without its weights' data and each initializer's
``raw_data`` (``TensorProto`` field 9) is written straight from the array (for float32, the graph's
own array: a view of the mapped caffemodel), tag and length first, so no message ever holds the
weights. The file parses to exactly the message :func:`~.model.to_onnx`
returns (``tests/test_onnx_target.py``). Field numbers are ONNX's: ``ModelProto.graph`` = 7,
``GraphProto.initializer`` = 5, ``TensorProto.raw_data`` = 9. Protobuf readers accept fields in any
order, so the graph record may follow the model's other fields and the initializers the graph's.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx


_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
_LEN = 2  # wire type of length-delimited fields


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _record(field: int, length: int) -> bytes:
    """Tag and length of a length-delimited field whose content (``length`` bytes) follows."""
    return _varint(field << 3 | _LEN) + _varint(length)


def _payload_bytes(payload: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(payload)).cast("B")


class StreamedModel:
    """A model whose initializers carry no data yet, and the arrays holding that data by name."""

    def __init__(self, model: onnx.ModelProto, payloads: Mapping[str, np.ndarray]) -> None:
        head = onnx.ModelProto()
        head.CopyFrom(model)  # cheap: the initializers hold no data
        head.ClearField("graph")
        graph = onnx.GraphProto()
        graph.CopyFrom(model.graph)
        graph.ClearField("initializer")
        self.head = head.SerializeToString()
        self.graph = graph.SerializeToString()
        self.tensors: list[tuple[bytes, np.ndarray]] = []
        for t in model.graph.initializer:
            self.tensors.append((t.SerializeToString(), payloads[t.name]))

    def _tensor_size(self, meta: bytes, payload: np.ndarray) -> int:
        return len(meta) + len(_record(_TENSOR_RAW_DATA, payload.nbytes)) + payload.nbytes

    def graph_size(self) -> int:
        sizes = (self._tensor_size(meta, payload) for meta, payload in self.tensors)
        return len(self.graph) + sum(len(_record(_GRAPH_INITIALIZER, n)) + n for n in sizes)

    def size(self) -> int:
        """The file's exact size in bytes (protobuf's 2 GiB limit applies to it)."""
        n = self.graph_size()
        return len(self.head) + len(_record(_MODEL_GRAPH, n)) + n

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(Path(path), "wb") as f:
            f.write(self.head)
            f.write(_record(_MODEL_GRAPH, self.graph_size()))
            f.write(self.graph)
            for meta, payload in self.tensors:
                f.write(_record(_GRAPH_INITIALIZER, self._tensor_size(meta, payload)))
                f.write(meta)
                f.write(_record(_TENSOR_RAW_DATA, payload.nbytes))
                f.write(_payload_bytes(payload))


def with_outputs(path: str | os.PathLike[str], outputs: list[onnx.ValueInfoProto]) -> bytes:
    """The bytes of the ``.onnx`` at ``path`` followed by one more ``ModelProto.graph`` record holding
    only ``outputs``: parsed, the file's graph with those outputs appended to its own. The file is
    mapped, so its bytes are copied once, into the result."""
    import mmap

    extra = onnx.GraphProto()
    extra.output.extend(outputs)
    tail = extra.SerializeToString()
    with open(Path(path), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not size:
            return _record(_MODEL_GRAPH, len(tail)) + tail
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return b"".join((mm, _record(_MODEL_GRAPH, len(tail)), tail))
