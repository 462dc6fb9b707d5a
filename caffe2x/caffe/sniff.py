"""What kind of file is this? Diagnoses for the two files a Caffe model comes as.

A user who swaps the ``.prototxt`` and the ``.caffemodel``, or whose download stopped half way, would
otherwise read protobuf's "Wire format was corrupt". These helpers look at the bytes themselves and
say which file is text, which is binary, and where a truncated caffemodel ends. They only run on the
way to an error (or on the first few KB of a file), so they cost nothing on the normal path.
"""
from __future__ import annotations

import codecs
import os
import re

from caffe2x.errors import option

#: how much of a file :func:`looks_like_text` reads
TEXT_WINDOW = 64 * 1024
#: the control characters a text prototxt never holds: all below a space but tab, LF, VT, FF and CR
_NOT_TEXT = re.compile("[\x00-\x08\x0e-\x1f]")
#: NetParameter fields that hold one layer each: ``layer`` (current) and ``layers`` (V1)
_LAYER_FIELDS = {100: "layer", 2: "layers"}


#: the first 8 bytes of every HDF5 file (Caffe's ``snapshot_format: HDF5`` caffemodels)
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an HDF5 file (by its signature, whatever the suffix)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(HDF5_MAGIC)) == HDF5_MAGIC
    except OSError:
        return False


def looks_like_text(data: bytes) -> bool:
    """True when ``data`` starts like a text prototxt (UTF-8, no control bytes but whitespace, a
    ``:`` or ``{`` somewhere).

    A binary caffemodel never does: its first layer record starts with the tag byte 0xa2 (field 100)
    or, in the V1 format, 0x12 (field 2), and float data is full of NUL and non-UTF-8 bytes.
    """
    if not data:
        return False
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:TEXT_WINDOW], final=False)
    except UnicodeDecodeError:
        return False
    # a prototxt has at least one ``field:`` or ``message {``; a caffemodel cut inside its name has not
    return _NOT_TEXT.search(text) is None and (":" in text or "{" in text)


class _Truncated(Exception):
    def __init__(self, offset: int) -> None:
        self.offset = offset


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode the varint at ``pos``: (value, position after it); raises :class:`_Truncated` when the data
    ends inside it, ``ValueError`` when it runs past 64 bits."""
    from caffe2x.caffe.wire import VarintError, read_varint

    try:
        return read_varint(data, pos, len(data))
    except VarintError as exc:
        if exc.truncated:
            raise _Truncated(exc.offset) from None
        raise ValueError(f"varint too long at byte offset {exc.offset}") from None


def _layer_name(data: bytes, start: int, end: int) -> str | None:
    """The ``name`` (field 1) of the layer record in ``data[start:end]``, when it comes first (Caffe
    writes it first) and is whole."""
    try:
        tag, pos = _varint(data, start)
        if tag != (1 << 3 | 2):
            return None
        size, pos = _varint(data, pos)
        if pos + size > min(end, len(data)):
            return None
        return data[pos:pos + size].decode("utf-8")
    except (_Truncated, ValueError, UnicodeDecodeError):
        return None


def truncation(data: bytes) -> str | None:
    """Describe where a binary ``NetParameter`` is cut short, or None when its top level is whole.

    Walks only the top-level records (a few hundred for a ResNet): a file cut anywhere inside a
    layer leaves that layer's length prefix pointing past the end of the file.
    """
    pos, layers = 0, 0
    try:
        while pos < len(data):
            start = pos
            tag, pos = _varint(data, pos)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _, pos = _varint(data, pos)
                continue
            if wire in (1, 5):
                pos += 8 if wire == 1 else 4
                if pos > len(data):
                    raise _Truncated(start)
                continue
            if wire != 2:
                return None  # groups or garbage: not something a cut explains
            size, pos = _varint(data, pos)
            if field in _LAYER_FIELDS:
                layers += 1
            if pos + size > len(data):
                what = f"record of field {field}"
                if field in _LAYER_FIELDS:
                    name = _layer_name(data, pos, pos + size)
                    what = f"layer #{layers}" + (f" {name!r}" if name else "")
                return (f"truncated: it is {len(data):,} bytes long, but {what} starting at byte offset "
                        f"{start:,} needs {pos + size - len(data):,} more bytes (an interrupted download or copy?)")
            pos += size
    except _Truncated as cut:
        return (f"truncated: it ends at byte offset {len(data):,} in the middle of the record starting at "
                f"byte offset {cut.offset:,} (an interrupted download or copy?)")
    except ValueError:
        return None
    return None


def text_model_message(source: str) -> str:
    """The message for a text prototxt passed where the binary caffemodel belongs."""
    return (f"{source} is a text prototxt, not a binary caffemodel: give it as the prototxt ({option('prototxt')}) "
            f"and the .caffemodel holding the weights as {option('model')}")


def binary_prototxt_message(source: str) -> str:
    """The message for a binary file (usually the caffemodel) passed where the text prototxt belongs."""
    return (f"{source} is a binary file (a caffemodel?), not a text prototxt: give the .caffemodel as {option('model')} "
            f"and the deploy .prototxt as {option('prototxt')}")


def swapped_message(model: str, prototxt: str) -> str:
    """The message for a text MODEL and a binary prototxt: the two were swapped."""
    return (f"the two files are swapped: {model} is the text prototxt and {prototxt} the binary caffemodel; "
            f"give {prototxt} as {option('model')} and {option('prototxt', model)}")
