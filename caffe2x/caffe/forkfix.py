"""Read fork caffemodels whose field numbers collide with upstream Caffe's.

A ``.caffemodel`` stores each layer's settings under the field *number* its fork's ``caffe.proto``
gave them, and some forks reused numbers that upstream BVLC Caffe later gave to other fields (PSPNet's
``interp_param`` is 143, upstream's ``input_param``). caffe2x's schema keeps upstream's numbers and puts
such fork fields elsewhere (``docs/forks.md``), so a fork's binary decodes its settings into the
upstream field of that number. Protobuf keeps whatever does not fit that field's type as unknown
fields, so re-serialising the upstream field gives back the fork's exact bytes. This module moves them
to the fork field, but only for the layer types of that fork: an ``Interp`` layer never has an
``input_param`` of its own, so its presence means exactly this collision.

Text prototxts name their fields, so they never need this; it is applied to binary nets only.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any


@dataclass(frozen=True)
class Relocation:
    """A fork field that a fork's binary writes under an upstream (or private) field number."""

    layer_types: tuple[str, ...]
    stored_in: str      # the field of our LayerParameter the fork's bytes decode into
    fork_field: str     # our field for the fork's setting
    layout: str         # message whose numbers are the fork's (decoded, then copied by field name)
    fork: str           # for the docs and messages


RELOCATIONS: tuple[Relocation, ...] = (
    Relocation(("Interp",), "input_param", "interp_param", "InterpParameter", "PSPNet / DeepLab v2 (143)"),
    Relocation(("Upsample",), "swish_param", "upsample_param", "UpsampleParameter", "ENet (147)"),
    Relocation(("Upsample",), "embed_param", "upsample_param", "UpsampleParameter", "SegNet (137)"),
    Relocation(("DenseImageData",), "tile_param", "dense_image_data_param", "DenseImageDataParameter",
               "SegNet (138)"),
    Relocation(("BN",), "embed_param", "bn_param", "PSPNetBNParameter", "yjxiong/caffe (137)"),
    Relocation(("BN",), "pspnet_bn_param", "bn_param", "PSPNetBNParameter", "PSPNet (152)"),
    Relocation(("Lstm",), "roi_pooling_param", "lstm_param", "LSTMParameter", "OCR fork (8266711)"),
    Relocation(("Interp",), "ocr_interp_param", "interp_param", "InterpParameter", "OCR fork (162)"),
    Relocation(("Proposal",), "multibox_loss_param", "proposal_param", "ProposalParameter", "OpenCV (201)"),
    Relocation(("DenseBlock",), "swish_param", "denseblock_param", "DenseBlockParameter",
               "DenseBlock, Tongcheng/caffe and the OCR fork (147)"),
)


def has_field(message: Any, name: str) -> bool:
    """``message.HasField(name)``, False when the schema has no such field (a user's ``--proto``)."""
    return name in message.DESCRIPTOR.fields_by_name and message.HasField(name)


def is_repeated(fd: Any) -> bool:
    """Whether a field is repeated (``is_repeated`` arrived in protobuf 6 and ``label`` left in 7)."""
    if hasattr(fd, "is_repeated"):
        return bool(fd.is_repeated)
    return bool(fd.label == fd.LABEL_REPEATED)


def copy_by_name(src: Any, dst: Any) -> None:
    """Copy every set field of ``src`` into the field of the same name in ``dst`` (merging messages)."""
    for fd, value in src.ListFields():
        target = dst.DESCRIPTOR.fields_by_name.get(fd.name)
        if target is None:
            continue
        is_message = fd.message_type is not None
        repeated = is_repeated(fd)
        if is_message and repeated:
            for item in value:
                getattr(dst, fd.name).add().CopyFrom(item)
        elif is_message:
            getattr(dst, fd.name).CopyFrom(value)
        elif repeated:
            getattr(dst, fd.name).extend(value)
        else:
            setattr(dst, fd.name, value)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def iter_fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """``(number, wire type, value)`` of each top-level field of a serialized message.

    Length-delimited values are memoryview slices (nothing copied); the others are ints or raw bytes.
    Enough of the wire format to pick out a field's exact bytes, which protobuf's own API cannot give.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = bytes(buf[pos:pos + 8]), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = bytes(buf[pos:pos + 4]), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _raw_layer_field(raw: Any, index: int, number: int) -> bytes:
    """The bytes of field ``number`` of the ``index``-th ``NetParameter.layer`` (field 100) in ``raw``."""
    found = b""
    count = 0
    for net_number, wire, value in iter_fields(memoryview(raw)):
        if net_number != 100 or wire != 2:
            continue
        if count == index:
            for n, w, v in iter_fields(value):
                if n == number and w == 2:
                    found += bytes(v)  # a repeated occurrence of a message field merges, as protobuf does
            return found
        count += 1
    return found


def fix_fork_fields(net: Any, pb2: Any, raw: Any) -> None:
    """Move fork settings that the binary ``raw`` (the bytes ``net`` was parsed from) holds under
    colliding field numbers to the fork fields.

    The fork's bytes are taken from ``raw`` itself, not re-serialised from the upstream field: a value
    that decoded into a field of another type is not always kept exactly (a ``bool`` reads 3 as 1).
    """
    for index, layer in enumerate(net.layer):
        for rel in RELOCATIONS:
            if layer.type not in rel.layer_types or not has_field(layer, rel.stored_in):
                continue
            if rel.fork_field not in layer.DESCRIPTOR.fields_by_name or not hasattr(pb2, rel.layout):
                continue
            number = layer.DESCRIPTOR.fields_by_name[rel.stored_in].number
            layer.ClearField(rel.stored_in)
            decoded = getattr(pb2, rel.layout).FromString(_raw_layer_field(raw, index, number))
            copy_by_name(decoded, getattr(layer, rel.fork_field))
