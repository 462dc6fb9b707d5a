"""The Caffe side: read ``.caffemodel`` / ``.prototxt`` / ``.binaryproto`` into a :class:`~caffe2x.graph.ir.Graph`.

Handles the current ``layer`` format, the old V1 and V0 ``layers`` formats (upgraded the way Caffe's
``upgrade_proto.cpp`` does, :mod:`caffe2x.caffe.upgrade`), legacy blob
dims (``num/channels/height/width``) and blobs stored as ``data`` or ``double_data``.

When a prototxt is given it defines the net and the caffemodel only supplies blobs, matched by layer
name (that is how Caffe's ``CopyTrainedLayersFrom`` works). Without one the caffemodel's own layers are
the net. Without any caffemodel (``model=None``) the net is weightless and gets seeded tensors whose
BatchNorm statistics are calibrated (:mod:`caffe2x.caffe.calibration`). Parsing the protobuf messages is
:mod:`caffe2x.caffe.parse`.

Each Caffe layer type is one handler registered in :data:`LAYERS` by a module of :mod:`caffe2x.layers`
(the core types in :mod:`caffe2x.layers.core`); an unregistered type is an error naming the layer and
the type.
"""
from __future__ import annotations

import math
import os
import zlib
from functools import partial
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caffe2x.caffe.datalayers import data_layer_shape
from caffe2x.caffe.layernames import renamed_duplicates
from caffe2x.caffe.sniff import is_hdf5
from caffe2x.caffe.parse import _pb2, blob_array, parse_caffemodel_bytes, parse_prototxt_text
from caffe2x.caffe.wire import map_file, split
from caffe2x.errors import Caffe2xError, ForkRuleWarning, option, prefix, template
from caffe2x.graph import checks
from caffe2x.graph.ir import Graph, Node, Shape
from caffe2x.graph.pages import release_map
from caffe2x.graph.registry import Registry

# --------------------------------------------------------------------------- blob access
InitKind = str  # 'he' | 'bias' | 'mean' | 'var' | 'gamma' | 'beta' | 'factor' | 'slope'


class BlobSource:
    """Hands a layer handler its blobs, checked against the shapes the net needs.

    With a caffemodel, blob ``i`` of the layer must exist and have the expected shape (a legacy 4-D
    blob matches when it is the expected shape padded with leading 1s, e.g. InnerProduct's
    ``1 x 1 x out x in``). Weightless, it makes a seeded tensor of the requested kind instead.
    """

    def __init__(self, layer: str, blobs: Sequence[Any] | None, seed: int | None,
                 budget: checks.SizeBudget | None = None) -> None:
        self.layer = layer
        self.blobs = blobs
        self.budget = budget
        self.rng = np.random.default_rng([seed or 0, zlib.crc32(layer.encode())]) if blobs is None else None
        #: appended to the error for a blob the caffemodel does not have
        self.missing = ""

    def get(self, index: int, shape: Shape, kind: InitKind, role: str) -> np.ndarray:
        shape = tuple(int(d) for d in shape)
        if self.blobs is None:
            if self.budget is not None:  # refuse a huge seeded tensor before allocating it
                self.budget.tensor(self.layer, role, shape)
            elif any(d < 0 for d in shape):
                raise Caffe2xError(f"layer {self.layer!r} {role} has the impossible shape {list(shape)}")
            return _init(self.rng, shape, kind)  # type: ignore[arg-type]
        if index >= len(self.blobs):
            raise Caffe2xError(f"layer {self.layer!r} has {len(self.blobs)} blob(s) in the caffemodel, "
                               f"needs blob {index} ({role}, shape {list(shape)}){self.missing}")
        arr = self.stored(index, role)
        if arr.shape == shape:
            return arr
        squeezed = arr.shape
        while len(squeezed) > len(shape) and squeezed[0] == 1:
            squeezed = squeezed[1:]
        if squeezed == shape:
            return arr.reshape(shape)
        raise Caffe2xError(f"layer {self.layer!r} blob {index} ({role}) has shape {list(arr.shape)} in the "
                           f"caffemodel, the net needs {list(shape)}")

    def stored(self, index: int, role: str) -> np.ndarray:
        """Blob ``index`` of the caffemodel in its stored shape; a blob whose dims are negative or do not
        match its data is an error naming the layer, the blob and the dims."""
        assert self.blobs is not None
        try:
            return blob_array(self.blobs[index])
        except Caffe2xError as exc:
            raise Caffe2xError(f"layer {self.layer!r} blob {index} ({role}) in the caffemodel: {template(exc)}") from None

    def has(self, index: int) -> bool:
        return self.blobs is None or index < len(self.blobs)


