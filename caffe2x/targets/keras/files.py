"""Writing the Keras target's files: ``.h5`` weights (Keras' HDF5 layout), ``.h5`` full model, ``.keras``."""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from caffe2x.errors import Caffe2xError, option
from caffe2x.graph.ir import Graph
from caffe2x.graph.numeric import round_to
from caffe2x.targets import WriteOptions
from caffe2x.targets import handoff_allowed
from caffe2x.targets.keras.h5 import write_weights_h5
from caffe2x.targets.keras.model import build_net, offer
from caffe2x.targets.keras.profiles import write_keras_applications

SUFFIXES = (".h5", ".keras")




def write(graph: Graph, path: str | os.PathLike[str], options: WriteOptions) -> list[str]:
    """Write ``graph`` to ``path`` (``.h5`` weights, ``.h5`` full model, ``.keras``); return notes."""
    path = Path(path)
    suffix = path.suffix.lower()
    full_model = bool(options.extra.get("full_model"))
    if suffix not in SUFFIXES:
        raise Caffe2xError(f"the keras target writes {', '.join(SUFFIXES)} files, not {path.name!r}")
    if options.profile is not None:
        if options.profile != "keras-applications":
            raise Caffe2xError(f"unknown Keras naming profile {options.profile!r}; the Keras target knows "
                               f"'keras-applications'")
        if suffix != ".h5" or full_model:
            raise Caffe2xError(f"the keras-applications profile writes a weights-only .h5 for "
                               f"keras.applications (no {option('full_model', True)}, no .keras)")
        return write_keras_applications(graph, path, options.dtype)

    net = build_net(graph)
    model = net.model(graph)
    if handoff_allowed():  # validate's write-then-load: the load right after reuses the layers
        offer(graph, net, model)
    notes: list[str] = []
    if options.dtype != "float32":
        _round_variables(model, options.dtype)
    if suffix == ".keras" or full_model:
        with warnings.catch_warnings(), _without_absl_lines("This file format is considered legacy"):
            warnings.simplefilter("ignore")  # Keras calls .h5 'legacy'; it is what was asked for
            with _weights_through_a_file() if suffix == ".keras" else contextlib.nullcontext():
                model.save(str(path))
        kind = "Keras 3 native model" if suffix == ".keras" else "Keras HDF5 model (config + weights)"
        # no training configuration is stored (the model is not compiled): compile=False loads it without
        # Keras' "No training configuration found" warning
        notes.append(f"{kind}: `import caffe2x.targets.keras` (registers the caffe2x layers), then "
                     f"`keras.models.load_model(path, compile=False)`; input is NHWC")
        if options.dtype != "float32":
            notes.append(f"Keras holds the weights as float32 variables; their values are rounded to {options.dtype}")
        return notes
    if _is_native_weights_name(Path(options.destination) if options.destination else path):
        _save_native_weights(model, path)
        notes.append("Keras 3 native weights (.weights.h5): `model = caffe2x.to_keras(graph)`, then "
                     "`model.load_weights(path)`")
        if options.dtype != "float32":
            notes.append(f"Keras holds the weights as float32 variables; their values are rounded to {options.dtype}")
        return notes
    write_weights_h5(model, path, store_dtype=np.float16 if options.dtype == "float16" else np.float32)
    notes.append("Keras HDF5 weights, layers named after the Caffe layers: `model = caffe2x.to_keras(graph)`, "
                 "then `model.load_weights(path)` (input is NHWC)")
    if options.dtype == "float16":
        notes.append("weights stored as float16; Keras loads them into float32 variables")
    elif options.dtype == "bfloat16":
        notes.append("HDF5 has no bfloat16: weights rounded to bfloat16 and stored as float32")
    return notes


def _round_variables(model: keras.Model, dtype: str) -> None:
    for var in model.weights:
        var.assign(round_to(np.asarray(var.numpy()), dtype))


_NATIVE_WEIGHTS_NAME = re.compile(r"\.weights\.h5$")


@contextlib.contextmanager
def _without_absl_lines(text: str) -> Iterator[None]:
    """Drop absl log records containing ``text`` while the block runs (Keras logs its advice through
    absl, which Python's ``warnings`` filters do not reach); every other record passes."""
    import logging

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return text not in record.getMessage()

    logger, drop = logging.getLogger("absl"), _Drop()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@contextlib.contextmanager
def _weights_through_a_file() -> Iterator[None]:
    """Keras' ``.keras`` writer with its weights going through a temporary file beside the output, not
    memory.

    Why: when it judges memory sufficient (the weights under a share of the free RAM: always, for
    any model caffe2x converts on a usual machine) Keras builds the archive's ``model.weights.h5`` in an
    ``io.BytesIO`` and copies it into the zip, a whole copy of the weights at the peak of the save
    (ResNet-50: +107 MiB); otherwise it writes a temporary file next to the output and copies that
    into the zip, its own branch for big models. This takes that branch for every model (Keras'
    private ``saving_lib.is_memory_sufficient`` answered False while the block runs; where a Keras
    version lacks it, nothing changes). The archive's members are the same either way."""
    try:
        from keras.src.saving import saving_lib
    except ImportError:
        yield
        return
    real = getattr(saving_lib, "is_memory_sufficient", None)
    if real is None:
        yield
        return
    saving_lib.is_memory_sufficient = lambda model: False
    try:
        yield
    finally:
        saving_lib.is_memory_sufficient = real


def _is_native_weights_name(path: Path) -> bool:
    """``x.weights.h5`` (the destination's name, not the temporary one): Keras 3's ``load_weights`` reads names ending in ``.weights.h5``
    with its native weights loader, not the HDF5 one, so such a file must be in that format."""
    return _NATIVE_WEIGHTS_NAME.search(path.name) is not None


def _save_native_weights(model: keras.Model, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".caffe2x.", suffix=".weights.h5", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 __array__ notice from Keras itself
            model.save_weights(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
