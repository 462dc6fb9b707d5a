"""The one exception type users of caffe2x need to catch.

Every problem caused by the user's input (a broken caffemodel, a prototxt that does not match it, an
unsupported layer, an unwritable output path) is raised as :class:`Caffe2xError` with a one-line
message. The CLI prints it as ``error: <message>`` and exits non-zero; anything else escaping is a bug.
"""
from __future__ import annotations


class Caffe2xError(Exception):
    """A user-facing error: the message is one line and names what is wrong and where."""


class UnsupportedLayerError(Caffe2xError):
    """A Caffe layer type caffe2x has no handler for (the message names the layer and its type)."""

    def __init__(self, layer: str, layer_type: str, what: str = "layer type") -> None:
        super().__init__(f"unsupported {what} {layer_type!r} in layer {layer!r}")
        self.layer = layer
        self.layer_type = layer_type


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (at most 300 characters): third-party
    libraries raise multi-line messages; caffe2x reports one line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class DuplicateLayerNameWarning(UserWarning):
    """A net names two layers alike (HED's two ``crop`` layers): Caffe allows it; caffe2x follows Caffe's
    weight copying and renames the later ones (:mod:`caffe2x.caffe.layernames`)."""
