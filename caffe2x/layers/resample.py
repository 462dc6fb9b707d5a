"""Resampling layers: MAX Pooling with a mask top, Upsample (SegNet's unpooling and the YOLO ports'
nearest-neighbour form) and Interp (PSPNet / DeepLab bilinear).

==================  ==========================================  ===================================
op                  attrs                                       Caffe's rule
==================  ==========================================  ===================================
PoolingWithMask     as Pooling (method 'max')                   second output: the flat index
                                                                ``h * W + w`` (unpadded input) of
                                                                each window's first maximum in
                                                                row-major order, as a float
Unpooling           size [h, w] (as read), rule (``size``       zeros, then ``y[mask[i]] = x[i]``
                    fixed, or ``scale`` and ``pad_out``:        per channel in input order (a later
                    ``H * scale - pad_out`` at run time)        write wins); an index outside the
                                                                output is an error
UpsampleNearest     scale [h, w] (integers)                     ``y[h, w] = x[h // s, w // s]``
Interp              size [h, w], crop [top, left], region       bilinear with Caffe's
                    [h, w] (the input window interpolated)      ``caffe_cpu_interp2``: source
                                                                ``r * i`` with ``r = (in - 1) /
                                                                (out - 1)`` (align-corners), float32
==================  ==========================================  ===================================

Upsample with two bottoms (data, mask) is SegNet's (alexgkendall/caffe-segnet): output
``upsample_h x upsample_w``, or ``H * scale - pad_out`` (``scale_h``/``scale_w`` or ``scale``). With
one bottom it is the YOLO v3 ports' nearest upsampling by an integer ``scale`` on the last two axes.

Interp (hszhao/PSPNet ``interp_layer.cpp``): ``pad_beg``/``pad_end`` must be <= 0 and crop the input
(window ``H + pad_beg + pad_end`` starting at ``-pad_beg``); the output size is, in Caffe's order of
precedence, ``(in - 1) / shrink + 1`` (shrink only), ``in + (in - 1) * (zoom - 1)`` (zoom only),
``height``/``width``, shrink then zoom, or the second bottom's size.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from caffe2x.caffe.reader import BlobSource, LayerSpec, layer_handler
from caffe2x.errors import Caffe2xError
from caffe2x.graph.formulas import interp_axis
from caffe2x.graph.ir import SHAPE_FUNCTIONS, Graph, Node, Shape, check_pinned, shape_function
from caffe2x.graph.reference import op as reference_op

f32 = np.float32


def _inputs(layer: Any, ins: list[Shape], *counts: int) -> list[Shape]:
    if len(ins) not in counts:
        want = " or ".join(str(c) for c in counts)
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}) takes {want} input(s), got {len(ins)}")
    return ins


def field(msg: Any, name: str) -> Any:
    """``msg.name`` when the schema has that field and it is set, else None (fork schemas differ)."""
    if name in msg.DESCRIPTOR.fields_by_name and msg.HasField(name):
        return getattr(msg, name)
    return None


# =========================================================================== Pooling with a mask top
@shape_function("PoolingWithMask")
def _pool_mask_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    (out,) = SHAPE_FUNCTIONS["Pooling"](node, ins, graph)
    return [out, out]


def max_pool_with_mask(x: np.ndarray, kernel: list[int], stride: list[int], pad: list[int],
                       out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Caffe's MAX pooling and its mask (flat ``h * W + w`` of each window's first maximum)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    oh, ow = out_hw
    rh = max(0, (oh - 1) * sh + kh - h - ph)
    rw = max(0, (ow - 1) * sw + kw - w - pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, rh), (pw, rw)), constant_values=-np.inf)
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :oh, :ow]
    win = win.reshape(n, c, oh, ow, kh * kw)
    arg = win.argmax(axis=-1)  # first maximum in row-major window order, as Caffe's strict '>' scan
    y = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
    hh = np.arange(oh)[:, None] * sh - ph + arg // kw
    ww = np.arange(ow)[None, :] * sw - pw + arg % kw
    return y.astype(np.float32), (hh * w + ww).astype(np.float32)


@reference_op("PoolingWithMask")
def _pool_mask(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    a = node.attrs
    _, _, oh, ow = graph.shapes[node.outputs[0]]
    if a["global_pooling"]:
        kernel, stride, pad = [x.shape[2], x.shape[3]], [1, 1], [0, 0]
    else:
        kernel, stride, pad = a["kernel"], a["stride"], a["pad"]
    return list(max_pool_with_mask(x, kernel, stride, pad, (oh, ow)))


# =========================================================================== Upsample
@layer_handler("Upsample")
def _upsample_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    _inputs(layer, ins, 1, 2)
    p = layer.upsample_param
    name = layer.name
    x = ins[0]
    if len(ins) == 1:  # YOLO v3 ports: nearest neighbour by an integer factor
        if len(x) != 4:
            raise Caffe2xError(f"layer {name!r} (Upsample) needs a 4-D input, got {list(x)}")
        sh, sw = field(p, "scale_h"), field(p, "scale_w")
        scale = [int(sh), int(sw)] if sh is not None and sw is not None else [int(p.scale)] * 2
        if min(scale) < 1:
            raise Caffe2xError(f"layer {name!r} (Upsample): scale must be at least 1, got {scale}")
        return LayerSpec("UpsampleNearest", {"scale": scale})
    mask = ins[1]
    if len(x) != 4 or tuple(mask) != tuple(x):
        raise Caffe2xError(f"layer {name!r} (Upsample): data {list(x)} and mask {list(mask)} must be the same "
                           f"4-D shape")
    uh, uw = field(p, "upsample_h"), field(p, "upsample_w")
    if uh is not None and uw is not None:
        size = [int(uh), int(uw)]
        if min(size) <= 1:
            raise Caffe2xError(f"layer {name!r} (Upsample): upsample_h/upsample_w must be > 1")
        rule: dict[str, list[int]] = {"size": size}
    else:
        sh, sw = field(p, "scale_h"), field(p, "scale_w")
        if sh is not None and sw is not None:
            scale = [int(sh), int(sw)]
        else:
            scale = [int(p.scale)] * 2
        if min(scale) <= 1:
            raise Caffe2xError(f"layer {name!r} (Upsample): scale must be > 1, got {scale}")
        pad_out = [bool(field(p, "pad_out_h") or False), bool(field(p, "pad_out_w") or False)]
        if (pad_out[0] and scale[0] != 2) or (pad_out[1] and scale[1] != 2):
            raise Caffe2xError(f"layer {name!r} (Upsample): pad_out_h/pad_out_w need scale 2")
        rule = {"scale": scale, "pad_out": [int(pad_out[0]), int(pad_out[1])]}
        size = unpool_size(rule, x)
    return LayerSpec("Unpooling", {"size": size, "rule": rule})


def unpool_size(rule: dict[str, list[int]], x: Shape) -> list[int]:
    """SegNet's Upsample output plane for data shaped ``x``, as its ``UpsampleLayer::Reshape`` computes it
    at every reshape: ``upsample_h`` x ``upsample_w`` when given (fixed), else ``H * scale - pad_out``."""
    if "size" in rule:
        return list(rule["size"])
    (sh, sw), (ph, pw) = rule["scale"], rule["pad_out"]
    return [x[2] * sh - ph, x[3] * sw - pw]


@shape_function("Unpooling")
def _unpool_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    x = ins[0]
    rule = node.attrs.get("rule")
    if rule is None:  # a graph written before the rule was kept: only the size it was read at
        check_pinned(node, ins, [graph.shapes.get(v) for v in node.inputs])
        return [(x[0], x[1], *node.attrs["size"])]
    if tuple(ins[1]) != tuple(x):
        raise Caffe2xError(f"layer {node.name!r} (Upsample): data {list(x)} and mask {list(ins[1])} must be the same "
                           f"shape")
    return [(x[0], x[1], *unpool_size(rule, x))]


@shape_function("UpsampleNearest")
def _nearest_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    n, c, h, w = ins[0]
    sh, sw = node.attrs["scale"]
    return [(n, c, h * sh, w * sw)]


def unpool(x: np.ndarray, mask: np.ndarray, size: list[int], layer: str = "Upsample") -> np.ndarray:
    """SegNet's Upsample: scatter ``x`` into a zero plane at ``mask``; a later duplicate index wins."""
    n, c, h, w = x.shape
    plane = size[0] * size[1]
    idx = mask.reshape(n * c, h * w).astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= plane):
        bad = int(idx.min() if idx.min() < 0 else idx.max())
        raise Caffe2xError(f"layer {layer!r} (Upsample): mask index {bad} is outside the {size[0]}x{size[1]} output")
    flat = (idx + (np.arange(n * c) * plane)[:, None]).reshape(-1)[::-1]
    vals = x.reshape(-1)[::-1]
    first, where = np.unique(flat, return_index=True)  # first in reversed order = last write
    out = np.zeros(n * c * plane, dtype=np.float32)
    out[first] = vals[where]
    return out.reshape(n, c, *size)