#: values drawn per step when seeding a tensor: the float64 draws then cost 8 MiB, not 2x the tensor
_INIT_CHUNK = 1 << 20


def _init(rng: np.random.Generator, shape: Shape, kind: InitKind) -> np.ndarray:
    """A seeded float32 tensor, drawn in chunks straight into its final array.

    Peak memory is the float32 tensor itself (what the size budget counted), not the float64 draw
    plus its scaled copy (3x: a 1 GiB seeded InnerProduct peaked at 3.1 GB). The generator's stream
    does not depend on how the draws are split, so the values are the ones a single draw gives.
    """
    out = np.empty(shape, dtype=np.float32)
    if kind == "factor":
        out.fill(1.0)
        return out
    flat = out.reshape(-1)
    fan_in = math.prod(shape[1:]) or 1
    for start in range(0, flat.size, _INIT_CHUNK):
        n = min(_INIT_CHUNK, flat.size - start)
        if kind == "he":
            part = rng.standard_normal(n) * np.sqrt(2.0 / fan_in)
        elif kind in ("bias", "beta", "mean"):
            part = rng.standard_normal(n) * 0.1
        elif kind in ("var", "gamma"):
            part = rng.uniform(0.5, 1.5, n)
        elif kind == "slope":
            part = rng.uniform(0.05, 0.3, n)
        else:  # pragma: no cover - programming error
            raise ValueError(kind)
        flat[start:start + n] = part
    return out


# --------------------------------------------------------------------------- layer handlers
@dataclass
class LayerSpec:
    """What a handler makes of one Caffe layer."""

    op: str
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class SubLayer:
    """One node of a layer that Caffe itself computes with internal layers (SPP: a pooling and a flatten
    per pyramid level, then a concat). ``inputs`` name the layer's bottoms by position (int) or an
    earlier part's ``suffix`` (str); the node is called ``<layer>/<suffix>``."""

    suffix: str
    spec: LayerSpec
    inputs: list[int | str]


@dataclass
class Composite:
    """What a handler returns for such a layer: its parts in order, plain ops every target has; the last
    one (named as the layer) writes the layer's tops. A part's tensors are stored as
    ``<layer>/<suffix>.<role>`` (the last part's as ``<layer>.<role>``), like any layer's."""

    parts: list[SubLayer]


Handler = Callable[[Any, list[Shape], BlobSource], "LayerSpec | Composite"]
#: Caffe layer type -> handler
LAYERS: Registry[Handler] = Registry("layer type")
layer_handler = LAYERS.register


#: A fork's rule for a layer type that upstream Caffe also has, used only when the net cannot be read
#: with upstream's: ``rule name -> layer type -> handler`` (filled by :mod:`caffe2x.layers`; see
#: :func:`build_graph`). A handler returns ``None`` for a layer the fork computes as upstream does.
FORK_RULES: dict[str, dict[str, Callable[[Any, list[Shape], BlobSource], "LayerSpec | Composite | None"]]] = {}
#: what each rule is, for the warning that names it
FORK_RULE_SOURCES: dict[str, str] = {}
#: whether a layer is one the rule reads otherwise (a net without any is not read again)
FORK_RULE_TRIGGERS: dict[str, Callable[[Any], bool]] = {}


#: Layers that feed or score training and mean nothing at inference: their data tops become net
#: inputs (a shape must come from --input-shape), label-consuming layers are dropped.
DATA_LAYERS = {"Data", "ImageData", "DenseImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData", "Python"}
#: (python_param.module, python_param.layer) of the Python layers a family reads as a built-in op
#: (filled by :mod:`caffe2x.layers`; the ``Python`` handler then dispatches on them)
KNOWN_PYTHON_LAYERS: set[tuple[str, str]] = set()


def is_data_layer(layer: Any) -> bool:
    """A layer whose tops are net inputs: a data layer type (a Python layer only without bottoms)."""
    return layer.type in DATA_LAYERS and not (layer.type == "Python" and len(layer.bottom))


def _known_python_layer(layer: Any) -> bool:
    return (str(layer.python_param.module), str(layer.python_param.layer)) in KNOWN_PYTHON_LAYERS
