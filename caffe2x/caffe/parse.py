"""Caffe's protobuf messages from bytes and text: ``NetParameter`` (binary caffemodels, text
prototxts, upgraded to the ``layer`` format) and ``BlobProto`` arrays.

Parsing errors become one-line :class:`~caffe2x.errors.Caffe2xError` messages that say what the file
is instead (a text prototxt given as the model, a truncated download, …; :mod:`caffe2x.caffe.sniff`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from caffe2x.caffe.forkfix import fix_fork_fields
from caffe2x.caffe.upgrade import upgrade
from caffe2x.errors import Caffe2xError


def _pb2():  # type: ignore[no-untyped-def]
    from caffe2x.caffe.proto import caffe_pb2

    return caffe_pb2


def parse_caffemodel_bytes(data: bytes, source: str = "caffemodel", schema: Any = None) -> Any:
    """Binary ``NetParameter`` (upgraded to the ``layer`` format); ``schema``: a fork's (:mod:`.schema`)."""
    from google.protobuf.message import DecodeError

    from caffe2x.caffe.sniff import looks_like_text, text_model_message, truncation

    if not data:
        raise Caffe2xError(f"{source} is empty")
    if looks_like_text(data):
        raise Caffe2xError(text_model_message(source))
    if schema is not None:
        from caffe2x.caffe.schema import parse_binary, to_caffe2x

        net = to_caffe2x(parse_binary(schema, data, source), source)
    else:
        net = _pb2().NetParameter()
        try:
            net.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            cut = truncation(data)
            if cut is not None:
                raise Caffe2xError(f"{source} is {cut}") from None
            raise Caffe2xError(f"{source} is not a Caffe model (protobuf decoding failed: {exc})") from None
    net = upgrade(net, source)
    if not net.layer:
        raise Caffe2xError(f"{source} holds no Caffe layers (is it a caffemodel?)")
    if schema is None:  # a fork's own schema has its own numbers: nothing collides
        fix_fork_fields(net, _pb2(), data)
    return net


def parse_prototxt_text(text: str, source: str = "prototxt", schema: Any = None) -> Any:
    """Text ``NetParameter`` (upgraded). Fields the schema does not know are an error naming them."""
    from google.protobuf import text_format

    if schema is not None:
        from caffe2x.caffe.schema import parse_text, to_caffe2x

        net = to_caffe2x(parse_text(schema, text, source), source)
    else:
        net = _pb2().NetParameter()
        try:
            text_format.Parse(text, net)
        except text_format.ParseError as exc:
            raise Caffe2xError(f"{source} is not a valid Caffe prototxt: {_parse_error_text(exc, net)}") from None
    net = upgrade(net, source)
    if not net.layer and not net.input:
        raise Caffe2xError(f"{source} defines no layers")
    return net


def _parse_error_text(exc: Exception, net: Any) -> str:
    """protobuf's message as ``line L, column C: ...``, without the schema's private package name."""
    from caffe2x.caffe.schema import describe_parse_error

    return describe_parse_error(exc, net.DESCRIPTOR.file.package)


def blob_array(blob: Any) -> np.ndarray:
    """A ``BlobProto`` as a float32 array in its stored shape (modern ``shape`` or legacy 4-D dims).
    An array (a view of the payload from caffe2x.caffe.wire, or an HDF5 caffemodel's blob) is returned as it is."""
    if isinstance(blob, np.ndarray):
        return blob
    legacy = ""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    elif blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") or blob.HasField("width"):
        shape = (blob.num, blob.channels, blob.height, blob.width)
        legacy = " (legacy num, channels, height, width)"
    else:
        shape = (len(blob.data) or len(blob.double_data),)
    if len(blob.data):
        arr = np.array(blob.data, dtype=np.float32)
    elif len(blob.double_data):
        arr = np.array(blob.double_data, dtype=np.float64).astype(np.float32)
    else:
        arr = np.zeros(0, dtype=np.float32)
    if any(d < 0 for d in shape):  # numpy would read one -1 as "infer it" and choke on two
        raise Caffe2xError(f"blob shape {list(shape)}{legacy} has a negative dimension")
    count = math.prod(shape)
    if arr.size != count:
        raise Caffe2xError(f"blob of shape {list(shape)} holds {arr.size} values, expected {count}")
    return arr.reshape(shape)
