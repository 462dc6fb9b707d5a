"""The input shape a Caffe data layer gives its data top, read from its parameters.

A net that starts with a data layer (SegNet's ``DenseImageData``, a train_val net's ``Data``, a
``MemoryData`` or ``DummyData`` head) has no ``input:`` blob: caffe2x makes the data layer's first top
a net input. Its shape comes from ``--input-shape`` or, when the layer's parameters fix it, from them
(Caffe's ``DataLayerSetUp`` of each layer type):

================  ===========================================================================
DummyData         ``shape`` (or ``num/channels/height/width``) of the top
MemoryData        ``batch_size, channels, height, width``
ImageData         ``batch_size``, 3 channels (1 without ``is_color``), ``crop_size`` or ``new_height/new_width``
DenseImageData    (SegNet) as ImageData, ``crop_height/crop_width`` before ``new_height/new_width``
WindowData        ``batch_size``, 3 channels, ``crop_size``
Data, HDF5Data,   the channels (and for HDF5 the size) are in the database: ``--input-shape``
Python
================  ===========================================================================

``transform_param.crop_size`` (and the SSD fork's ``crop_h``/``crop_w``) crops every image layer's
output. Anything not fixed by the parameters is reported by name, so the error can say what is missing.
"""
from __future__ import annotations

from typing import Any

from caffe2x.caffe.forkfix import has_field

Shape = tuple[int, ...]


def _crop(layer: Any) -> tuple[int, int] | None:
    t = layer.transform_param if has_field(layer, "transform_param") else None
    if t is None:
        return None
    h = int(getattr(t, "crop_h", 0) or 0) or int(t.crop_size)
    w = int(getattr(t, "crop_w", 0) or 0) or int(t.crop_size)
    return (h, w) if h and w else None


def _sized(batch: int, channels: int | None, size: tuple[int, int] | None) -> tuple[Shape | None, str]:
    parts = [f"batch {batch}", f"{channels} channels" if channels else "channels unknown",
             f"{size[0]}x{size[1]}" if size else "image size unknown"]
    if channels and size:
        return (max(batch, 1), channels, *size), ", ".join(parts)
    return None, ", ".join(parts)


def data_layer_shape(layer: Any) -> tuple[Shape | None, str]:
    """The shape of ``layer``'s first top when its parameters fix it (else None), and what they say."""
    t = layer.type
    if t == "DummyData":
        p = layer.dummy_data_param
        if len(p.shape):
            dims = tuple(int(d) for d in p.shape[0].dim)
            return (dims or None), f"shape {list(dims)}"
        if len(p.num) and len(p.channels) and len(p.height) and len(p.width):
            dims = (int(p.num[0]), int(p.channels[0]), int(p.height[0]), int(p.width[0]))
            return dims, f"shape {list(dims)}"
        return None, "no shape"
    if t == "MemoryData":
        p = layer.memory_data_param
        dims = (int(p.batch_size), int(p.channels), int(p.height), int(p.width))
        return (dims if all(dims) else None), f"batch_size/channels/height/width {list(dims)}"
    if t in ("ImageData", "DenseImageData"):
        p = layer.image_data_param if t == "ImageData" else layer.dense_image_data_param
        channels = 3 if p.is_color else 1
        size = _crop(layer)
        if size is None and t == "ImageData" and p.crop_size:
            size = (int(p.crop_size),) * 2
        if size is None and t == "DenseImageData" and p.crop_height and p.crop_width:
            size = (int(p.crop_height), int(p.crop_width))
        if size is None and p.new_height and p.new_width:
            size = (int(p.new_height), int(p.new_width))
        return _sized(int(p.batch_size), channels, size)
    if t == "WindowData":
        p = layer.window_data_param
        size = _crop(layer) or ((int(p.crop_size),) * 2 if p.crop_size else None)
        return _sized(int(p.batch_size), 3, size)
    if t == "Data":
        p = layer.data_param
        size = _crop(layer) or ((int(p.crop_size),) * 2 if p.crop_size else None)
        return _sized(int(p.batch_size), None, size)
    if t == "HDF5Data":
        return None, f"batch {int(layer.hdf5_data_param.batch_size)}, the blob shapes are in the HDF5 files"
    return None, "a Python data layer"


__all__ = ["data_layer_shape"]
