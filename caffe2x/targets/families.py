"""The op families every built-in framework target implements, and how a target package loads them.

Each family is a module ``caffe2x/targets/<framework>/<family>.py`` mirroring a layer family of
:mod:`caffe2x.layers`; importing it registers its builders in that target's op registry. One list and
one loader here, so a new family is added to every framework's package in one place.

Builders that :func:`caffe2x.register_layer` receives for a target are kept here until that target's
package is imported (registering a torch builder must not import torch): :func:`add_builder` is the
plugin side's door, :func:`load_op_families` the target side's.
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Callable

from caffe2x.graph.registry import Registry

#: op-family modules of each built-in framework target package, in registration order
OP_FAMILIES: tuple[str, ...] = (
    "detection",
    "resample",
    "roi",
    "proposal",
    "recurrent",
    "sequence",
    "elementwise",
    "broadcast",
    "shape",
    "reduction",
    "normalization",
    "channels",
    "embedding",
)


#: target name -> (op -> builder) waiting for that target's package to be imported
_pending: dict[str, dict[str, Callable[..., Any]]] = {}
#: target name -> its op registry, once the target's package is imported
_registries: dict[str, Registry[Any]] = {}


def add_builder(target: str, op: str, builder: Callable[..., Any]) -> None:
    """Register ``builder`` for ``op`` in ``target``: now when the target is imported, else once it is."""
    if target in _registries:
        _registries[target][op] = builder
    else:
        _pending.setdefault(target, {})[op] = builder


def apply_pending(target: str, registry: Registry[Any]) -> None:
    """Called by a target package when it is imported: adopt the builders registered for it so far and
    receive later ones directly."""
    _registries[target] = registry
    for op, fn in _pending.pop(target, {}).items():
        registry[op] = fn


def load_op_families(package: str, target: str, registry: Any, families: Sequence[str] = OP_FAMILIES) -> None:
    """Import ``package``'s op-family modules (each registers its builders in ``registry``), then adopt
    the builders users registered for ``target`` with :func:`caffe2x.register_layer` before now."""
    for family in families:
        importlib.import_module(f"{package}.{family}")
    apply_pending(target, registry)
