"""The ONNX target's read-back side for validation: ``onnx.load`` of the ``.onnx`` run by
``onnxruntime.InferenceSession`` (CPU). The values asked for are added as graph outputs to the loaded
model, found through the node names the writer gives (each node carries its Caffe layer's name)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from caffe2x.errors import Caffe2xError, one_line
from caffe2x.graph.ir import Graph
from caffe2x.graph.numeric import from_bfloat16_bits
from caffe2x.targets import StoredTensor
from caffe2x.targets.onnx.model import ort_session, run_session, write


def read_model(path: Path, external_data: bool = True) -> onnx.ModelProto:
    """``onnx.load`` of ``path``; ``external_data=False`` leaves tensors stored in side files unread."""
    try:
        return onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a broken file
        raise Caffe2xError(f"{Path(path).name} does not load with onnx.load: {one_line(exc)}") from None


class OnnxRunner:
    """One ``InferenceSession`` kept for the values last asked for, so running a batch one image at a
    time builds it once.

    The names of the model are kept (which node computes which value). A session that needs values
    beyond the file's graph outputs is built from the model :func:`load` read (the file again with
    ``onnx.load`` for any later such session) with those values added as outputs, serialized, and both
    copies dropped once onnxruntime holds its own; a session that asks for the file's outputs only is
    built from the file itself."""

    def __init__(self, graph: Graph, proto: onnx.ModelProto, path: Path) -> None:
        self.graph = graph
        self.path = Path(path)
        self._proto: onnx.ModelProto | None = proto  # taken by the first session that adds outputs
        self._by_node = {n.name: list(n.output) for n in proto.graph.node}
        self._known = {o for outs in self._by_node.values() for o in outs} | {i.name for i in proto.graph.input}
        self._outputs = {o.name for o in proto.graph.output}
        self._session: tuple[tuple[str, ...], Any] | None = None

    def onnx_names(self, values: Sequence[str]) -> list[str]:
        """The ONNX tensor name of each graph value: the tensor named after it (the writer names each
        value's tensor so unless a naming profile renamed it), else output ``i`` of the node named after
        its layer. The tensor first: a layer written as several nodes may give its first node's name to
        a node whose outputs are not the layer's (a masked pooling's ``MaxPool`` has int64 indices as
        output 1, the float mask is the ``Cast`` after it)."""
        producers = self.graph.producers()
        names = []
        for v in values:
            node = producers.get(v)
            if v in self._known:
                names.append(v)
            elif node is not None and node.name in self._by_node and node.outputs.index(v) < len(self._by_node[node.name]):
                names.append(self._by_node[node.name][node.outputs.index(v)])
            elif v in self._known:
                names.append(v)
            else:
                raise Caffe2xError(f"the ONNX model has no tensor for value {v!r}")
        return names

    def run(self, x: np.ndarray, values: Sequence[str]) -> dict[str, np.ndarray]:
        values = list(values)
        names = self.onnx_names(values)
        key = tuple(dict.fromkeys(names))
        if self._session is None or self._session[0] != key:
            self._session = None  # the previous session goes before the next is built
            extra = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in key if n not in self._outputs]
            if not extra:
                self._proto = None  # not needed for this session: its weights need not stay in memory
                self._session = (key, ort_session(self.path))
            else:
                proto, self._proto = self._proto or read_model(self.path), None  # side files read in too
                proto.graph.output.extend(extra)
                data = proto.SerializeToString()
                del proto
                self._session = (key, ort_session(data))
        got = run_session(self._session[1], x, list(key))
        return {v: np.asarray(got[n], dtype=np.float32) for v, n in zip(values, names)}


def load(path: Path, graph: Graph) -> OnnxRunner:
    proto = read_model(path, external_data=False)  # the names only; weights are read when a session is built
    if any(uses_external_data(t) for t in proto.graph.initializer):
        try:  # a missing or short side file fails here, at load, as it would in onnx.load
            load_external_data_for_model(proto, str(Path(path).parent))
        except Exception as exc:  # noqa: BLE001
            raise Caffe2xError(f"{Path(path).name} does not load with onnx.load: {one_line(exc)}") from None
    return OnnxRunner(graph, proto, path)


def stored_tensors(path: Path, graph: Graph) -> dict[str, StoredTensor]:
    """The initializers (the writer names them by graph tensor key), bfloat16 widened to float32."""
    out = {}
    for init in read_model(path).graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.uint16 or str(arr.dtype) == "bfloat16":
            arr = from_bfloat16_bits(arr.view(np.uint16))
        out[init.name] = StoredTensor(init.name, np.asarray(arr, dtype=np.float32))
    return out


__all__ = ["write", "load", "stored_tensors", "OnnxRunner", "read_model"]