@reference_op("Unpooling")
def _unpool(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    rule = node.attrs.get("rule")
    size = node.attrs["size"] if rule is None else unpool_size(rule, ins[0].shape)
    return [unpool(ins[0], ins[1], size, node.name)]


@reference_op("UpsampleNearest")
def _nearest(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    sh, sw = node.attrs["scale"]
    return [np.repeat(np.repeat(ins[0], sh, axis=2), sw, axis=3)]


# =========================================================================== Interp
@layer_handler("Interp")
def _interp_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    _inputs(layer, ins, 1, 2)
    p = layer.interp_param
    name = layer.name
    x = ins[0]
    if len(x) != 4:
        raise Caffe2xError(f"layer {name!r} (Interp) needs a 4-D input, got {list(x)}")
    pad_beg, pad_end = int(p.pad_beg), int(p.pad_end)
    if pad_beg > 0 or pad_end > 0:
        raise Caffe2xError(f"layer {name!r} (Interp): pad_beg/pad_end must be <= 0 (Caffe only crops)")
    eff = [x[2] + pad_beg + pad_end, x[3] + pad_beg + pad_end]
    if min(eff) <= 0:
        raise Caffe2xError(f"layer {name!r} (Interp): cropping leaves no input")
    shrink, zoom = field(p, "shrink_factor"), field(p, "zoom_factor")
    height, width = field(p, "height"), field(p, "width")
    if (shrink is not None and shrink < 1) or (zoom is not None and zoom < 1):
        raise Caffe2xError(f"layer {name!r} (Interp): shrink_factor and zoom_factor must be >= 1")
    if shrink is not None and zoom is None:
        size = [(e - 1) // shrink + 1 for e in eff]
    elif zoom is not None and shrink is None:
        size = [e + (e - 1) * (zoom - 1) for e in eff]
    elif height is not None and width is not None:
        size = [int(height), int(width)]
    elif shrink is not None and zoom is not None:
        size = [(e - 1) // shrink + 1 for e in eff]
        size = [s + (s - 1) * (zoom - 1) for s in size]
    elif len(ins) == 2 and len(ins[1]) == 4:
        size = [int(ins[1][2]), int(ins[1][3])]
    else:
        raise Caffe2xError(f"layer {name!r} (Interp) needs zoom_factor, shrink_factor, height and width, or a "
                           f"second input to take the size from")
    if min(size) <= 0:
        raise Caffe2xError(f"layer {name!r} (Interp): output size {size} is empty")
    rule = {"shrink": shrink, "zoom": zoom, "height": None if height is None else int(height),
            "width": None if width is None else int(width), "pad_beg": pad_beg, "pad_end": pad_end}
    return LayerSpec("Interp", {"size": size, "crop": [-pad_beg, -pad_beg], "region": eff, "rule": rule})


def interp_geometry(node: Node, ins: list[Shape]) -> tuple[list[int], list[int], list[int]]:
    """Interp's (output size, crop, region) for inputs shaped ``ins``: Caffe's InterpLayer::Reshape
    rule applied again (a net runs at any size), or the sizes resolved at read time for a graph
    written before the rule was kept."""
    a = node.attrs
    rule = a.get("rule")
    if rule is None:
        return list(a["size"]), list(a["crop"]), list(a["region"])
    x = ins[0]
    beg, end = rule["pad_beg"], rule["pad_end"]
    eff = [x[2] + beg + end, x[3] + beg + end]
    if min(eff) <= 0:
        raise Caffe2xError(f"layer {node.name!r} (Interp): cropping leaves no input of {list(x)}")
    shrink, zoom = rule["shrink"], rule["zoom"]
    if shrink is not None and zoom is None:
        size = [(e - 1) // shrink + 1 for e in eff]
    elif zoom is not None and shrink is None:
        size = [e + (e - 1) * (zoom - 1) for e in eff]
    elif rule["height"] is not None and rule["width"] is not None:
        size = [rule["height"], rule["width"]]
    elif shrink is not None and zoom is not None:
        size = [(e - 1) // shrink + 1 for e in eff]
        size = [s + (s - 1) * (zoom - 1) for s in size]
    else:
        size = [int(ins[1][2]), int(ins[1][3])]
    if min(size) <= 0:
        raise Caffe2xError(f"layer {node.name!r} (Interp): output size {size} is empty for input {list(x)}")
    return size, [-beg, -beg], eff


@shape_function("Interp")
def _interp_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    x = ins[0]
    if "rule" not in node.attrs:  # a graph written before the rule was kept: only the size it was read at
        check_pinned(node, ins, [graph.shapes.get(v) for v in node.inputs])
    return [(x[0], x[1], *interp_geometry(node, ins)[0])]


def interp(x: np.ndarray, size: list[int], crop: list[int], region: list[int]) -> np.ndarray:
    """Caffe's Interp on NCHW ``x``."""
    t, l = crop
    src = x[:, :, t:t + region[0], l:l + region[1]]
    h0, h1, a0, a1 = interp_axis(region[0], size[0])
    w0, w1, b0, b1 = interp_axis(region[1], size[1])
    top = b0 * src[:, :, h0][:, :, :, w0] + b1 * src[:, :, h0][:, :, :, w1]
    bottom = b0 * src[:, :, h1][:, :, :, w0] + b1 * src[:, :, h1][:, :, :, w1]
    return (a0[:, None] * top + a1[:, None] * bottom).astype(np.float32)


@reference_op("Interp")
def _interp(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    size, crop, region = interp_geometry(node, [v.shape for v in ins])
    return [interp(ins[0], size, crop, region)]

