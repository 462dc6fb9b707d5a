"""The op families every built-in framework target implements, and how a target package loads them.

Each family is a module ``caffe2x/targets/<framework>/<family>.py`` mirroring a layer family of
:mod:`caffe2x.layers`; importing it registers its builders in that target's op registry. One list and
one loader here, so a new family is added to every framework's package in one place.
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from ..plugins import apply_pending

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


def load_op_families(package: str, target: str, registry: Any, families: Sequence[str] = OP_FAMILIES) -> None:
    """Import ``package``'s op-family modules (each registers its builders in ``registry``), then adopt
    the builders users registered for ``target`` with :func:`caffe2x.register_layer` before now."""
    for family in families:
        importlib.import_module(f"{package}.{family}")
    apply_pending(target, registry)
