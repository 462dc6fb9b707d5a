"""``--emit-code``: the graph as readable, standalone PyTorch source (no caffe2x import needed to run it).

The generated file defines ``class Net(nn.Module)``: one submodule per Caffe layer declared in
``__init__`` (same names as :func:`caffe2x.targets.torch.to_module` uses, so its state_dict keys are the
``.pt`` keys), and a ``forward`` spelled out one layer per line, reading like the prototxt: a local
variable per Caffe blob, reassigned where Caffe works in place. The Caffe-specific helper modules
(pooling, BatchNorm, Scale, LRN, …) are copied from :mod:`caffe2x.targets.torch.modules` by ``inspect``, so
the generated net runs the very code that ``to_module`` runs, and constructor arguments come from the
same per-op builders; the two cannot drift apart.
"""
from __future__ import annotations

import builtins
import keyword
import re

from caffe2x._version import __version__
from caffe2x.graph.ir import Graph
from caffe2x.targets.torch.model import node_module_names, resolve_outputs
from caffe2x.targets.torch.modules import HELPER_CLASSES, helper_source
from caffe2x.targets.torch.ops import layer_spec
from caffe2x.targets.torch.sizes import GENERATED_HELPERS

#: names a local variable in generated ``forward`` must not take
_RESERVED_LOCALS = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | frozenset(
    {"self", "torch", "nn", "F", "math", "Optional", "annotations", "pool_output_size", "pool_window", "Net", "InputSizeError",
     "List", "Tuple"}
) | frozenset(c.__name__ for c in HELPER_CLASSES) | frozenset(GENERATED_HELPERS) | frozenset(
    h for helpers in GENERATED_HELPERS.values() for h in helpers)


def _local_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not clean or clean[0].isdigit():
        clean = "blob_" + clean
    return clean + "_" if clean in _RESERVED_LOCALS else clean


def _doc_safe(text: str) -> str:
    """Text that can neither end nor escape out of a generated docstring."""
    return text.replace(chr(92), "/").replace(chr(34) * 3, chr(39) * 3)


def _class_ref(cls: type) -> str:
    return f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn") else cls.__name__


def generate(graph: Graph, weights_name: str = "model.pt", module_name: str = "model", class_name: str = "Net") -> str:
    """Python source of a standalone ``nn.Module`` computing ``graph`` (its net outputs)."""
    names = node_module_names(graph)
    specs = [layer_spec(node, graph) for node in graph.nodes]
    out_names, single = resolve_outputs(graph, None)
    out_values = [graph.value(n) for n in out_names]
    keep = set(out_values)

    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_use[v] = i

    holder: dict[str, str] = {}    # local variable -> value it currently holds
    var_of: dict[str, str] = {}    # value -> local variable

    def assign(value: str, step: int) -> str:
        """A local for ``value``: its blob's name, unless that still holds a value needed later."""
        base = _local_name(value.split("@", 1)[0])
        candidate, k = base, 2
        while candidate in holder and (last_use.get(holder[candidate], -1) > step or holder[candidate] in keep):
            candidate, k = f"{base}_{k}", k + 1
        holder[candidate] = value
        var_of[value] = candidate
        return candidate

    params = [assign(v, -1) for v in graph.inputs]
    init_lines, forward_lines = [], []
    for i, (node, name, spec) in enumerate(zip(graph.nodes, names, specs)):
        kwargs = ", ".join(f"{k}={v!r}" for k, v in spec.kwargs.items())
        comment = f"  # Caffe layer {node.name!r} ({node.op})" if name != node.name else ""
        init_lines.append(f"        self.{name} = {_class_ref(spec.cls)}({kwargs}){comment}")
        args = ", ".join(var_of[v] for v in node.inputs)
        if getattr(spec.cls, "takes_list", False):  # Eltwise, Concat: one list (TorchScript takes no *args)
            args = f"[{args}]"
        if len(node.outputs) == 1:
            forward_lines.append(f"        {assign(node.outputs[0], i)} = self.{name}({args})")
        else:  # indexed, not unpacked: torch.fx cannot iterate over a traced value
            last_use[f"{node.name}_outputs@{i}"] = i + 1  # held while its parts are taken out
            whole = assign(f"{node.name}_outputs@{i}", i)
            forward_lines.append(f"        {whole} = self.{name}({args})")
            forward_lines += [f"        {assign(v, i)} = {whole}[{j}]" for j, v in enumerate(node.outputs)]
    if single:
        forward_lines.append(f"        return {var_of[out_values[0]]}")
        returns, annotation = f"the {out_names[0]!r} blob", "torch.Tensor"
    else:
        items = ", ".join(f"{n!r}: {var_of[v]}" for n, v in zip(out_names, out_values))
        forward_lines.append(f"        return {{{items}}}")
        returns, annotation = "a dict by Caffe blob name (" + ", ".join(map(repr, out_names)) + ")", \
            "dict[str, torch.Tensor]"

    title = _doc_safe(graph.name or "Caffe net")
    shapes = "; ".join(f"{n!r} [N, {', '.join(map(str, s[1:]))}]" for n, s in graph.inputs.items())
    call = ", ".join(params)
    used = [c for c in HELPER_CLASSES if any(s.cls is c for s in specs)]
    # op families' modules (caffe2x/targets/torch/<family>.py) are copied the same way: they use only
    # torch, nn, F, math, pool_window and pool_output_size
    used += list(dict.fromkeys(s.cls for s in specs if s.cls not in HELPER_CLASSES
                               and not s.cls.__module__.startswith("torch.")))
    header = f'''"""{title} as a plain PyTorch module, generated by caffe2x {__version__}.

Needs nothing but torch. Load the weights written with it and run::

    import torch
    from {module_name} import {class_name}
    net = {class_name}()   # in eval() mode
    net.load_state_dict(torch.load({weights_name!r}, weights_only=True))
    y = net({call})

Input (NCHW, float32, Caffe's preprocessing): {_doc_safe(shapes)}. Returns {_doc_safe(returns)}.
Every layer computes exactly what Caffe computes; the helper modules below spell out where Caffe
differs from torch's own layers (ceil-mode pooling windows, BatchNorm without affine part, LRN).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
'''
    signature = ", ".join(f"{p}: torch.Tensor" for p in params)
    body = "\n".join([
        f"class {class_name}(nn.Module):",
        f'    """{title}: one submodule per Caffe layer, named after it."""',
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *init_lines,
        "        self.eval()  # Caffe deploy nets are inference nets (Dropout off)",
        "",
        f"    def forward(self, {signature}) -> {annotation}:",
        *forward_lines,
    ])
    helpers = helper_source(used)
    return header + ("\n\n" + helpers if helpers else "") + "\n\n" + body + "\n"
