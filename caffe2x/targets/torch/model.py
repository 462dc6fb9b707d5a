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

import copy
import functools
import keyword
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

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


class CaffeNet(fx.GraphModule):
    """A Caffe net as a ``torch.nn.Module`` (see :func:`to_module`).

    It is a ``torch.fx.GraphModule`` whose graph calls one submodule per Caffe layer, so its ``forward``
    is real Python code with one named argument per net input (``forward(self, data)``; non-identifier
    input names are sanitised like layer names, :attr:`arg_names`) and no Python logic of its own:
    ``torch.jit.script``, ``torch.jit.trace``, ``torch.fx.symbolic_trace`` and ``torch.export`` see plain
    tensor code (``print(net.code)`` shows it). The graph is rebuilt from :attr:`steps` by
    :meth:`rebuild`, never by tracing.

    Called directly (eager), it also takes the inputs as keywords by Caffe input name or as one dict by
    input name, and a missing or unknown input is a :class:`~caffe2x.Caffe2xError`. It returns the single
    output blob as a tensor, or a dict keyed by Caffe blob name when there are several.
    """

    #: plain attributes set by :meth:`build` (layer modules may not take these names)
    INSTANCE_ATTRS = ("input_names", "arg_names", "output_names", "steps", "output_values", "single_output",
                      "caffe_names")

    def __init__(self, root: nn.Module | dict[str, Any], graph: fx.Graph, class_name: str = "CaffeNet") -> None:
        """GraphModule's own signature (deepcopy and FX passes construct it so); use :meth:`build`."""
        super().__init__(root, graph, class_name)

    @classmethod
    def build(cls, layers: Sequence[tuple[str, nn.Module]], steps: Sequence[Step], input_names: Sequence[str],
              output_names: Sequence[str], output_values: Sequence[str], single_output: bool,
              caffe_names: Mapping[str, str]) -> CaffeNet:
        root = nn.Module()
        for name, module in layers:
            root.add_module(name, module)
        attrs = {"input_names": tuple(input_names), "arg_names": tuple(argument_names(input_names)),
                 "output_names": tuple(output_names), "output_values": tuple(output_values),
                 "single_output": bool(single_output), "steps": tuple(steps), "caffe_names": dict(caffe_names)}
        net = cls(root, _fx_graph(root, **attrs))
        # GraphModule keeps the submodules its graph calls; a layer no output needs is kept too (not
        # called), in graph order, so the state_dict is the graph's whole set of tensors either way
        net._modules = dict(root._modules)
        for key, value in attrs.items():
            setattr(net, key, value)
        return net

    def rebuild(self) -> None:
        """Regenerate ``forward`` from :attr:`steps` and the output attributes (after changing them, as
        :func:`caffe2x.finetune.torch.prepare` does)."""
        self.graph = _fx_graph(self, **{k: getattr(self, k) for k in self.INSTANCE_ATTRS})

    def _deepcopy_init(self) -> Any:
        return lambda res, root, graph: fx.GraphModule.__init__(res, root, graph, "CaffeNet")

    def __deepcopy__(self, memo: dict[int, Any]) -> CaffeNet:
        res = super().__deepcopy__(memo)
        for key in self.INSTANCE_ATTRS:
            setattr(res, key, copy.deepcopy(getattr(self, key), memo))
        return res  # type: ignore[return-value]

    def __str__(self) -> str:  # the module tree, as for any nn.Module (not GraphModule's code dump)
        return self.__repr__()

    def _feeds(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        """The inputs in ``forward``'s order, from positional tensors, keywords (Caffe or argument
        names) or one dict by input name."""
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            given = dict(args[0])
        else:
            if len(args) > len(self.input_names):
                raise Caffe2xError(f"the net takes {len(self.input_names)} input(s) "
                                   f"({', '.join(self.input_names)}), got {len(args)}")
            given = dict(zip(self.input_names, args))
            by_arg = dict(zip(self.arg_names, self.input_names))
            for key, value in kwargs.items():
                given[by_arg.get(key, key) if key not in self.input_names else key] = value
        unknown = [k for k in given if k not in self.input_names]
        if unknown:
            raise Caffe2xError(f"the net has no input named {unknown[0]!r} (inputs: {', '.join(self.input_names)})")
        for name in self.input_names:
            if name not in given:
                raise Caffe2xError(f"no value given for input {name!r}")
        return [given[name] for name in self.input_names]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*self._feeds(args, kwargs))


def argument_names(input_names: Sequence[str]) -> list[str]:
    """``forward``'s argument name of each net input: the name itself when it is a usable identifier,
    else sanitised as layer names are (and deduplicated)."""
    taken: set[str] = set()
    out = []
    for name in input_names:
        base = name if _IDENTIFIER.match(name) and not keyword.iskeyword(name) and name != "self" \
            else re.sub(r"[^A-Za-z0-9_]", "_", name)
        if not base or base[0].isdigit():
            base = "input_" + base
        if keyword.iskeyword(base) or base == "self":
            base += "_"
        candidate, k = base, 2
        while candidate in taken:
            candidate, k = f"{base}_{k}", k + 1
        taken.add(candidate)
        out.append(candidate)
    return out


def _fx_graph(root: nn.Module, *, input_names: Sequence[str], arg_names: Sequence[str], output_names: Sequence[str],
              output_values: Sequence[str], single_output: bool, steps: Sequence[Step],
              caffe_names: Mapping[str, str]) -> fx.Graph:
    """The forward pass as an FX graph: a placeholder per input, a ``call_module`` per step that an
    output needs (its outputs taken apart with ``getitem`` when it has several), the outputs. FX's code generation frees
    each value after its last use, as the steps' release lists did."""
    g = fx.Graph()
    values: dict[str, fx.Node] = {}
    for name, arg in zip(input_names, arg_names):
        values[name] = g.placeholder(arg, type_expr=torch.Tensor)
    needed, called = set(output_values), []
    for step in reversed(steps):  # only the layers the outputs need run (a backbone stops at its output)
        if needed.intersection(step.outputs):
            called.append(step)
            needed.update(step.inputs)
    for step in reversed(called):
        module = root.get_submodule(step.module)
        ins = [values[v] for v in step.inputs]
        args: tuple[Any, ...] = (ins,) if getattr(type(module), "takes_list", False) else tuple(ins)
        node = g.call_module(step.module, args)
        if len(step.outputs) == 1:
            values[step.outputs[0]] = node
        else:
            for i, v in enumerate(step.outputs):
                values[v] = g.call_function(operator.getitem, (node, i))
    if single_output:
        g.output(values[output_values[0]], type_expr=torch.Tensor)
    else:
        g.output({name: values[v] for name, v in zip(output_names, output_values)})
    g.lint()
    return g


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
    net = CaffeNet.build(layers, steps, list(graph.inputs), out_names, out_values, single,
                         {name: node.name for node, name in zip(graph.nodes, names)})
    return net.eval()

