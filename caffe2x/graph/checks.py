"""One validation pass for every graph, whichever way it arrives, before anything trusts it.

A graph comes from a caffemodel, from a prototxt alone (weightless, seeded tensors) or from the
``caffe2x.graph`` metadata of a ``.safetensors`` file that anyone may have written. Every consumer
(shape rules, the numpy reference, each target) indexes attributes and divides by strides without
asking, so a graph is checked here first, in four layers:

1. **structure** (metadata only): JSON types, required keys, nesting depth measured *before* the
   recursive JSON parser sees the text (:func:`json_depth`, :func:`check_structure`);
2. **references**: every input produced before use, every value produced once, every param present;
3. **attributes**: per op, before its shape rule runs (kernel/stride/dilation >= 1, pads >= 0 and
   pooling pads < kernel, group divides channels, axes in range, finite numbers, known choices).
   The rules are open: :data:`OP_SCHEMAS` describes an op's input/output counts and attribute kinds,
   :data:`ATTR_CHECKS` holds extra functions; a new layer family registers both next to its shape rule
   (``checks.op_schema("Crop", inputs=(2, 2), attrs={"axis": AXIS})``). Ops nobody described still get
   the name-based rules of :data:`GENERIC_ATTRS` (a ``kernel`` is a kernel in every op);
4. **sizes**: every value's element count and the bytes a forward pass (or a weightless net's seeded
   tensors) would allocate, compared with a limit *before* anything is allocated.

The limit is :data:`DEFAULT_MAX_BYTES` (4 GiB), raised or lowered with the environment variable
``CAFFE2X_MAX_BYTES`` (bytes, or with a K/M/G/T suffix: ``CAFFE2X_MAX_BYTES=64G``) or the ``max_bytes=``
argument of :func:`caffe2x.load` / :func:`caffe2x.run`. Every failure is a :class:`GraphError` or a
:class:`SizeLimitError` (both :class:`~caffe2x.errors.Caffe2xError`) naming the file and the layer.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from caffe2x.errors import Caffe2xError, prefix
from caffe2x.graph.ir import SHAPE_FUNCTIONS, Graph, Node, Shape
from caffe2x.graph.registry import Registry

#: bytes a run may allocate unless CAFFE2X_MAX_BYTES or max_bytes= says otherwise. A caffemodel is a
#: protobuf message and cannot exceed 2 GiB, so 4 GiB covers any real net's weights plus a forward pass
#: of a large one at batch 1 (ResNet-50: 98 MiB of weights, 178 MiB for every value of a forward pass).
DEFAULT_MAX_BYTES = 4 << 30
MAX_BYTES_ENV = "CAFFE2X_MAX_BYTES"
#: deepest JSON nesting a caffe2x graph uses is 5 (graph > nodes > node > attrs > list); leave room
MAX_JSON_DEPTH = 32
#: largest single dimension accepted anywhere (Caffe itself keeps dims in int32)
MAX_DIM = 2**31 - 1
BYTES_PER_VALUE = 4  # everything runs in float32


class GraphError(Caffe2xError):
    """The graph is malformed: wrong types, dangling references, impossible attributes."""


class SizeLimitError(Caffe2xError):
    """Running or building the graph would allocate more than the configured limit."""


# --------------------------------------------------------------------------- limits
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def max_bytes(override: int | None = None) -> int:
    """The allocation limit: ``override``, else ``$CAFFE2X_MAX_BYTES``, else :data:`DEFAULT_MAX_BYTES`."""
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or override <= 0:
            raise Caffe2xError(f"max_bytes must be a positive integer, got {override!r}")
        return override
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)(?:i?B)?", text, flags=re.IGNORECASE)
    if not m or int(m.group(1)) <= 0:
        raise Caffe2xError(f"{MAX_BYTES_ENV}={text!r} is not a size (bytes, or e.g. 16G)")
    return int(m.group(1)) * _SUFFIX[m.group(2).upper()]


def human(n: int | float) -> str:
    """``8589934592`` -> ``'8.0 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _over(what: str, nbytes: int, limit: int) -> SizeLimitError:
    return SizeLimitError(f"{what} needs {human(nbytes)}, over the {human(limit)} limit "
                          f"(raise it with {MAX_BYTES_ENV}=… or max_bytes=)")


