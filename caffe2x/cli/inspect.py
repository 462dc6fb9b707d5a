"""``caffe2x inspect``: what a model holds, layer by layer."""
from __future__ import annotations

import argparse
import json
from typing import Any

from caffe2x.cli.args import EXIT_OK, add_model_args
from caffe2x.graph.counts import caffe_parameter_count, learned_parameter_count
from caffe2x.graph.ir import Graph
from caffe2x.graph.pins import describe_pins, pinning_layers
from caffe2x.graph.reshape import axis_name, describe_inputs, free_input_dims


def summary(graph: Graph) -> dict[str, Any]:
    """JSON-ready description: inputs (and which of their dims are free: the sizes the net runs at),
    outputs, and per layer its type, output shapes and parameters."""
    inverse = {v: b for b, v in graph.blobs.items()}
    layers = []
    for n in graph.nodes:
        layers.append({
            "name": n.name,
            "type": n.op,
            "inputs": [inverse.get(v, v) for v in n.inputs],
            "outputs": {inverse.get(v, v.split("@")[0]): list(graph.shapes[v]) for v in n.outputs},
            "parameters": int(sum(graph.tensors[k].size for k in n.params.values())),
            "tensors": {role: list(graph.tensors[k].shape) for role, k in n.params.items()},
        })
    dims = free_input_dims(graph)
    pins = pinning_layers(graph)
    return {
        "name": graph.name,
        "inputs": {k: list(v) for k, v in graph.inputs.items()},
        # per input dim: free (any size from "minimum" on) or the sizes it takes ("accepts" ranges)
        "input_dims": {k: [d.to_json() for d in ds] for k, ds in dims.items()},
        "input_dims_text": describe_inputs(dims),
        # per input, the layers whose shape rule fixes or bounds a dim (by dim name): why a dim is not free
        "pinned_by": {k: {axis_name(len(graph.inputs[k]), a): list(ls) for a, ls in axes.items()}
                      for k, axes in pins.items()},
        "pinned_by_text": describe_pins(graph, pins),
        "outputs": {inverse.get(v, v): list(graph.shapes[v]) for v in graph.outputs},
        "layers": layers,
        "num_layers": len(layers),
        "num_parameters": graph.num_parameters(),
        "num_caffe_parameters": caffe_parameter_count(graph),
        "num_learned_parameters": learned_parameter_count(graph),
    }


def format_table(info: dict[str, Any]) -> str:
    rows = [("layer", "type", "output shape", "params")]
    for l in info["layers"]:
        shapes = " ".join("x".join(map(str, s)) for s in l["outputs"].values())
        rows.append((l["name"], l["type"], shapes, f"{l['parameters']:,}" if l["parameters"] else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{info['name']}: inputs " + ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in info["inputs"].items()),
             f"input sizes: {info['input_dims_text']}"]
    if info["pinned_by_text"]:
        lines.append(f"input sizes set by: {info['pinned_by_text']}")
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    lines.append(f"{info['num_layers']} layers, {info['num_caffe_parameters']:,} parameters in the caffemodel "
                 f"({info['num_parameters']:,} in the graph: BatchNorm factors are divided out; "
                 f"{info['num_learned_parameters']:,} learned, BatchNorm statistics excluded)")
    return "\n".join(lines)


#: the process may end as soon as ``run`` returns (:func:`caffe2x.cli.main._exit_now`)
QUICK_EXIT = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from caffe2x.loading import read_model

    graph = read_model(args.model, args.prototxt, args.input_shape, outputs=args.outputs, proto=args.proto)
    info = summary(graph)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_table(info))
    return EXIT_OK
