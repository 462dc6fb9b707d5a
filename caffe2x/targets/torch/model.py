"""The graph as a ``torch.nn.Module`` (:func:`to_module`): one submodule per Caffe layer, named by one rule.

Module naming rule (used identically by :func:`to_module`, :func:`write` and the generated code)
----------------------------------------------------------------------------------------------------
A layer whose name is already a usable attribute name keeps it. Any other layer name has every character
outside ``[A-Za-z0-9_]`` replaced by ``_`` (``inception_3a/1x1`` -> ``inception_3a_1x1``), ``layer_``
prepended if it is empty or starts with a digit, ``_`` appended if it is a Python keyword or an attribute
``nn.Module`` already has (``forward``, ``eval``, ``type``, …), and ``_2``, ``_3``, … appended if an
earlier layer already took the result. Layers are named in graph order, names that need no change first,
so a valid name is never displaced by a sanitised one.

"""
from __future__ import annotations

import functools
import keyword
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.targets.torch.ops import layer_spec


# =========================================================================== naming
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@functools.lru_cache(maxsize=1)
def _reserved_names() -> frozenset[str]:
    """Names a layer module may not take: attributes of nn.Module / CaffeNet and Python keywords."""
    return frozenset(dir(nn.Module())) | frozenset(dir(CaffeNet)) | frozenset(CaffeNet.INSTANCE_ATTRS) \
        | frozenset(keyword.kwlist)