def elements(shape: Sequence[int]) -> int:
    """Element count with Python integers (numpy's product silently wraps around at 2**63)."""
    return math.prod(int(d) for d in shape)


@dataclass
class SizeBudget:
    """Counts what building a graph allocates (its tensors) and refuses to go past ``limit``.

    The reader asks it before making each weightless tensor and after each new value's shape, so a
    ``num_output: 16777216`` or an ``input_dim: 1000000000`` fails before any memory is touched.
    """

    limit: int
    source: str = "graph"
    tensor_bytes: int = 0

    def tensor(self, layer: str, role: str, shape: Sequence[int]) -> None:
        """Account for a tensor about to be allocated (float32)."""
        if any(isinstance(d, int) and d == 0 for d in shape):
            raise GraphError(f"{self.source}: layer {layer!r} {role} would have the empty shape {list(shape)} "
                             f"(a kernel size, num_output or group of 0?)")
        check_dims(shape, f"{self.source}: layer {layer!r} {role}", scalar=True)
        nbytes = elements(shape) * BYTES_PER_VALUE
        if self.tensor_bytes + nbytes > self.limit:
            raise _over(f"{self.source}: layer {layer!r} {role} tensor {list(shape)} (with the tensors before it)",
                        self.tensor_bytes + nbytes, self.limit)
        self.tensor_bytes += nbytes

    def value(self, layer: str | None, name: str, shape: Sequence[int]) -> None:
        """A value of this shape (``layer`` None: a net input) must fit the limit on its own."""
        what = f"{self.source}: input {name!r}" if layer is None else f"{self.source}: layer {layer!r} output {name!r}"
        check_dims(shape, what, scalar=layer is not None)  # a Reduction over every axis gives a 0-D value
        nbytes = elements(shape) * BYTES_PER_VALUE
        if nbytes > self.limit:
            raise _over(f"{what} of shape {list(shape)}", nbytes, self.limit)


def check_dims(shape: Any, what: str, scalar: bool = False) -> None:
    """Every dimension an int in [1, 2**31) (``scalar``: the empty shape of a 0-D tensor is fine)."""
    if not isinstance(shape, (tuple, list)) or (not shape and not scalar):
        raise GraphError(f"{what}: shape must be a non-empty list of integers, got {shape!r}")
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) and not hasattr(d, "__index__"):
            raise GraphError(f"{what}: shape {list(shape)} holds a non-integer {d!r}")
        if not 1 <= int(d) <= MAX_DIM:
            raise GraphError(f"{what}: dimension {int(d)} in shape {list(shape)} is outside 1..{MAX_DIM}")


