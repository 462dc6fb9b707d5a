"""The deploy prototxt an independent Caffe importer reads: the net that computes the compared value.

OpenCV's importer needs a text net definition beside the caffemodel. Given the user's prototxt, or
else the caffemodel's own net (its structure only: :func:`caffe2x.caffe.wire.plan` cuts the blob payloads
out, so the weights are not parsed), it is normalised the way caffe2x reads it: TEST-phase layers
only, cut to the layers the compared blob needs (:func:`caffe2x.caffe.netcut.needed_layers`, which also
leaves loss and accuracy layers behind), data layers replaced by ``input`` + ``input_shape`` with the
validation batch's shape. Any Caffe importer can read the result; ``for_opencv`` adds the one
rewrite OpenCV needs to compute what Caffe computes (:func:`opencv_bottoms`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from caffe2x.caffe.netcut import needed_layers
from caffe2x.caffe.parse import parse_caffemodel_bytes, parse_prototxt_text
from caffe2x.caffe.reader import _in_test_phase, _read_file, _read_text, is_data_layer
from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph

PathLike = str | os.PathLike[str]


def _definition(model: PathLike, prototxt: PathLike | None) -> Any:
    if prototxt is not None:
        return parse_prototxt_text(_read_text(prototxt), str(prototxt))
    from caffe2x.caffe.wire import map_file, plan

    buf = map_file(model) or _read_file(model)
    layout = plan(buf)
    net = parse_caffemodel_bytes(layout.structure if layout is not None else bytes(buf), str(model))
    for layer in net.layer:
        del layer.blobs[:]
    return net


def opencv_bottoms(layers: list[Any]) -> None:
    """Rewrite ``layers`` in place so that OpenCV 4.x computes Caffe's numbers where it reads a layer
    differently: its Axpy computes ``a * bottom[2] + bottom[1]`` where SENet's ``axpy_layer.cpp``
    computes ``a * bottom[1] + bottom[2]``, so the two blob bottoms are swapped."""
    for layer in layers:
        if layer.type == "Axpy" and len(layer.bottom) == 3:
            a, x, y = list(layer.bottom)
            del layer.bottom[:]
            layer.bottom.extend([a, y, x])


def deploy_text(model: PathLike, prototxt: PathLike | None, graph: Graph, value: str, batch: int,
                for_opencv: bool = False) -> str:
    """Text ``NetParameter`` computing ``value`` (a graph value) from ``graph``'s inputs, batch ``batch``
    (with ``for_opencv``, rewritten by :func:`opencv_bottoms`)."""
    from google.protobuf import text_format

    net = _definition(model, prototxt)
    layers = [layer for layer in net.layer if _in_test_phase(layer)]
    producer = next((n.name for n in graph.nodes if value in n.outputs), None)
    blob = graph.blob_name(value)
    names = {layer.name for layer in layers}
    request = f"{blob}@{producer}" if producer in names else blob
    kept = [layer for layer in needed_layers(layers, [request], inputs=list(graph.inputs))
            if layer.type != "Input" and not is_data_layer(layer)]
    if not kept:
        raise Caffe2xError(f"no layer of the net computes {blob!r}")
    if for_opencv:
        opencv_bottoms(kept)
    del net.layer[:]
    net.layer.extend(kept)
    del net.input[:]
    del net.input_dim[:]
    del net.input_shape[:]
    for name, shape in graph.inputs.items():
        net.input.append(name)
        net.input_shape.add().dim.extend([batch, *shape[1:]])
    return text_format.MessageToString(net)


def write_deploy(path: Path, model: PathLike, prototxt: PathLike | None, graph: Graph, value: str, batch: int,
                 for_opencv: bool = False) -> Path:
    Path(path).write_text(deploy_text(model, prototxt, graph, value, batch, for_opencv), encoding="utf-8")
    return Path(path)