def sanitize(name: str) -> str:
    """A layer name made into an attribute name (without deduplication); see the module docstring."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not clean or clean[0].isdigit():
        clean = "layer_" + clean
    if clean in _reserved_names():
        clean += "_"
    return clean


def node_module_names(graph: Graph) -> list[str]:
    """The submodule name of each node, in graph order, by the documented rule. Names that need no
    change are given out first, so ``a_b`` keeps its name even when an earlier ``a/b`` sanitises to it;
    a repeated Caffe name (which the graph does not forbid) is deduplicated like any collision."""
    reserved = _reserved_names()
    names: list[str | None] = [None] * len(graph.nodes)
    taken: set[str] = set()
    for i, node in enumerate(graph.nodes):  # pass 1: names usable as they are
        if _IDENTIFIER.match(node.name) and node.name not in reserved and node.name not in taken:
            names[i] = node.name
            taken.add(node.name)
    for i, node in enumerate(graph.nodes):  # pass 2: everything else, sanitised and deduplicated
        if names[i] is not None:
            continue
        base = sanitize(node.name)
        candidate, k = base, 2
        while candidate in taken or candidate in reserved:
            candidate, k = f"{base}_{k}", k + 1
        names[i] = candidate
        taken.add(candidate)
    return [n for n in names if n is not None]


def module_names(graph: Graph) -> dict[str, str]:
    """Caffe layer name -> submodule name (for a repeated Caffe name: its first layer's)."""
    result: dict[str, str] = {}
    for node, name in zip(graph.nodes, node_module_names(graph)):
        result.setdefault(node.name, name)
    return result


# =========================================================================== the module
@dataclass(frozen=True)
class Step:
    """One layer of the forward pass: which submodule, which values in and out, which values to drop
    afterwards (nothing reads them any more), so memory stays at a few live activations."""

    module: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    release: tuple[str, ...]


class CaffeNet(nn.Module):
    """A Caffe net as a ``torch.nn.Module`` (see :func:`to_module`).

    ``forward`` takes the input as one tensor (single-input nets), as tensors in ``input_names`` order,
    as keywords, or as one dict by input name; it returns the single output blob as a tensor, or a dict
    keyed by Caffe blob name when there are several.
    """

    #: plain attributes set in __init__ (layer modules may not take these names)
    INSTANCE_ATTRS = ("input_names", "output_names", "steps", "output_values", "single_output", "caffe_names")

    def __init__(self, layers: Sequence[tuple[str, nn.Module]], steps: Sequence[Step], input_names: Sequence[str],
                 output_names: Sequence[str], output_values: Sequence[str], single_output: bool,
                 caffe_names: Mapping[str, str]) -> None:
        super().__init__()
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.output_values = tuple(output_values)
        self.single_output = single_output
        self.steps = tuple(steps)
        self.caffe_names = dict(caffe_names)  # module name -> Caffe layer name
        for name, module in layers:
            self.add_module(name, module)

    def _feeds(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
        if len(args) == 1 and isinstance(args[0], Mapping):
            given = dict(args[0])
        else:
            if len(args) > len(self.input_names):
                raise Caffe2xError(f"the net takes {len(self.input_names)} input(s) "
                                   f"({', '.join(self.input_names)}), got {len(args)}")
            given = dict(zip(self.input_names, args))
        given.update(kwargs)
        for name in self.input_names:
            if name not in given:
                raise Caffe2xError(f"no value given for input {name!r}")
        unknown = [k for k in given if k not in self.input_names]
        if unknown:
            raise Caffe2xError(f"the net has no input named {unknown[0]!r} (inputs: {', '.join(self.input_names)})")
        return given

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        values = self._feeds(args, kwargs)
        for step in self.steps:
            out = getattr(self, step.module)(*[values[v] for v in step.inputs])
            if len(step.outputs) == 1:
                values[step.outputs[0]] = out
            else:
                values.update(zip(step.outputs, out))
            for v in step.release:
                del values[v]
        if self.single_output:
            return values[self.output_values[0]]
        return {name: values[v] for name, v in zip(self.output_names, self.output_values)}


def _plan(graph: Graph, modules: Sequence[str], keep: set[str]) -> list[Step]:
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_use[v] = i
    steps = []
    for i, (node, name) in enumerate(zip(graph.nodes, modules)):
        release = tuple(dict.fromkeys(v for v in node.inputs if last_use[v] == i and v not in keep))
        # a value produced but never read (a side output) is dropped right away
        unused = tuple(v for v in node.outputs if v not in last_use and v not in keep)
        steps.append(Step(name, tuple(node.inputs), tuple(node.outputs), release + unused))
    return steps


def resolve_outputs(graph: Graph, outputs: str | Sequence[str] | None) -> tuple[list[str], bool]:
    """Caffe blob names to return, and whether the result is a single tensor (``reference.run``'s rule)."""
    from caffe2x.graph.reference import resolve_outputs as _resolve

    names = _resolve(graph, outputs)
    single = isinstance(outputs, str) or (outputs is None and len(names) == 1)
    return names, single


def to_module(graph: Graph, outputs: str | Sequence[str] | None = None, *, share_memory: bool = False) -> CaffeNet:
    """A ``torch.nn.Module`` computing ``graph`` with Caffe's semantics, in ``eval()`` mode.

    Input is NCHW (float32, or whatever dtype the module is cast to). ``outputs`` names the Caffe
    blobs to return (default: the net's outputs); one blob gives a tensor, several a dict by blob name.
    Its ``state_dict()`` has exactly the keys :func:`write` saves.

    By default the module owns one copy of the weights: train it freely, the graph (and the mapped
    caffemodel behind it) never changes. ``share_memory=True`` makes every parameter a view of the
    graph's array (``torch.from_numpy``, no copy), which is what writing a ``.pt`` uses; an in-place
    update of such a module (an optimizer step) then changes the graph's tensors too (never the file:
    the caffemodel is mapped copy-on-write, see :mod:`caffe2x.caffe.wire`).
    """
    names = node_module_names(graph)
    out_names, single = resolve_outputs(graph, outputs)
    out_values = [graph.value(n) for n in out_names]
    layers = [(name, layer_spec(node, graph).instantiate(node.name, share_memory))
              for node, name in zip(graph.nodes, names)]
    steps = _plan(graph, names, set(out_values))
    net = CaffeNet(layers, steps, list(graph.inputs), out_names, out_values, single,
                   {name: node.name for node, name in zip(graph.nodes, names)})
    return net.eval()

