"""The graph as an ONNX ``ModelProto`` (:func:`to_onnx`), the ``.onnx`` file, and running it with onnxruntime."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from caffe2x._version import __version__
from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.graph.reference import resolve_outputs
from caffe2x.targets.onnx import dynamic
from caffe2x.targets.onnx.ops import _PROTO_LIMIT, IR_VERSION, OPS, OPSET, Builder, batch_moved
from caffe2x.targets.onnx.stream import streamable, weightless, write_model


# --------------------------------------------------------------------------- model
def _plan_outputs(b: Builder, requested: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Give each requested output (name, value) its Caffe name. Returns the graph outputs as
    (ONNX name, value) and the (name, value) pairs that need an ``Identity`` (a value requested
    twice, or a graph input requested under another name)."""
    graph = b.graph
    producers = graph.producers()
    # an earlier value carrying a name that an output claims for a later value gets renamed
    for n, v in requested:
        if n != v and n in graph.shapes and n not in graph.inputs and n not in b.names:
            b.names[n] = b.fresh(f"{n}@{producers[n].name}")
    named = {v for n, v in requested if n == v}  # values asked for under their own name keep it
    outputs: list[tuple[str, str]] = []
    identities: list[tuple[str, str]] = []
    for n, v in requested:
        if n == v:
            outputs.append((n, v))
        elif n in graph.inputs:
            # a blob rewritten in place from the graph input: the input keeps the blob's name
            outputs.append((b.name(v), v))
        elif v in named or v in graph.inputs:
            identities.append((n, v))
            outputs.append((n, v))
        else:
            named.add(v)
            b.names[v] = n
            outputs.append((n, v))
    return list(dict.fromkeys(outputs)), identities


def to_onnx(graph: Graph, outputs: str | Sequence[str] | None = None, dtype: str = "float32") -> onnx.ModelProto:
    """The graph as an ONNX ``ModelProto`` (opset 17). ``outputs``: Caffe blob or value names (the
    net's outputs by default); each becomes a graph output under the name given. ``dtype``: how the
    initializers are stored (float32, float16 or bfloat16; computation is float32 throughout)."""
    model, payloads = build(graph, outputs, dtype)
    for t in model.graph.initializer:
        t.raw_data = payloads.pop(t.name).tobytes()
    return model


def build(graph: Graph, outputs: str | Sequence[str] | None = None,
          dtype: str = "float32") -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """:func:`to_onnx`'s model with initializers that hold no data yet, and by initializer name the
    array whose bytes are its ``raw_data`` (graph arrays themselves where stored as float32)."""
    names = list(dict.fromkeys(resolve_outputs(graph, outputs)))
    requested = [(n, graph.value(n)) for n in names]
    b = Builder(graph, dtype)
    symbolic, b.varying = dynamic.plan(graph)
    outs, identities = _plan_outputs(b, requested)
    for node in graph.nodes:
        OPS.lookup(node.op, node.name)(b, node)
    for n, v in identities:
        b.add("Identity", [b.name(v)], n, f"output/{n}")
    batches = {shape[0] for shape in graph.inputs.values()}
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)
              for name, dims in dynamic.input_dims(graph, symbolic).items()]
    outputs_info = []
    counted = {out for node in graph.nodes if node.op == "DetectionOutput" for out in node.outputs}
    for n, v in outs:
        shape = graph.shapes[v]
        if not shape:  # a 0-d blob (e.g. a Reduction over every axis)
            outputs_info.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, []))
            continue
        if batch_moved(b, v):  # the batch is not axis 0 (after the OCR fork's Transpose): no dim is fixed
            outputs_info.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * len(shape)))
            continue
        lead = "N" if len(batches) == 1 and shape[0] in batches else None
        varying = b.varying.get(v, set())
        if v in counted:  # DetectionOutput: (1, 1, rows, 7) at any batch, as many rows as detections
            varying, lead = varying | {2}, shape[0]
        rest = [None if i in varying else d for i, d in enumerate(shape) if i > 0]
        outputs_info.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, [lead, *rest]))
    onnx_graph = helper.make_graph(b.nodes, graph.name or "caffe2x", inputs, outputs_info, initializer=b.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="caffe2x", producer_version=__version__)
    model.ir_version = IR_VERSION
    model.doc_string = f"converted from Caffe by caffe2x {__version__}; weights stored as {dtype}"
    return model, b.payloads


