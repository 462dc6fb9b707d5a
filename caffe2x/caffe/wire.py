"""Zero-copy caffemodel weights: each blob's packed float payload as a numpy view into the file.

Why: a ``.caffemodel`` is one protobuf ``NetParameter`` and nearly all of its bytes are the packed
``float`` payloads of ``BlobProto.data``. Parsing it whole with the compiled schema copies every weight
into protobuf's repeated fields and then again into numpy, so a 100 MB model costs 300 MB and most of
the conversion time. Here the file is memory-mapped, the protobuf wire format of the few enclosing
messages is walked by hand (``NetParameter.layer`` = 100 / V1 ``layers`` = 2 -> ``LayerParameter.blobs``
= 7 / ``V1LayerParameter.blobs`` = 6 -> ``BlobProto.data`` = 5), each payload becomes
``np.frombuffer(map, '<f4', count, offset)``, and only the small structural remainder (the net with the
payloads cut out) goes through the compiled schema and the reader's usual upgrade path.

Fast path and plain path give identical arrays. Anything unusual goes the plain way, blob by blob or
for the whole file: ``double_data``, unpacked (one tag per float) encodings, a repeated ``data`` field,
a blob without data, a payload whose size disagrees with the blob's shape (the plain path then raises
its usual error, if the net uses that blob at all), V0 nets (``V1LayerParameter.layer`` = 1), groups,
anything the walker cannot parse, or an upgrade that does not keep one layer per record.

Lifetime of the views: a view holds a reference to the ``mmap`` object (``arr.base``), so the mapping
stays alive exactly as long as some array still refers to it, and is unmapped when the last one goes.
The map is private copy-on-write (``ACCESS_COPY``): the arrays are writable like ordinary ones, and a
write copies only the touched page into this process, never into the file. Transforms that change a
tensor (BatchNorm's factor, ``--fold-bn``, dtype casts, transposes) make new arrays; nothing else
copies. Replacing the file atomically (rename, as caffe2x's own writers do) is safe while views live;
truncating it in place under a running process is not (as for any mapped file, the kernel would
signal ``SIGBUS`` on access to pages that no longer exist).
"""
from __future__ import annotations

import math
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caffe2x.graph import pages

Buffer = Any  # bytes | mmap.mmap: anything supporting the buffer protocol, len() and slicing

NET_LAYER = 100  # NetParameter.layer (LayerParameter)
NET_LAYERS_V1 = 2  # NetParameter.layers (V1LayerParameter)
BLOBS_FIELD = {NET_LAYER: 7, NET_LAYERS_V1: 6}  # LayerParameter.blobs, V1LayerParameter.blobs
V1_V0_LAYER = 1  # V1LayerParameter.layer: a V0 net, left entirely to the plain path
BLOB_DATA = 5  # BlobProto.data, repeated float [packed]
BLOB_DOUBLE_DATA = 8  # BlobProto.double_data

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LEN, _WIRE_FIXED32 = 0, 1, 2, 5

#: payloads smaller than this are left in the structural part (not worth a view)
MIN_VIEW_BYTES = 64


class _Unusual(Exception):
    """The walker met something it leaves to the compiled parser (malformed or exotic encoding)."""


@dataclass
class _Payload:
    """Where one blob's packed ``data`` sits in the buffer, and the blob record it came from."""

    offset: int
    count: int
    record: tuple[int, int]  # [start, end) of the whole BlobProto message


@dataclass
class Plan:
    """The net with blob payloads cut out, and per layer record the payload of each of its blobs."""

    structure: bytes
    payloads: list[list[_Payload | None]] = field(default_factory=list)

    @property
    def views(self) -> int:
        return sum(p is not None for layer in self.payloads for p in layer)


class VarintError(_Unusual):
    """A varint that ends at ``end`` (``truncated``) or runs past 64 bits, starting at ``offset``."""

    def __init__(self, offset: int, truncated: bool) -> None:
        super().__init__(offset)
        self.offset, self.truncated = offset, truncated


def read_varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """The protobuf varint at ``pos`` (value, position after it); :class:`VarintError` otherwise."""
    result = shift = 0
    start = pos
    while True:
        if pos >= end or shift > 63:
            raise VarintError(start, truncated=pos >= end)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7



def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(buf: Buffer, start: int, end: int):  # type: ignore[no-untyped-def]
    """Yield ``(field, wire_type, record_start, value_start, value_end)`` of one message's fields."""
    pos = start
    while pos < end:
        record = pos
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Unusual
        if wire == _WIRE_VARINT:
            value = pos
            _, pos = read_varint(buf, pos, end)
        elif wire == _WIRE_LEN:
            size, value = read_varint(buf, pos, end)
            pos = value + size
        elif wire == _WIRE_FIXED64:
            value, pos = pos, pos + 8
        elif wire == _WIRE_FIXED32:
            value, pos = pos, pos + 4
        else:  # groups never occur in caffe.proto
            raise _Unusual
        if pos > end:
            raise _Unusual
        yield number, wire, record, value, pos


