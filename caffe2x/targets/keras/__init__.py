"""Keras 3 target: a functional ``keras.Model`` with Caffe's exact semantics, and the files it is saved as.

Layout: every 4-D blob is NHWC (channels last, Keras' default and the only layout TensorFlow's CPU
convolutions support), so the model's input is NHWC. Blobs of any other rank keep Caffe's axis order.
The channels-last traps are handled where they arise: Caffe axes of 4-D blobs are mapped
(:func:`keras_axis`), an InnerProduct reading a 4-D blob gets its weight rows permuted from Caffe's
C,H,W flattening order to Keras' H,W,C order (free at run time), and a Flatten of a 4-D blob first
permutes back to NCHW so its output has Caffe's order.

Layer names: each Caffe layer becomes one Keras layer carrying its name (plus helper layers such as
``<name>__pad`` for an explicit ZeroPadding2D). Names are sanitised by one rule, :func:`keras_name`:
every character outside ``[A-Za-z0-9_.-]`` becomes ``_`` (TensorFlow scope names allow nothing else,
and Keras forbids ``/``); a name already taken gets ``_2``, ``_3``, … (Caffe layer names are claimed
first, in net order, then input blob names, then helper layers).

Standard Keras layers are used wherever they compute exactly what Caffe does; the rest are small
registered custom layers in :mod:`caffe2x.targets.keras.layers`. Adding an op is one function
registered with :func:`builder`.

Files (:func:`write`):

* ``.h5`` -- weights in Keras' HDF5 weights layout (root attrs ``layer_names``, ``backend``,
  ``keras_version``; per layer ``weight_names`` and datasets ``<layer>/<layer>/<weight>``), written
  with h5py. Load with ``model = caffe2x.to_keras(graph); model.load_weights("net.h5")``: Keras 3
  reads a plain ``.h5`` (not ``.weights.h5``) with its legacy HDF5 loader, by layer order or with
  ``by_name=True``. A destination named ``*.weights.h5`` gets Keras 3's native weights format instead,
  since that is the loader Keras picks for that name.
* ``.h5`` with ``full_model=True`` -- the whole model (config + weights), via ``model.save``; load with
  ``import caffe2x.targets.keras`` then ``keras.models.load_model(path, compile=False)`` (no training configuration is stored).
* ``.keras`` -- Keras 3's native format, via ``model.save``; load the same way.
* ``profile="keras-applications"`` -- an ``.h5`` that ``keras.applications.ResNet50(weights=None)``
  (or ResNet101/152) loads with ``load_weights``; see :func:`write_keras_applications`.

Layout of this package: :mod:`.layers` (the registered custom layers, ``caffe2x>…``), :mod:`.ops` (the op
registry :data:`OPS` and the core builders), :mod:`.model` (:func:`to_model`), :mod:`.files`
(:func:`write`), :mod:`.h5` (Keras' HDF5 weights layout), :mod:`.profiles` (``keras-applications``).
A new op family is a module ``caffe2x/targets/keras/<family>.py`` importing only from ``.ops`` (and
``.layers`` or caffe2x helpers), listed in :data:`caffe2x.targets.families.OP_FAMILIES`.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from caffe2x.targets.keras.quiet import quiet_import, without_unused_extras  # noqa: E402

# TensorFlow's import-time oneDNN/absl lines off; in caffe2x's own processes, without the optional packages
# TensorFlow and Keras import for features caffe2x never uses (see .quiet)
with quiet_import(), without_unused_extras():
    import keras  # noqa: E402,F401

from caffe2x.targets import BUILTIN  # noqa: E402
from caffe2x.targets.families import OP_FAMILIES, load_op_families  # noqa: E402
from caffe2x.targets.keras.files import SUFFIXES, write  # noqa: E402
from caffe2x.targets.keras.h5 import write_weights_h5  # noqa: E402
from caffe2x.targets.keras.layers import (CUSTOM_OBJECTS, CaffeEltwiseSum, CaffeLRN, CaffePooling2D, CaffeScale)  # noqa: E402
from caffe2x.targets.keras.model import to_model  # noqa: E402
from caffe2x.targets.keras.ops import (BUILDERS, NCHW_TO_NHWC, OPS, BuildContext, builder, keras_axis, keras_name,
                                       set_weights)  # noqa: E402
from caffe2x.targets.keras.profiles import write_keras_applications  # noqa: E402
from caffe2x.targets.keras.trainable import make_trainable  # noqa: E402

#: this package's :class:`~caffe2x.targets.Target` (declared in :data:`caffe2x.targets.BUILTIN`, so that
#: listing targets imports no framework; its write / load / stored_tensors live in :mod:`.target`)
TARGET = next(t for t in BUILTIN if t.name == "keras")

#: op-family modules of this package (``<family>.py`` beside ``ops.py``); importing the target imports
#: each, which registers its builders in :data:`OPS` (see :mod:`caffe2x.targets.families`)
FAMILIES: tuple[str, ...] = OP_FAMILIES
load_op_families(__name__, "keras", OPS, FAMILIES)

__all__ = ["TARGET", "SUFFIXES", "FAMILIES", "OPS", "BUILDERS", "CUSTOM_OBJECTS", "builder", "keras_axis", "keras_name",
           "to_model", "write", "write_weights_h5", "write_keras_applications", "BuildContext", "set_weights",
           "NCHW_TO_NHWC", "CaffeEltwiseSum", "CaffeLRN", "CaffePooling2D", "CaffeScale", "make_trainable"]
