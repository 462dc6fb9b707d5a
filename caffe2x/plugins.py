"""User-registered layers: a fork's layer type added to every stage with one call.

The long tail of the Caffe zoo is fork layers nobody else has. Instead of waiting for caffe2x to learn
each one, a user (or a package) registers it::

    caffe2x.register_layer("ScaledTanh", reader=read_scaled_tanh, shape=same_shape,
                           reference=numpy_scaled_tanh, torch=torch_scaled_tanh,
                           keras=keras_scaled_tanh, onnx=onnx_scaled_tanh)

Each side is the function that side's registry holds for built-in ops (see ``docs/forks.md`` for the
signatures and a complete worked example). Framework sides are *pending* until their target is imported,
so registering a torch builder never imports torch (:func:`caffe2x.targets.families.add_builder` keeps
them for the target package, which adopts them when it is imported).

Packages can ship layers without the user calling anything: an entry point in the group
``caffe2x.layers`` names a function (called with no arguments) or a module (imported) that registers
them. Entry points are read lazily, the first time any registry misses a name, so they cost nothing for
nets that use only built-in layers.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from caffe2x.caffe.reader import LAYERS
from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import SHAPE_FUNCTIONS
from caffe2x.graph.reference import OPS as REFERENCE_OPS
from caffe2x.graph.registry import Registry
from caffe2x.targets.families import add_builder

#: entry-point group of third-party layer packages
ENTRY_POINT_GROUP = "caffe2x.layers"

_entry_points_loaded = False
#: every op :func:`register_layer` gave a shape, reference or target function (``validate`` keeps nets
#: using one in its own process: a fresh process would not know a function registered in this one)
REGISTERED_OPS: set[str] = set()


def register_layer(layer_type: str, *, reader: Callable[..., Any], shape: Callable[..., Any] | None = None,
                   reference: Callable[..., Any] | None = None, op: str | None = None, replace: bool = False,
                   **targets: Callable[..., Any]) -> None:
    """Teach caffe2x the Caffe layer type ``layer_type``.

    ``reader(layer, input_shapes, blobs) -> caffe2x.caffe.reader.LayerSpec`` turns the Caffe layer into a graph
    op (``op``, default ``layer_type``) with attributes and tensors. ``shape(node, input_shapes, graph)``
    and ``reference(node, inputs, graph)`` are the op's shape rule and numpy reference (required for a
    new op; omit both to map the layer onto an op caffe2x already has). Keyword arguments named after a
    target (``torch=``, ``keras=``, ``onnx=``, or a third-party target's name) are that target's op
    builder. ``replace=True`` allows overriding a layer type or op that is already registered.
    """
    if not isinstance(layer_type, str) or not layer_type:
        raise Caffe2xError("register_layer needs the Caffe layer type as a non-empty string")
    if not callable(reader):
        raise Caffe2xError(f"register_layer({layer_type!r}): reader must be a function")
    op = op or layer_type
    known_op = op in SHAPE_FUNCTIONS and op in REFERENCE_OPS
    if (shape is None or reference is None) and not known_op:
        raise Caffe2xError(f"register_layer({layer_type!r}): op {op!r} is new, so it needs both shape= and reference=")
    if not replace:
        clash = [what for what, taken in (("layer type", layer_type in LAYERS),
                                          ("op", op in SHAPE_FUNCTIONS and shape is not None)) if taken]
        if clash:
            raise Caffe2xError(f"register_layer({layer_type!r}): the {' and '.join(clash)} {op!r} is already "
                               f"registered; pass replace=True to override it")
    for name, fn in [("shape", shape), ("reference", reference), *targets.items()]:
        if fn is not None and not callable(fn):
            raise Caffe2xError(f"register_layer({layer_type!r}): {name}= must be a function")
    LAYERS[layer_type] = reader
    if shape is not None or reference is not None or targets:
        REGISTERED_OPS.add(op)
    if shape is not None:
        SHAPE_FUNCTIONS[op] = shape
    if reference is not None:
        REFERENCE_OPS[op] = reference
    for target, fn in targets.items():
        add_builder(target, op, fn)


def load_entry_points() -> bool:
    """Run every ``caffe2x.layers`` entry point once; True when they were run by this call."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return False
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        run_entry_point(ep.name, ep.value, ep.load)
    return True


def run_entry_point(name: str, value: str, load: Callable[[], Any]) -> None:
    """Load one entry point (a registering function is called; a module registers on import)."""
    try:
        obj = load()
        if callable(obj):
            obj()
    except Caffe2xError:
        raise
    except Exception as exc:  # a broken plugin must not look like a caffe2x bug
        raise Caffe2xError(f"layer plugin {name!r} ({value}) failed to load: {type(exc).__name__}: {exc}") from None


Registry.miss_hooks.append(load_entry_points)