def write(graph: Graph, path: str | os.PathLike[str], options: Any) -> list[str]:
    """Write the graph as a ``.onnx`` file (tensors stored as ``options.dtype``, compute in float32)."""
    if options.profile is not None:
        raise Caffe2xError(f"the onnx target has no naming profile {options.profile!r}")
    model, payloads = build(graph, dtype=options.dtype)
    # the size before any weight is copied into the message: the weightless model plus each payload and
    # at most 16 bytes of field tags and lengths per initializer (an upper bound of the file's size)
    size = model.ByteSize() + sum(p.nbytes + 16 for p in payloads.values())
    if size > _PROTO_LIMIT:
        raise Caffe2xError(f"the ONNX model would be {size / 2**30:.1f} GiB, over protobuf's 2 GiB "
                           f"limit for one file; write it as float16 or to another target")
    if streamable(model):  # raw_data straight from the arrays (views of the mapped caffemodel): no copy
        # the checker on the model with zero-element initializers: everything but the weights' bytes,
        # whose sizes write_model checks against the dims (checking the file would parse it whole in
        # C++, one more copy of the weights: ResNet-50's write peaked at import onnx + 3 x the file)
        onnx.checker.check_model(weightless(model))
        with open(path, "wb") as f:
            write_model(model, payloads, f)
    else:
        for t in model.graph.initializer:
            t.raw_data = payloads.pop(t.name).tobytes()
        onnx.save_model(model, str(path))
        del model, payloads  # the checker reads the file (in C++) instead of serializing the message once more
        onnx.checker.check_model(str(path))
    notes = []
    if options.dtype != "float32":
        notes.append(f"onnx: weights stored as {options.dtype}, each cast to float32 in the graph; "
                     f"the model computes in float32")
    return notes


def _ort_errors() -> tuple[type[BaseException], ...]:
    import onnxruntime as ort

    return tuple(getattr(ort.capi.onnxruntime_pybind11_state, n) for n in
                 ("Fail", "InvalidGraph", "NotImplemented", "InvalidArgument", "RuntimeException",
                  "NoSuchFile", "InvalidProtobuf", "EPFail")
                 if hasattr(ort.capi.onnxruntime_pybind11_state, n))


def ort_session(model_or_path: onnx.ModelProto | bytes | str | os.PathLike[str]) -> Any:
    """An onnxruntime ``InferenceSession`` on the CPU (2 intra-op threads) for a model, a serialized
    model or an ``.onnx`` file."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    # threads sleep instead of spinning between ops: on a 2-core machine with other work (load ~2), ResNet-50
    # one photo at a time took 0.6 s for 4 photos spinning, 0.38 s not
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    if isinstance(model_or_path, onnx.ModelProto):
        source: bytes | str = model_or_path.SerializeToString()
    elif isinstance(model_or_path, bytes):
        source = model_or_path
    else:
        source = str(Path(model_or_path))
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
    except _ort_errors() as exc:  # an unknown op, a bad graph: the model's fault, not caffe2x's
        raise Caffe2xError(f"onnxruntime refuses the model: {str(exc).splitlines()[0][:300]}") from None


def run_session(sess: Any, x: np.ndarray | Mapping[str, np.ndarray],
                output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run a session from :func:`ort_session`; outputs by name."""
    if isinstance(x, Mapping):
        feeds = {k: np.asarray(v, dtype=np.float32) for k, v in x.items()}
    else:
        inputs = sess.get_inputs()
        if len(inputs) != 1:
            raise Caffe2xError(f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}): pass a dict")
        feeds = {inputs[0].name: np.asarray(x, dtype=np.float32)}
    names = list(output_names) if output_names is not None else [o.name for o in sess.get_outputs()]
    try:
        return dict(zip(names, sess.run(names, feeds)))
    except _ort_errors() as exc:
        raise Caffe2xError(f"onnxruntime cannot run the model: {str(exc).splitlines()[0][:300]}") from None


def run_onnx(model_or_path: onnx.ModelProto | str | os.PathLike[str], x: np.ndarray | Mapping[str, np.ndarray],
             output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run an ONNX model with onnxruntime on the CPU (2 intra-op threads); outputs by name."""
    return run_session(ort_session(model_or_path), x, output_names)