def forward_bytes(graph: Graph, batch: int | None = None) -> int:
    """Bytes of every value of one forward pass (inputs included) at ``batch`` (default: as declared).

    Values scale linearly with the batch (Caffe nets keep the batch as the leading dimension), so the
    figure at another batch is the declared one scaled; the executor frees values it no longer needs,
    so this is an upper bound.
    """
    total = sum(elements(s) for s in graph.shapes.values()) * BYTES_PER_VALUE
    declared = next(iter(graph.inputs.values()))[0] if graph.inputs else 1
    if batch is None or declared <= 0:
        return total
    return -(-total * batch // declared)


def tensor_bytes(graph: Graph) -> int:
    return int(sum(t.nbytes for t in graph.tensors.values()))


def write_bytes(graph: Graph, copies: float, dtype: str = "float32") -> int:
    """Peak bytes of writing ``graph``'s tensors to a file whose writer holds ``copies`` extra copies of
    them at once (:attr:`caffe2x.targets.Target.write_copies`): the graph's own tensors, those copies, and
    for a reduced ``dtype`` the half-size cast plus the rounded float32 copy its logit measurement runs."""
    held = tensor_bytes(graph)
    extra = copies + (1.5 if dtype != "float32" else 0.0)
    return held + math.ceil(held * extra)


def check_write_size(graph: Graph, target: str, copies: float, dtype: str = "float32",
                     limit: int | None = None) -> None:
    """Refuse, before a writer starts, a file whose writing would hold more than the limit at once."""
    cap = max_bytes(limit)
    need = write_bytes(graph, copies, dtype)
    if need > cap:
        raise _over(f"writing {graph.name!r} as {target} (its {human(tensor_bytes(graph))} of tensors and the "
                    f"{copies:g} extra cop{'y' if copies == 1 else 'ies'} the {target} writer makes"
                    + (f", plus the {dtype} cast" if dtype != "float32" else "") + ")", need, cap)


def check_run_size(graph: Graph, batch: int, limit: int | None = None, what: str = "a forward pass") -> None:
    """Refuse a forward pass at ``batch`` that would go past the limit, before it allocates."""
    cap = max_bytes(limit)
    need = forward_bytes(graph, batch)
    if need > cap:
        raise _over(f"{what} of {graph.name!r} at batch {batch}", need, cap)


# --------------------------------------------------------------------------- structure (JSON metadata)
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of JSON text, without parsing it (the parser itself recurses)."""
    depth = best = 0
    for ch in re.findall(r"[\[\]{}]", _JSON_STRING.sub('""', text)):
        depth += 1 if ch in "[{" else -1
        best = max(best, depth)
    return best


def _type_name(x: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(x), type(x).__name__)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_structure(data: Any, source: str) -> None:
    """The JSON form of a graph (:meth:`Graph.structure`) has every key with the right type."""
    def fail(where: str, want: str, got: Any) -> GraphError:
        where = f" {where}" if where else ""
        return GraphError(f"{source}: graph metadata{where} should be {want}, got {_type_name(got)}")

    if not isinstance(data, dict):
        raise fail("", "an object", data)
    need = {"format": str, "version": int, "name": str, "inputs": dict, "outputs": list, "blobs": dict,
            "shapes": dict, "nodes": list, "tensors": dict}
    for key, kind in need.items():
        if key not in data:
            raise GraphError(f"{source}: graph metadata lacks the key {key!r}")
        if not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool)):
            raise fail(repr(key), _type_name(kind()), data[key])
    for key in ("inputs", "shapes"):
        for name, shape in data[key].items():
            if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
                raise fail(f"{key}[{name!r}]", "a list of integers", shape)
            check_dims(shape, f"{source}: {key[:-1]} {name!r}", scalar=key == "shapes")
    if not all(isinstance(v, str) for v in data["outputs"]):
        raise fail("'outputs'", "a list of strings", data["outputs"])
    for blob, value in data["blobs"].items():
        if not isinstance(value, str):
            raise fail(f"blobs[{blob!r}]", "a string", value)
    for key, info in data["tensors"].items():
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list) or \
                not all(_is_int(d) and d >= 0 for d in info["shape"]):
            raise fail(f"tensors[{key!r}]", "an object with a 'shape' list of integers", info)
    fields = {"name": str, "op": str, "inputs": list, "outputs": list, "attrs": dict, "params": dict}
    for i, node in enumerate(data["nodes"]):
        if not isinstance(node, dict):
            raise fail(f"node {i}", "an object", node)
        for key, kind in fields.items():
            if key not in node:
                raise GraphError(f"{source}: graph metadata node {i} ({node.get('name', '?')!r}) lacks {key!r}")
            if not isinstance(node[key], kind):
                raise fail(f"node {i} {key!r}", _type_name(kind()), node[key])
        for key in ("inputs", "outputs"):
            if not all(isinstance(v, str) for v in node[key]):
                raise fail(f"node {node['name']!r} {key!r}", "a list of strings", node[key])
        if not all(isinstance(v, str) for v in node["params"].values()):
            raise fail(f"node {node['name']!r} 'params'", "an object of strings", node["params"])


# --------------------------------------------------------------------------- attributes
AttrKind = Callable[[Any], str | None]  # returns what is wrong, or None


def _ints(lo: int, n: int | None = 2) -> AttrKind:
    def check(v: Any) -> str | None:
        vals = v if isinstance(v, list) else [v]
        if n is not None and isinstance(v, list) and len(v) != n:
            return f"must be {n} integers, got {v!r}"
        if not vals or not all(_is_int(x) for x in vals):
            return f"must be integers, got {v!r}"
        if any(x < lo or x > MAX_DIM for x in vals):
            return f"must be in {lo}..{MAX_DIM}, got {v!r}"
        return None
    return check


def _int(lo: int | None = None) -> AttrKind:
    def check(v: Any) -> str | None:
        if not _is_int(v):
            return f"must be an integer, got {v!r}"
        if lo is not None and v < lo:
            return f"must be >= {lo}, got {v}"
        return None
    return check


def _number(lo: float | None = None) -> AttrKind:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"must be a finite number, got {v!r}"
        if lo is not None and v < lo:
            return f"must be >= {lo}, got {v}"
        return None
    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def _choice(*options: str) -> AttrKind:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}, got {v!r}"
    return check


def _numbers(v: Any) -> str | None:
    if not isinstance(v, list) or any(_number()(x) for x in v):
        return f"must be a list of finite numbers, got {v!r}"
    return None


POSITIVE_PAIR, NONNEG_PAIR, POSITIVE, AXIS = _ints(1), _ints(0), _int(1), _int(0)
NUMBER, NONNEG, BOOL = _number(), _number(0.0), _bool

#: attribute name -> rule, applied to every op that has the attribute (known or new)
GENERIC_ATTRS: dict[str, AttrKind] = {
    "kernel": POSITIVE_PAIR, "stride": POSITIVE_PAIR, "dilation": POSITIVE_PAIR, "pad": NONNEG_PAIR,
    "group": POSITIVE, "num_output": POSITIVE,
}


@dataclass
class OpSchema:
    """What an op needs: input/output counts (min, max; max None = any) and typed attributes."""

    inputs: tuple[int, int | None] = (1, 1)
    outputs: tuple[int, int | None] = (1, 1)
    attrs: dict[str, AttrKind] = field(default_factory=dict)
    optional: frozenset[str] = frozenset()


AttrCheck = Callable[[Node, list[Shape]], None]
#: op -> description (counts, attribute kinds)
OP_SCHEMAS: dict[str, OpSchema] = {}
#: op -> extra rule run with the input shapes, before the shape rule (raise Caffe2xError)
ATTR_CHECKS: Registry[AttrCheck] = Registry("op")
attribute_check = ATTR_CHECKS.register


def op_schema(*ops: str, inputs: tuple[int, int | None] = (1, 1), outputs: tuple[int, int | None] = (1, 1),
              attrs: Mapping[str, AttrKind] | None = None, optional: Sequence[str] = ()) -> None:
    """Describe ``ops`` (call it beside the op's shape rule; a later call replaces an earlier one)."""
    for op in ops:
        OP_SCHEMAS[op] = OpSchema(inputs, outputs, dict(attrs or {}), frozenset(optional))


_CONV = {"kernel": POSITIVE_PAIR, "stride": POSITIVE_PAIR, "pad": NONNEG_PAIR, "dilation": POSITIVE_PAIR,
         "group": POSITIVE, "num_output": POSITIVE}
op_schema("Convolution", "Deconvolution", attrs=_CONV)
op_schema("Pooling", attrs={"method": _choice("max", "ave"), "kernel": POSITIVE_PAIR, "stride": POSITIVE_PAIR,
                            "pad": NONNEG_PAIR, "ceil": BOOL, "global_pooling": BOOL})
op_schema("BatchNorm", attrs={"eps": NONNEG, "moving_average_fraction": NUMBER},
          optional=("moving_average_fraction",))  # absent in graphs written before it was kept
op_schema("Scale", attrs={"axis": AXIS, "num_axes": _int(-1)})
op_schema("ReLU", attrs={"negative_slope": NUMBER})
op_schema("ELU", attrs={"alpha": NUMBER})
op_schema("PReLU", attrs={"channel_shared": BOOL})
op_schema("Sigmoid", "TanH")
op_schema("Eltwise", inputs=(2, None), attrs={"operation": _choice("sum", "prod", "max"), "coeff": _numbers})
op_schema("InnerProduct", attrs={"axis": AXIS, "num_output": POSITIVE})
op_schema("Softmax", attrs={"axis": AXIS})
op_schema("Dropout", attrs={"ratio": NUMBER}, optional=("ratio",))
op_schema("LRN", attrs={"size": POSITIVE, "alpha": NUMBER, "beta": NUMBER, "k": NUMBER,
                        "region": _choice("across", "within")})
op_schema("Concat", inputs=(1, None), attrs={"axis": AXIS})
op_schema("Flatten", attrs={"axis": AXIS, "end_axis": AXIS})


def _axis_in_range(node: Node, ins: list[Shape], *names: str) -> None:
    rank = len(ins[0])
    for name in names:
        if not 0 <= node.attrs[name] < rank:
            raise GraphError(f"layer {node.name!r} ({node.op}): {name} {node.attrs[name]} is out of range "
                             f"for a {rank}-D input")


@attribute_check("Convolution", "Deconvolution")
def _conv_attrs(node: Node, ins: list[Shape]) -> None:
    _rank(node, ins[0], 4)
    c, g, o = ins[0][1], node.attrs["group"], node.attrs["num_output"]
    if c % g or o % g:
        raise GraphError(f"layer {node.name!r} ({node.op}): channels {c} and num_output {o} must be divisible "
                         f"by group {g}")


@attribute_check("Pooling")
def _pool_attrs(node: Node, ins: list[Shape]) -> None:
    _rank(node, ins[0], 4)
    a = node.attrs
    if not a["global_pooling"] and any(p >= k for p, k in zip(a["pad"], a["kernel"])):
        raise GraphError(f"layer {node.name!r} (Pooling): pad {a['pad']} must be smaller than kernel {a['kernel']}")


@attribute_check("LRN")
def _lrn_attrs(node: Node, ins: list[Shape]) -> None:
    _rank(node, ins[0], 4)
    if node.attrs["size"] % 2 == 0:
        raise GraphError(f"layer {node.name!r} (LRN): size must be odd, got {node.attrs['size']}")


@attribute_check("Scale")
def _scale_attrs(node: Node, ins: list[Shape]) -> None:
    _axis_in_range(node, ins, "axis")
    a = node.attrs
    if a["num_axes"] != -1 and a["axis"] + a["num_axes"] > len(ins[0]):
        raise GraphError(f"layer {node.name!r} (Scale): axis {a['axis']} + num_axes {a['num_axes']} exceeds "
                         f"the {len(ins[0])}-D input")


@attribute_check("InnerProduct", "Softmax", "Concat")
def _axis_attrs(node: Node, ins: list[Shape]) -> None:
    _axis_in_range(node, ins, "axis")


@attribute_check("Flatten")
def _flatten_attrs(node: Node, ins: list[Shape]) -> None:
    _axis_in_range(node, ins, "axis", "end_axis")
    if node.attrs["end_axis"] < node.attrs["axis"]:
        raise GraphError(f"layer {node.name!r} (Flatten): end_axis {node.attrs['end_axis']} is before axis "
                         f"{node.attrs['axis']}")


@attribute_check("Eltwise")
def _eltwise_attrs(node: Node, ins: list[Shape]) -> None:
    coeff = node.attrs["coeff"]
    if len(coeff) != len(ins):
        raise GraphError(f"layer {node.name!r} (Eltwise): {len(coeff)} coeff for {len(ins)} inputs")


def _rank(node: Node, shape: Shape, rank: int) -> None:
    if len(shape) != rank:
        raise GraphError(f"layer {node.name!r} ({node.op}) needs a {rank}-D input, got shape {list(shape)}")


def check_node(node: Node, ins: list[Shape]) -> None:
    """Counts and attributes of one node, given its input shapes; run before its shape rule."""
    where = f"layer {node.name!r} ({node.op})"
    schema = OP_SCHEMAS.get(node.op)
    lo, hi = schema.inputs if schema else (1, None)
    if len(ins) < lo or (hi is not None and len(ins) > hi):
        want = f"{lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
        raise GraphError(f"{where} takes {want} input(s) (bottom), got {len(ins)}")
    lo, hi = schema.outputs if schema else (1, None)
    if len(node.outputs) < lo or (hi is not None and len(node.outputs) > hi):
        raise GraphError(f"{where} gives {lo if lo == hi else f'at least {lo}'} output(s) (top), "
                         f"got {len(node.outputs)}")
    rules = dict(GENERIC_ATTRS)
    if schema:
        rules.update(schema.attrs)
        for name in schema.attrs:
            if name not in node.attrs and name not in schema.optional:
                raise GraphError(f"{where} lacks the attribute {name!r}")
    for name, value in node.attrs.items():
        rule = rules.get(name)
        problem = rule(value) if rule else (None if _plain(value) else f"must be JSON data, got {value!r}")
        if problem:
            raise GraphError(f"{where}: {name} {problem}")
    extra = ATTR_CHECKS.get(node.op)
    if extra is not None:
        extra(node, ins)


def _plain(v: Any, depth: int = 0) -> bool:
    """JSON-like data (what the metadata can carry), finite numbers, bounded depth."""
    if depth > MAX_JSON_DEPTH:
        return False
    if isinstance(v, float):
        return math.isfinite(v)
    if v is None or isinstance(v, (str, int, bool)):
        return True
    if isinstance(v, list):
        return all(_plain(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x, depth + 1) for k, x in v.items())
    return False


# --------------------------------------------------------------------------- the whole graph
def output_shapes(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    """Check ``node`` and run its shape rule; any failure of the rule is a :class:`GraphError` naming it."""
    check_node(node, ins)
    fn = SHAPE_FUNCTIONS.lookup(node.op, node.name)
    try:
        outs = fn(node, ins, graph)
    except Caffe2xError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError) as exc:
        raise GraphError(f"layer {node.name!r} ({node.op}): attributes do not fit its shape rule "
                         f"({type(exc).__name__}: {exc})") from None
    if len(outs) != len(node.outputs):
        raise GraphError(f"layer {node.name!r} ({node.op}) has {len(node.outputs)} output(s), its shape rule "
                         f"gives {len(outs)}")
    return [tuple(int(d) for d in s) for s in outs]


def check_graph(graph: Graph, source: str = "graph", *, limit: int | None = None,
                stored_shapes: bool = True) -> None:
    """Check a whole graph (references, params, attributes, shapes, sizes) and set ``graph.shapes``.

    With ``stored_shapes`` the shapes the graph already carries must equal the inferred ones (the
    metadata of a file could lie about them). Raises :class:`GraphError`/:class:`SizeLimitError`
    prefixed with ``source``.
    """
    try:
        _check_graph(graph, source, max_bytes(limit), stored_shapes)
    except Caffe2xError as exc:
        msg = str(exc)
        if not msg.startswith(f"{source}:"):
            prefix(exc, f"{source}: ")
        raise


def _check_graph(graph: Graph, source: str, limit: int, stored_shapes: bool) -> None:
    budget = SizeBudget(limit, source)
    if not graph.inputs:
        raise GraphError("the graph has no inputs")
    if not graph.nodes:
        raise GraphError("the graph has no layers")
    shapes: dict[str, Shape] = {}
    for name, shape in graph.inputs.items():
        budget.value(None, name, shape)
        shapes[name] = tuple(int(d) for d in shape)
    seen: set[str] = set()
    for node in graph.nodes:
        if node.name in seen:
            raise GraphError(f"two layers are called {node.name!r}")
        seen.add(node.name)
        for v in node.inputs:
            if v not in shapes:
                raise GraphError(f"layer {node.name!r} reads {v!r}, which nothing produces before it")
        for role, key in node.params.items():
            if key not in graph.tensors:
                raise GraphError(f"layer {node.name!r} {role} names tensor {key!r}, which the graph does not hold")
        outs = output_shapes(node, [shapes[v] for v in node.inputs], graph)
        for v, s in zip(node.outputs, outs):
            if v in shapes:
                raise GraphError(f"layer {node.name!r} writes {v!r}, which is already produced")
            budget.value(node.name, v, s)
            shapes[v] = s
    if stored_shapes and graph.shapes:
        for v, s in shapes.items():
            if v in graph.shapes and tuple(graph.shapes[v]) != s:
                raise GraphError(f"value {v!r} is stored with shape {list(graph.shapes[v])}, its layers give {list(s)}")
    if not graph.outputs:
        raise GraphError("the graph has no outputs")
    for v in graph.outputs:
        if v not in shapes:
            raise GraphError(f"output {v!r} is not produced by any layer")
    for blob, v in graph.blobs.items():
        if v not in shapes:
            raise GraphError(f"blob {blob!r} names value {v!r}, which no layer produces")
    graph.shapes = shapes
    need = tensor_bytes(graph) + forward_bytes(graph, 1)
    if need > limit:
        raise _over(f"{graph.name!r}: its tensors plus one forward pass at batch 1", need, limit)