DROPPED_LAYERS = {"Accuracy", "SoftmaxWithLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss",
                  "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "ContrastiveLoss", "Silence"}


# --------------------------------------------------------------------------- graph building
def _declared_inputs(net: Any) -> dict[str, Shape | None]:
    inputs: dict[str, Shape | None] = {}
    names = list(net.input)
    for i, name in enumerate(names):
        if len(net.input_shape) > i:
            inputs[name] = tuple(net.input_shape[i].dim)
        elif len(net.input_dim) >= 4 * (i + 1):
            inputs[name] = tuple(net.input_dim[4 * i:4 * i + 4])
        else:
            inputs[name] = None
    return inputs


def _in_test_phase(layer: Any) -> bool:
    """Caffe's NetStateRule filtering for a deploy (TEST phase) net."""
    test = _pb2().TEST
    if layer.include:
        return any(not r.HasField("phase") or r.phase == test for r in layer.include)
    return not any(r.HasField("phase") and r.phase == test for r in layer.exclude)


def _require_text(net: Any) -> None:
    """Names must be text: protobuf hands out ``bytes`` for a string field that is not valid UTF-8."""
    def bad(value: Any) -> bool:
        return not isinstance(value, str)

    if bad(net.name) or any(bad(v) for v in net.input):
        raise checks.GraphError("the net's name or input names are not valid UTF-8 text")
    for i, l in enumerate(net.layer):
        if bad(l.name) or bad(l.type) or any(bad(v) for v in (*l.bottom, *l.top)):
            raise checks.GraphError(f"layer {i} ({l.name!r}) has a name, type, bottom or top that is not valid "
                                    f"UTF-8 text")


def build_graph(net: Any, weights: dict[str, Sequence[Any]] | None, input_shape: Sequence[int] | None = None,
                seed: int | None = None, progress: bool = False, outputs: Sequence[str] | None = None,
                budget: checks.SizeBudget | None = None) -> Graph:
    """Make the graph of ``net``; ``weights`` maps layer name to its blobs (None: weightless, seeded).

    ``outputs`` (blob names, or ``blob@layer`` for one write of a rewritten blob) keeps only the layers
    those blobs need (:mod:`caffe2x.caffe.netcut`) and makes them the graph's outputs.

    Each layer is checked (:func:`caffe2x.graph.checks.output_shapes`) before its shape rule runs, and every
    new value and seeded tensor is counted against ``budget`` before anything is allocated. Layers that
    share a name are renamed as :mod:`caffe2x.caffe.layernames` says (Caffe's weight-copying rule).

    A net whose shapes do not fit upstream Caffe's rules is read again with each fork rule
    (:data:`FORK_RULES`) that concerns one of its layers; the first under which it reads is used, with
    a warning naming the rule and the layers it changed, else upstream's error stands. So a net that
    upstream Caffe runs is always read as upstream Caffe runs it.
    """
    budget = budget or checks.SizeBudget(checks.max_bytes())
    _require_text(net)
    all_layers = [l for l in net.layer if _in_test_phase(l)]
    with renamed_duplicates(all_layers) as renamed:
        layers, declared = _select_layers(net, all_layers, outputs)
        declared = _input_shapes(layers, declared, input_shape, budget)
        writes = _count_writes(net, all_layers, declared)

        def build(rule: str | None, budget: checks.SizeBudget) -> Graph:
            graph = Graph(name=net.name or "net", inputs=dict(declared), nodes=[], tensors={})  # type: ignore[arg-type]
            builder = _GraphBuilder(graph, writes, weights, seed, budget, input_shape, renamed, fork_rule=rule)
            iterator: Any = layers
            if progress:
                from tqdm import tqdm

                iterator = tqdm(layers, desc="reading layers", unit="layer", leave=False)
            for layer in iterator:
                builder.add(layer)
            graph = builder.finish(outputs)
            if rule is not None:
                if not builder.fork_ruled:
                    raise Caffe2xError(f"the {rule} rule changes no layer")
                import warnings

                warnings.warn(f"the net's shapes do not fit upstream Caffe's; read with {FORK_RULE_SOURCES[rule]}, "
                              f"under which they do (layers {', '.join(map(repr, builder.fork_ruled))})",
                              ForkRuleWarning, stacklevel=5)
            return graph

        try:
            return build(None, budget)
        except Caffe2xError as upstream:
            for rule in FORK_RULES:  # a fork whose own rule for an upstream layer type makes the net fit
                if not any(FORK_RULE_TRIGGERS[rule](layer) for layer in layers):
                    continue
                try:
                    return build(rule, checks.SizeBudget(budget.limit, budget.source))
                except Caffe2xError:
                    continue
            raise upstream


def _select_layers(net: Any, all_layers: list[Any],
                   outputs: Sequence[str] | None) -> tuple[list[Any], dict[str, Shape | None]]:
    """The TEST-phase layers that run (all, or what ``outputs`` needs) and the inputs the net declares
    that they use; an unknown Python layer among them is refused here, naming its module and class and
    the ``--outputs`` that converts everything before it."""
    declared = _declared_inputs(net)
    layers = all_layers
    if outputs is not None:
        from caffe2x.caffe.netcut import needed_layers

        layers = needed_layers(all_layers, outputs, inputs=list(declared))
        used = {b for l in layers for b in l.bottom} | {o.partition("@")[0] for o in outputs}
        declared = {name: shape for name, shape in declared.items() if name in used}
    for l in layers:
        if l.type == "Python" and len(l.bottom) and not _known_python_layer(l):
            index = next(i for i, m in enumerate(all_layers) if m is l)
            from caffe2x.caffe.netcut import cut_before, python_layer_error

            raise python_layer_error(l, cut=outputs is not None,
                                     suggestion=cut_before(all_layers, index, ("Input", *DATA_LAYERS)))
    return layers, declared


def _input_shapes(layers: list[Any], declared: dict[str, Shape | None], input_shape: Sequence[int] | None,
                  budget: checks.SizeBudget) -> dict[str, Shape]:
    """Every input blob with its shape: declared by the net (``input:``, ``Input`` layers), the first
    top of a data layer (shaped from its parameters where Caffe's ``DataLayerSetUp`` fixes it), or the
    bottoms nothing produces; ``--input-shape`` replaces the first one's."""
    data_heads: dict[str, Any] = {}  # input blob -> the data layer it is the top of
    for l in layers:
        if l.type == "Input":
            shapes = list(l.input_param.shape)
            for i, top in enumerate(l.top):
                s = shapes[i] if i < len(shapes) else (shapes[0] if shapes else None)
                declared[top] = tuple(s.dim) if s is not None else None
        elif is_data_layer(l) and l.top and l.top[0] not in declared:
            declared[l.top[0]], data_heads[l.top[0]] = data_layer_shape(l)[0], l
    produced = set(declared) | {t for l in layers for t in l.top}
    if not declared:  # net declares no input: the bottoms nothing produces are inputs
        for l in layers:
            for b in l.bottom:
                if b not in produced:
                    declared[b] = None
                    produced.add(b)
    if input_shape is not None:
        if not declared:
            raise Caffe2xError(f"the net has no input blob to give {option('input_shape')} to")
        first = next(iter(declared))
        given = tuple(int(d) for d in input_shape)
        if declared[first] is not None and len(declared[first]) != len(given):  # type: ignore[arg-type]
            raise Caffe2xError(f"{option('input_shape', given)} has {len(given)} dimensions, but "
                               f"input {first!r} is {len(declared[first])}-D "  # type: ignore[arg-type]
                               f"{list(declared[first])} in the prototxt")  # type: ignore[arg-type]
        declared[first] = given
    for name, shape in declared.items():
        if shape is None:
            head = data_heads.get(name)
            where = "" if head is None else (f" (the top of {head.type} layer {head.name!r}: "
                                             f"{data_layer_shape(head)[1]})")
            raise Caffe2xError(f"no shape for input {name!r}{where}: pass {option('input_shape', 'N,C,H,W', api='(N, C, H, W)')} (or a deploy prototxt)")
        if not shape or any(d <= 0 for d in shape):
            raise Caffe2xError(f"input {name!r} has an invalid shape {list(shape)}")
        budget.value(None, name, shape)
    return declared  # type: ignore[return-value]


def _count_writes(net: Any, all_layers: list[Any], declared: dict[str, Shape]) -> dict[str, int]:
    """How often each blob is written, counted over the whole net so that value names (``blob`` for a
    blob written once, ``blob@layer`` for each write of a rewritten one) do not depend on a cut."""
    writes: dict[str, int] = {name: 1 for name in [*_declared_inputs(net), *declared]}
    for l in all_layers:
        if l.type == "Input" or (l.type in DATA_LAYERS and not len(l.bottom)):
            for top in l.top[:1] if l.type != "Input" else l.top:
                writes[top] = 1
        elif l.type not in ("Input", "Split") and not is_data_layer(l) and l.type not in DROPPED_LAYERS:
            for top in l.top:
                writes[top] = writes.get(top, 0) + 1
    return writes


@dataclass
class _GraphBuilder:
    """Adds a net's layers to ``graph`` one at a time, following which value each blob name holds."""

    graph: Graph
    writes: dict[str, int]
    weights: dict[str, Sequence[Any]] | None
    seed: int | None
    budget: checks.SizeBudget
    input_shape: Sequence[int] | None
    renamed: dict[str, str]  # a later layer of a shared name -> that name (caffe2x.caffe.layernames)
    shapes: dict[str, Shape] = field(init=False)
    current: dict[str, str] = field(init=False)  # blob -> its current value
    dropped: set[str] = field(default_factory=set)  # label tops and what train-only layers write
    silenced: set[str] = field(default_factory=set)
    fork_rule: str | None = None  # a FORK_RULES entry to read with
    fork_ruled: list[str] = field(default_factory=list)  # the layers it changed

    def __post_init__(self) -> None:
        self.shapes = dict(self.graph.inputs)
        self.current = {name: name for name in self.graph.inputs}

    def add(self, layer: Any) -> None:
        if layer.type == "Input" or is_data_layer(layer):
            if layer.type in DATA_LAYERS:
                self.dropped.update(layer.top[1:])
            return
        if layer.type == "Silence":  # consumes its bottoms, so Caffe does not report them as outputs
            self.silenced.update(self.current[b] for b in layer.bottom if b in self.current)
        if layer.type in DROPPED_LAYERS or any(b in self.dropped for b in layer.bottom):
            self.dropped.update(layer.top)
            return
        if len(layer.bottom) == 0 or len(layer.top) == 0:
            raise checks.GraphError(f"layer {layer.name!r} ({layer.type}) has no "
                                    f"{'bottom' if not layer.bottom else 'top'} blob")
        if layer.type == "Split":  # every top is the bottom
            self._check_bottoms(layer, layer.bottom[:1])
            for top in layer.top:
                self.current[top] = self.current[layer.bottom[0]]
            return
        handler = LAYERS.lookup(layer.type, layer.name)
        self._check_bottoms(layer, layer.bottom)
        inputs = [self.current[b] for b in layer.bottom]
        spec = None
        rule = FORK_RULES.get(self.fork_rule or "", {}).get(layer.type)
        if rule is not None:
            spec = self._spec(layer, rule, inputs)  # type: ignore[arg-type]
            if spec is not None:
                self.fork_ruled.append(layer.name)
        if spec is None:
            spec = self._spec(layer, handler, inputs)
        if isinstance(spec, Composite):  # internal nodes first, the last part is the layer itself
            spec, inputs = self._add_parts(layer, spec, inputs)
        self._add_node(layer, spec, inputs)

    def _check_bottoms(self, layer: Any, bottoms: Sequence[str]) -> None:
        for b in bottoms:
            if b not in self.current:
                raise Caffe2xError(f"layer {layer.name!r} reads blob {b!r}, which no earlier layer produces")

    def _blobs(self, layer: Any) -> BlobSource:
        if self.weights is None:
            return BlobSource(layer.name, None, self.seed, self.budget)
        if layer.name in self.renamed:  # Caffe copies trained blobs to the first layer of a name only
            source = BlobSource(layer.name, [], None)
            source.missing = (f" (it is a later layer named {self.renamed[layer.name]!r}: Caffe copies the "
                              f"caffemodel's blobs of that name to the first such layer only, so Caffe runs this "
                              f"one with untrained values)")
            return source
        return BlobSource(layer.name, self.weights.get(layer.name, []), None)

    def _spec(self, layer: Any, handler: Handler, inputs: list[str]) -> "LayerSpec | Composite":
        """What the layer type's handler makes of the layer, its errors naming the layer."""
        try:
            spec = handler(layer, [self.shapes[v] for v in inputs], self._blobs(layer))
        except Caffe2xError as exc:
            if self.input_shape is None or type(exc) is not Caffe2xError or \
                    not set(layer.bottom) & set(self.graph.inputs):
                raise
            raise Caffe2xError(f"{template(exc)} (input shape {list(self.input_shape)} from {option('input_shape')})") from None
        except (IndexError, KeyError, ValueError, TypeError, ZeroDivisionError, OverflowError) as exc:
            # last resort: a handler tripped over parameters no check above anticipated
            raise checks.GraphError(f"layer {layer.name!r} ({layer.type}) has parameters caffe2x cannot use "
                                    f"({type(exc).__name__}: {exc})") from None
        if hasattr(type(layer), "check_fork_fields_read"):  # a --proto layer with fork-only fields
            layer.check_fork_fields_read()
        return spec

    def _add_parts(self, layer: Any, spec: Composite, inputs: list[str]) -> tuple[LayerSpec, list[str]]:
        """Add a composite's internal nodes (``<layer>/<suffix>``); return its last part and that part's inputs."""
        inner: dict[str, str] = {}
        for part in spec.parts[:-1]:
            value = f"{layer.name}/{part.suffix}"
            if value in self.shapes or value in self.current:
                raise Caffe2xError(f"layer {layer.name!r}: its internal value {value!r} clashes with a blob")
            ins_ = [inputs[i] if isinstance(i, int) else inner[i] for i in part.inputs]
            params = {}
            for role, arr in part.spec.params.items():
                key = f"{value}.{role}"
                self.graph.tensors[key] = np.ascontiguousarray(arr, dtype=np.float32)
                params[role] = key
            sub = Node(value, part.spec.op, ins_, [value], part.spec.attrs, params)
            (sub_shape,) = checks.output_shapes(sub, [self.shapes[v] for v in ins_], self.graph)
            self.budget.value(layer.name, value, sub_shape)
            self.shapes[value] = tuple(int(d) for d in sub_shape)
            inner[part.suffix] = value
            self.graph.nodes.append(sub)
        last = spec.parts[-1]
        return last.spec, [inputs[i] if isinstance(i, int) else inner[i] for i in last.inputs]

    def _add_node(self, layer: Any, spec: LayerSpec, inputs: list[str]) -> None:
        # a blob written once is its own value; each write of a rewritten blob is `blob@layer`
        values = [top if self.writes[top] == 1 else f"{top}@{layer.name}" for top in layer.top]
        params = {}
        for role, arr in spec.params.items():
            key = f"{layer.name}.{role}"
            self.graph.tensors[key] = np.ascontiguousarray(arr, dtype=np.float32)
            params[role] = key
        node = Node(layer.name, spec.op, inputs, values, spec.attrs, params)
        out_shapes = checks.output_shapes(node, [self.shapes[v] for v in inputs], self.graph)
        for top, value, s in zip(layer.top, values, out_shapes):
            if any(d <= 0 for d in s):
                raise Caffe2xError(f"layer {layer.name!r} gives blob {top!r} the empty shape {list(s)}")
            self.budget.value(layer.name, top, s)
            self.shapes[value] = tuple(int(d) for d in s)
            self.current[top] = value
        self.graph.nodes.append(node)

    def finish(self, outputs: Sequence[str] | None) -> Graph:
        """The graph with its shapes, blob map and outputs (the requested ones, else the values nothing
        reads that no Silence consumed)."""
        graph, current = self.graph, self.current
        if not graph.nodes:
            raise Caffe2xError("the net has no layers caffe2x can run")
        seen_names: set[str] = set()
        for n in graph.nodes:
            if n.name in seen_names:
                raise Caffe2xError(f"two layers are called {n.name!r}")
            seen_names.add(n.name)
        graph.shapes = self.shapes
        graph.blobs = dict(current)
        if outputs is not None:
            missing = [o for o in outputs if o.partition("@")[0] not in current]
            if missing:
                raise Caffe2xError(f"the requested output {missing[0]!r} is not computed at inference (a train-only blob)")
            graph.outputs = [current[o] if "@" not in o else (o if self.writes.get(o.partition("@")[0], 0) > 1
                                                              else o.partition("@")[0]) for o in outputs]
        else:
            consumed = {v for n in graph.nodes for v in n.inputs}
            graph.outputs = [v for v in current.values() if v not in consumed and v not in graph.inputs]
            # a silenced blob is no output -- unless silencing left the net with none, which would convert
            # to nothing at all
            graph.outputs = [v for v in graph.outputs if v not in self.silenced] or graph.outputs
        graph.outputs = list(dict.fromkeys(graph.outputs))
        return graph


# --------------------------------------------------------------------------- entry points
def _read_file(path: str | Path) -> bytes:
    p = Path(path)
    if not p.exists():
        raise Caffe2xError(f"{p}: no such file")
    if p.is_dir():
        raise Caffe2xError(f"{p} is a directory, not a file")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise Caffe2xError(f"cannot read {p}: {exc.strerror or exc}") from None


def _read_text(path: str | Path) -> str:
    from caffe2x.caffe.sniff import binary_prototxt_message, looks_like_text

    data = _read_file(path)
    if data and not looks_like_text(data):
        raise Caffe2xError(binary_prototxt_message(str(path)))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Caffe2xError(f"{path} is not a text prototxt (not UTF-8 at byte offset {exc.start})") from None


def read_mean(path: str | Path) -> np.ndarray:
    """A ``.binaryproto`` mean file (BlobProto) as a float32 ``(C, H, W)`` array."""
    from google.protobuf.message import DecodeError

    data = _read_file(path)
    blob = _pb2().BlobProto()
    try:
        blob.ParseFromString(data)
        arr = blob_array(blob)
    except (DecodeError, RuntimeError, ValueError, Caffe2xError) as exc:
        raise Caffe2xError(f"{path} is not a Caffe mean file (BlobProto): {exc}") from None
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.size == 0:
        raise Caffe2xError(f"{path}: a mean file needs a (1,) C x H x W blob, got shape {list(arr.shape)}")
    return arr


def weights_by_layer(net: Any) -> dict[str, Sequence[Any]]:
    return {l.name: l.blobs for l in net.layer if len(l.blobs)}


def read_bytes(model: bytes | None, prototxt_text: str | None = None, input_shape: Sequence[int] | None = None,
               *, seed: int = 0, progress: bool = False, model_name: str = "caffemodel",
               prototxt_name: str = "prototxt", outputs: Sequence[str] | None = None) -> Graph:
    """Build a graph from in-memory caffemodel bytes and/or prototxt text."""
    weights_net, weights = split(model, model_name, parse_caffemodel_bytes) if model is not None else (None, None)
    definition = parse_prototxt_text(prototxt_text, prototxt_name) if prototxt_text is not None else None
    source = prototxt_name if prototxt_text is not None else model_name
    return graph_from_nets(weights_net, definition, input_shape, seed=seed, progress=progress, outputs=outputs,
                           weights=weights, source=source)


def _add_sizes_taken(exc: Caffe2xError, definition: Any, weights: dict[str, Sequence[Any]] | None,
                     outputs: Sequence[str] | None, limit: int, source: str) -> None:
    """Complete the error of a net read at a size it cannot take with the sizes it does take (from
    the net as declared; nothing is added when that does not read either)."""
    from caffe2x.graph.reshape import describe_inputs, free_input_dims

    try:
        declared = build_graph(definition, weights, None, seed=0, outputs=outputs,
                               budget=checks.SizeBudget(limit, source))
        taken = describe_inputs(free_input_dims(declared))
    except Caffe2xError:
        return
    exc.args = (f"{exc.args[0]}; the net takes {taken}",)


def graph_from_nets(weights_net: Any | None, definition: Any | None, input_shape: Sequence[int] | None = None,
                    *, seed: int = 0, progress: bool = False, outputs: Sequence[str] | None = None,
                    weights: dict[str, Sequence[Any]] | None = None, max_bytes: int | None = None,
                    source: str | None = None) -> Graph:
    """The graph of ``definition`` (or of ``weights_net`` alone) with ``weights_net``'s blobs (or
    ``weights``, the blobs by layer name that :func:`caffe2x.caffe.wire.split` took out of it).

    The graph passes :func:`caffe2x.graph.checks.check_graph`; a weightless net's calibration forward pass
    is checked against the size limit before it runs. ``source`` names the file in errors (default:
    ``prototxt`` when a definition is given, else ``caffemodel``, as :func:`read_bytes` says).
    """
    source = source or ("prototxt" if definition is not None else "caffemodel")
    definition = definition if definition is not None else weights_net
    if definition is None:
        raise Caffe2xError("give a caffemodel, a prototxt, or both")
    if weights is None and weights_net is not None:
        weights = weights_by_layer(weights_net)
    limit = checks.max_bytes(max_bytes)
    try:
        graph = build_graph(definition, weights, input_shape, seed=seed, progress=progress, outputs=outputs,
                            budget=checks.SizeBudget(limit, source))
    except Caffe2xError as exc:
        _name_source(exc, source)
        if input_shape is not None and type(exc) is Caffe2xError:
            _add_sizes_taken(exc, definition, weights, outputs, limit, source)
        raise
    checks.check_graph(graph, source, limit=limit)
    if weights is None:
        batch = 2 if any(len(s) == 4 for s in graph.inputs.values()) else None
        need = checks.tensor_bytes(graph) + checks.forward_bytes(graph, batch)
        if need > limit:
            raise checks.SizeLimitError(f"{source}: seeding the weightless net {graph.name!r} runs a forward pass "
                                        f"that needs {checks.human(need)}, over the {checks.human(limit)} limit "
                                        f"(raise it with {checks.MAX_BYTES_ENV}=… or max_bytes=)")
        from caffe2x.caffe.calibration import calibrate

        calibrate(graph, seed, progress=progress)
    return graph


def _name_source(exc: Exception, source: str) -> None:
    """Prefix an error's one-line message with the file it is about (class and attributes kept)."""
    msg = str(exc)
    if source not in msg:
        prefix(exc, f"{source}: ")


def graph_from_text(prototxt_text: str, seed: int = 0, input_shape: Sequence[int] | None = None, *,
                    progress: bool = False) -> Graph:
    """A weightless net from prototxt text, with seeded calibrated tensors."""
    return read_bytes(None, prototxt_text, input_shape, seed=seed, progress=progress)


def path_arg(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return text
    raise Caffe2xError(f"{what} must be a path (str or os.PathLike), got {type(value).__name__} {value!r:.60}")


def check_input_shape(input_shape: Any) -> tuple[int, ...] | None:
    """``input_shape`` as positive ints, or a Caffe2xError (strings, floats, bools are refused)."""
    if input_shape is None:
        return None
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise Caffe2xError(f"input_shape must be a sequence of positive integers, got {input_shape!r:.60}")
    dims = []
    for d in input_shape:
        if isinstance(d, bool) or not hasattr(d, "__index__"):
            raise Caffe2xError(f"input_shape must be a sequence of positive integers, got {list(input_shape)!r:.60}")
        dims.append(int(d))
    if not dims or any(d <= 0 for d in dims):
        raise Caffe2xError(f"input_shape must be positive integers, got {dims}")
    return tuple(dims)


def read(model: str | Path | None, prototxt: str | Path | None = None, input_shape: Sequence[int] | None = None,
         *, progress: bool = False, seed: int = 0, outputs: Sequence[str] | None = None,
         proto: str | Path | None = None, max_bytes: int | None = None) -> Graph:
    """A Caffe net as a checked graph (behind :func:`caffe2x.loading.read_model`); ``proto``: a fork's own
    caffe.proto to read with."""
    model = path_arg(model, "model")  # type: ignore[assignment]
    prototxt = path_arg(prototxt, "prototxt")  # type: ignore[assignment]
    proto = path_arg(proto, "proto")  # type: ignore[assignment]
    input_shape = check_input_shape(input_shape)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise Caffe2xError(f"seed must be an integer, got {seed!r:.60}")
    if model is None and prototxt is None:
        raise Caffe2xError("give a caffemodel, a prototxt, or both")
    if model is not None and prototxt is not None:
        _refuse_swapped(model, prototxt)
    schema = None
    if proto is not None:
        from caffe2x.caffe.schema import load_schema

        schema = load_schema(proto)
    parse = parse_caffemodel_bytes if schema is None else partial(parse_caffemodel_bytes, schema=schema)
    hdf5 = model is not None and is_hdf5(model)  # snapshot_format: HDF5, weights only
    # map the file: blob payloads stay in it as zero-copy views (lifetime rules in caffe2x.caffe.wire)
    mapped = map_file(model) if model is not None and not hdf5 else None
    weights_net, weights = (split(mapped or _read_file(model), str(model), parse)  # type: ignore[arg-type]
                            if model is not None and not hdf5 else (None, None))
    definition = parse_prototxt_text(_read_text(prototxt), str(prototxt), schema) if prototxt is not None else None
    if hdf5:
        if definition is None:
            raise Caffe2xError(f"{model} is an HDF5 caffemodel, which holds only weights: give the deploy prototxt")
        from caffe2x.caffe.hdf5weights import read_hdf5_weights

        weights_net = read_hdf5_weights(model, [l.name for l in definition.layer])  # type: ignore[arg-type]
    graph = graph_from_nets(weights_net, definition, input_shape, seed=seed, progress=progress, outputs=outputs,
                            weights=weights, max_bytes=max_bytes,
                            source=str(prototxt if prototxt is not None else model))
    if mapped is not None:
        # Reading touched a few bytes around each blob (and BatchNorm's small blobs whole), but each read
        # fault maps the cached pages around it too (fault-around, whole large folios): ResNet-50 had
        # ~53 MB of its 98 MiB file resident before any weight was used. Hand them back; views fault
        # them in again when read (pages written since mapping are kept: caffe2x.graph.pages).
        release_map(mapped)
    return graph


def _refuse_swapped(model: str | Path, prototxt: str | Path) -> None:
    """A text MODEL with a binary prototxt: name the swap rather than two separate complaints."""
    from caffe2x.caffe.sniff import TEXT_WINDOW, looks_like_text, swapped_message

    heads = []
    for path in (model, prototxt):
        try:
            with open(path, "rb") as f:
                heads.append(f.read(TEXT_WINDOW))
        except OSError:
            return  # the normal path reports missing or unreadable files
    if heads[0] and heads[1] and looks_like_text(heads[0]) and not looks_like_text(heads[1]):
        raise Caffe2xError(swapped_message(str(model), str(prototxt)))
