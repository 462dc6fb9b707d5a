"""Caffe layer types, one family per module: :mod:`.core` (the reader handlers of the core types, whose
shape rules and references are in :mod:`caffe2x.graph.ir` / :mod:`caffe2x.graph.reference`) and the families beyond
it.

One module per family (``elementwise``, ``broadcast``, ``shape``, ``normalization``, ``channels``, …),
named for what it holds. Each module registers, for every layer type it covers, the three numpy-side
pieces with the registries' own decorators (see :mod:`caffe2x.layers.base`):

* the reader handler (:data:`caffe2x.caffe.reader.LAYERS`: Caffe layer -> graph op, attributes, tensors),
* the shape rule (:data:`caffe2x.graph.ir.SHAPE_FUNCTIONS`),
* the numpy reference (:data:`caffe2x.graph.reference.OPS`, Caffe's CPU semantics).

Target ops live in ``caffe2x/targets/<framework>/<family>.py`` and register with that target's op
registry.

Why the families are always registered, without an import cycle: a family imports the modules whose
registries it fills (``reader``, ``ir``, ``reference``), so those modules cannot import the families
back. Instead the *package* ``caffe2x/__init__.py`` (which Python runs before any submodule can be
used) hooks this package to the first read of any registry (``Registry.first_use``): whoever reads
``caffe2x.caffe.reader.LAYERS``, ``caffe2x.graph.ir.SHAPE_FUNCTIONS`` or ``caffe2x.graph.reference.OPS``
-- through ``caffe2x.load``, ``python -m caffe2x`` or those modules alone -- finds every family
registered, ``import caffe2x`` by itself imports none of them, and no caffe2x module imports a module
that imports it (``tests/layers/test_layer_families.py`` pins both facts).

Adding a family: write ``caffe2x/layers/<family>.py`` and import it below.
"""
from __future__ import annotations

from caffe2x.layers import core  # noqa: F401  (first: families extend some core handlers)
from caffe2x.layers import (broadcast, channels, dense, detection, elementwise, embedding, normalization, proposal,
                            pyramid, recurrent, reduction, resample, roi, sequence, shape,
                            yolo_pooling)  # noqa: F401

#: the family modules (importing each registers it)
FAMILIES = ("core", "elementwise", "broadcast", "shape", "reduction", "normalization", "channels", "embedding",
            "detection", "resample", "roi", "proposal", "recurrent", "sequence", "pyramid", "dense",
            "yolo_pooling")