def _blob(buf: Buffer, start: int, end: int) -> tuple[bytes, _Payload] | None:
    """A BlobProto without its packed ``data``, and where that data is; None to keep the blob whole."""
    payload: tuple[int, int] | None = None
    kept: list[bytes] = []
    for number, wire, record, value, pos in _fields(buf, start, end):
        if number == BLOB_DATA:
            if wire != _WIRE_LEN or payload is not None:
                return None  # unpacked floats, or data split over several records
            payload = (value, pos)
        elif number == BLOB_DOUBLE_DATA:
            return None
        else:
            kept.append(buf[record:pos])
    if payload is None or payload[1] - payload[0] < MIN_VIEW_BYTES:
        return None
    size = payload[1] - payload[0]
    if size % 4:
        raise _Unusual
    return b"".join(kept), _Payload(payload[0], size // 4, (start, end))


def _layer(buf: Buffer, start: int, end: int, blobs_field: int) -> tuple[bytes, list[_Payload | None]]:
    """One layer record's content with its blobs' payloads cut out, and those payloads in order."""
    parts: list[bytes] = []
    payloads: list[_Payload | None] = []
    tag = _encode_varint(blobs_field << 3 | _WIRE_LEN)
    for number, wire, record, value, pos in _fields(buf, start, end):
        if blobs_field == BLOBS_FIELD[NET_LAYERS_V1] and number == V1_V0_LAYER:
            raise _Unusual  # V0 layer nested in a V1 record
        if number == blobs_field and wire == _WIRE_LEN:
            cut = _blob(buf, value, pos)
            if cut is not None:
                parts += [tag, _encode_varint(len(cut[0])), cut[0]]
                payloads.append(cut[1])
                continue
            payloads.append(None)
        elif number == blobs_field:
            raise _Unusual
        parts.append(buf[record:pos])
    return b"".join(parts), payloads


def plan(buf: Buffer) -> Plan | None:
    """Walk a serialized NetParameter; None when it should be parsed the plain way as a whole."""
    try:
        parts: list[bytes] = []
        payloads: list[list[_Payload | None]] = []
        for number, wire, record, value, pos in _fields(buf, 0, len(buf)):
            if number in BLOBS_FIELD and wire == _WIRE_LEN:
                content, blob_payloads = _layer(buf, value, pos, BLOBS_FIELD[number])
                parts += [_encode_varint(number << 3 | _WIRE_LEN), _encode_varint(len(content)), content]
                payloads.append(blob_payloads)
            elif number in BLOBS_FIELD:
                return None
            else:
                parts.append(buf[record:pos])
    except _Unusual:
        return None
    result = Plan(b"".join(parts), payloads)
    return result if result.views else None


def blob_shape(blob: Any, count: int) -> tuple[int, ...]:
    """The shape :func:`caffe2x.caffe.parse.blob_array` gives a blob whose data holds ``count`` floats."""
    if blob.HasField("shape"):
        return tuple(blob.shape.dim)
    if blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") or blob.HasField("width"):
        return (blob.num, blob.channels, blob.height, blob.width)
    return (count,)


def split(buf: Buffer, source: str, parse: Callable[[bytes, str], Any]) -> tuple[Any, dict[str, list[Any]] | None]:
    """``(net, blobs by layer name)`` from a serialized NetParameter.

    ``parse`` is the reader's bytes -> upgraded ``NetParameter`` function. The blobs are float32 views
    of their stored shape where the fast path applies, else the (whole) ``BlobProto`` for the reader's
    plain path. ``None`` for the blobs means the whole file took the plain path: the caller reads the
    blobs from the net as usual.
    """
    layout = plan(buf)
    if layout is not None:
        net = parse(layout.structure, source)
        if len(net.layer) == len(layout.payloads) and all(
                len(layer.blobs) == len(payloads) for layer, payloads in zip(net.layer, layout.payloads)):
            return net, _weights(buf, net, layout)
    return parse(buf if isinstance(buf, bytes) else bytes(buf), source), None


def _weights(buf: Buffer, net: Any, layout: Plan) -> dict[str, list[Any]]:
    weights: dict[str, list[Any]] = {}
    for layer, payloads in zip(net.layer, layout.payloads):
        if not len(layer.blobs):
            continue
        blobs: list[Any] = []
        for blob, payload in zip(layer.blobs, payloads):
            if payload is None:
                blobs.append(blob)
                continue
            shape = blob_shape(blob, payload.count)
            # Python's product: numpy's wraps at 2**63, so huge dims could seem to match the payload; a
            # negative dim (-16 x -8 multiplies to 128 too) is the plain path's error as well
            if any(d < 0 for d in shape) or math.prod(shape) != payload.count:
                start, end = payload.record  # let the plain path report the mismatch, if the net uses it
                blobs.append(type(blob).FromString(bytes(buf[start:end])))
                continue
            blobs.append(np.frombuffer(buf, dtype="<f4", count=payload.count, offset=payload.offset).reshape(shape))
        weights[layer.name] = blobs
    return weights


def map_file(path: str | os.PathLike[str]) -> mmap.mmap | None:
    """A private copy-on-write map of ``path`` that keeps the file open, so a writer can read a view's
    bytes from the file instead of faulting them through the map (:class:`caffe2x.graph.pages.FileMap`);
    None when it cannot be mapped (the caller then reads the file the ordinary way and reports
    missing/empty/unreadable files itself)."""
    try:
        return pages.map_file(path)
    except (OSError, ValueError):
        return None
