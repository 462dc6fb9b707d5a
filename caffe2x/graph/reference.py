"""Numpy reference executor: runs a :class:`~caffe2x.graph.ir.Graph` with Caffe's exact semantics.

This is the yardstick every target is measured against, so it follows Caffe's CPU code rule by rule
(window clipping of pooling, the AVE divisor, LRN's alpha/size, BatchNorm eps inside the square root)
rather than any framework's idea of those ops. It is vectorised (one BLAS call per kernel offset for
convolutions, strided window views for pooling) so a full ResNet-50 at 224x224 runs in seconds.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from caffe2x import _command
from caffe2x.errors import Caffe2xError, UnsupportedLayerError
from caffe2x.graph.checks import check_run_size
from caffe2x.graph.ir import Graph, Node
from caffe2x.graph.registry import Registry

OpFn = Callable[[Node, list[np.ndarray], Graph], list[np.ndarray]]
#: op -> numpy implementation
OPS: Registry[OpFn] = Registry("op")
op = OPS.register


# --------------------------------------------------------------------------- running
def feeds_for(graph: Graph, x: np.ndarray | Mapping[str, np.ndarray],
              max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Turn the user's input (one array, or a dict by input name) into checked float32 feeds.

    Anything that is not numeric array data the net can take (a string, an empty batch, the wrong
    rank, a size a layer cannot take) is a :class:`Caffe2xError`; so is a batch whose forward pass
    would pass the size limit.
    """
    return prepare_run(graph, x, max_bytes)[1]


def prepare_run(graph: Graph, x: np.ndarray | Mapping[str, np.ndarray],
                max_bytes: int | None = None) -> tuple[Graph, dict[str, np.ndarray]]:
    """(the graph at the feeds' shapes, the checked feeds): see :func:`feeds_for`.

    Shapes follow the input as in Caffe: at another batch the graph is the same (every value scales
    with it); at another size of any other dim it is :func:`caffe2x.graph.reshape.reshaped` to it, so
    every layer's shape is computed for this input (or the layer that cannot take it is named).
    """
    if not isinstance(graph, Graph):
        raise Caffe2xError(f"expected a caffe2x Graph (from caffe2x.load), got {type(graph).__name__}")
    if not isinstance(x, Mapping):
        if len(graph.inputs) != 1:
            raise Caffe2xError(f"the net has {len(graph.inputs)} inputs ({', '.join(graph.inputs)}): pass a dict")
        x = {next(iter(graph.inputs)): x}
    feeds = {}
    for name, shape in graph.inputs.items():
        if name not in x:
            raise Caffe2xError(f"no value given for input {name!r}")
        arr = _as_numeric_array(x[name], name)  # converted to float32 once the size is checked
        if arr.ndim != len(shape):
            raise Caffe2xError(f"input {name!r} has shape {list(arr.shape)}, the net takes a {len(shape)}-D "
                               f"input (read as {list(shape)})")
        if arr.shape[0] < 1:
            raise Caffe2xError(f"input {name!r} has an empty batch (shape {list(arr.shape)})")
        feeds[name] = arr
    extra = [k for k in x if k not in graph.inputs]
    if extra:
        raise Caffe2xError(f"{extra[0]!r} is not an input of the net (inputs: {', '.join(graph.inputs)})")
    if any(a.shape[1:] != tuple(graph.inputs[k][1:]) for k, a in feeds.items()):
        from caffe2x.graph.reshape import reshaped  # only for another input size: no part of a convert's import

        graph = reshaped(graph, {k: a.shape for k, a in feeds.items()})
    batch = max(a.shape[0] for a in feeds.values())
    check_run_size(graph, batch, max_bytes)
    return graph, {k: a.astype(np.float32, copy=False) for k, a in feeds.items()}


#: BLAS threads while the reference runs (None: numpy's BLAS as configured, e.g. by OPENBLAS_NUM_THREADS).
#: Set ``CAFFE2X_BLAS_THREADS=1`` on a machine shared with other busy processes: a forward pass is
#: hundreds of mid-sized GEMMs, and under load OpenBLAS' spinning workers made ResNet-50 2.7x slower
#: than one thread. On an idle 2-core machine two threads are faster (ResNet-50 at batch 4: 0.61 s
#: against 0.81 s), so the default leaves BLAS alone.
BLAS_THREADS: int | None = int(os.environ["CAFFE2X_BLAS_THREADS"]) if os.environ.get("CAFFE2X_BLAS_THREADS", "").isdigit() else None


def _blas_limit() -> contextlib.AbstractContextManager[object]:
    _command.full_blas()  # the caffe2x command imported numpy with one BLAS thread
    if BLAS_THREADS is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it numpy's BLAS runs as configured
        return contextlib.nullcontext()
    return threadpool_limits(limits=BLAS_THREADS, user_api="blas")


def _as_numeric_array(value: object, name: str) -> np.ndarray:
    """A numeric array, not yet converted: a caller's broadcast view of a huge shape (or a float64
    array) would be materialised by the float32 conversion before the forward pass's size was checked.
    Strings, objects and ragged lists are refused with a message."""
    arr = value if isinstance(value, np.ndarray) else None
    if arr is None:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise Caffe2xError(f"input {name!r} is not an array of numbers ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise Caffe2xError(f"input {name!r} must hold numbers, got {arr.dtype} data")
    return arr


def execute(graph: Graph, x: np.ndarray | Mapping[str, np.ndarray], keep: set[str] | None = None,
            max_bytes: int | None = None, override: Mapping[str, OpFn] | None = None) -> dict[str, np.ndarray]:
    """Run the graph; return every value (``keep=None``) or only the values named in ``keep``.

    Values nothing reads any more are dropped as the run goes on when ``keep`` is given, so memory
    stays at a few live activations. BLAS runs with :data:`BLAS_THREADS` threads meanwhile.
    ``override``: node name -> the function that computes that node instead of its op's (validate
    pins a masked pooling's choices to a framework's, :mod:`caffe2x.validation.ties`).
    """
    with _blas_limit():
        return _execute(graph, x, keep, max_bytes, override or {})


def _execute(graph: Graph, x: np.ndarray | Mapping[str, np.ndarray], keep: set[str] | None,
             max_bytes: int | None = None, override: Mapping[str, OpFn] | None = None) -> dict[str, np.ndarray]:
    graph, feeds = prepare_run(graph, x, max_bytes)
    values: dict[str, np.ndarray] = dict(feeds)
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_use[v] = i
    for i, node in enumerate(graph.nodes):
        fn = override.get(node.name) if override else None
        outs = (fn or OPS.lookup(node.op, node.name))(node, [values[v] for v in node.inputs], graph)
        for name, val in zip(node.outputs, outs):
            values[name] = val.astype(np.float32, copy=False)
        if keep is not None:
            for v in node.inputs:
                if last_use.get(v) == i and v not in keep:
                    values.pop(v, None)
    if keep is not None:
        return {k: values[k] for k in keep}
    return values


def resolve_outputs(graph: Graph, outputs: str | Sequence[str] | None) -> list[str]:
    """Caffe blob names to report: the net's outputs by default."""
    if outputs is None:
        return [graph.blob_name(v) for v in graph.outputs]
    if isinstance(outputs, str):
        names = [outputs]
    elif isinstance(outputs, Sequence) and not isinstance(outputs, bytes) and \
            all(isinstance(n, str) for n in outputs):
        names = list(outputs)
    else:
        raise Caffe2xError(f"outputs must be a blob name or a list of blob names, got {outputs!r:.60}")
    if not names:
        raise Caffe2xError("outputs is an empty list; name at least one blob (or pass None for the net's outputs)")
    for n in names:
        graph.value(n)  # raises a clear error for an unknown blob
    return names


def run(graph: Graph, x: np.ndarray | Mapping[str, np.ndarray],
        outputs: str | Sequence[str] | None = None, *, max_bytes: int | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """Run the net on NCHW input ``x``.

    Returns the single output blob as an array when the net has one output (or ``outputs`` is one
    name), else a dict keyed by Caffe blob name. A blob rewritten in place (``res3a`` by its ReLU)
    gives its final value, as pycaffe's ``net.blobs`` does.
    """
    if not isinstance(graph, Graph):
        raise Caffe2xError(f"expected a caffe2x Graph (from caffe2x.load), got {type(graph).__name__}")
    names = resolve_outputs(graph, outputs)
    values = {graph.value(n) for n in names}
    result = execute(graph, x, keep=values, max_bytes=max_bytes)
    out = {n: result[graph.value(n)] for n in names}
    if isinstance(outputs, str) or (outputs is None and len(names) == 1):
        return out[names[0]]
    return out


# --------------------------------------------------------------------------- ops
def _aligned(w: np.ndarray) -> np.ndarray:
    """``w``, or an aligned copy of it: a weight read as a view of the caffemodel can sit at any byte
    offset, and numpy's matmul does not hand unaligned operands to BLAS (70x slower on a
    matrix-vector product such as VGG's fc6)."""
    return w if w.flags.aligned else np.array(w)


#: upper bound on one im2col buffer; larger convolutions are done in bands of output rows
IM2COL_BYTES = 64 << 20


@op("Convolution")
def _conv(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    """Caffe's own algorithm: im2col, then one GEMM per group (``W (O, C*kh*kw) @ cols``).

    The reduction runs over (C, kh, kw) in Caffe's order. A 1x1 convolution with stride 1 and no pad
    multiplies the input itself (no copy); otherwise the columns are a strided window view copied once,
    per image and in bands of output rows so huge (e.g. large dilated) convolutions stay in bounded
    memory. The result is written straight into the NCHW output.
    """
    (x,) = ins
    a = node.attrs
    w = graph.param(node, "weight")
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel"], a["stride"], a["pad"], a["dilation"]
    g = a["group"]
    o = a["num_output"]
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (wd + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    cg, og = c // g, o // g
    k = cg * kh * kw
    wm = _aligned(w).reshape(g, og, k)
    out = np.empty((n, g, og, oh * ow), dtype=np.float32)
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        np.matmul(wm, np.ascontiguousarray(x).reshape(n, g, cg, h * wd), out=out)
    else:
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else np.ascontiguousarray(x)
        s_n, s_c, s_h, s_w = xp.strides
        band = max(1, min(oh, IM2COL_BYTES // max(1, 4 * g * k * ow)))
        for i in range(n):
            for r0 in range(0, oh, band):
                rows = min(band, oh - r0)
                window = np.lib.stride_tricks.as_strided(
                    xp[i, :, r0 * sh:], shape=(g, cg, kh, kw, rows, ow),
                    strides=(cg * s_c, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w), writeable=False)
                cols = window.reshape(g, k, rows * ow)  # the im2col copy
                if rows == oh:
                    np.matmul(wm, cols, out=out[i])
                else:
                    out[i, :, :, r0 * ow:(r0 + rows) * ow] = wm @ cols
    y = out.reshape(n, o, oh, ow)
    if "bias" in node.params:
        y += graph.param(node, "bias").reshape(1, -1, 1, 1)
    return [y]


@op("Deconvolution")
def _deconv(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    """Caffe's deconvolution: the transpose of its convolution (col2im), scattered per kernel offset."""
    (x,) = ins
    a = node.attrs
    w = graph.param(node, "weight")
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel"], a["stride"], a["pad"], a["dilation"]
    g, o = a["group"], a["num_output"]
    cg, og = c // g, o // g
    full_h, full_w = sh * (h - 1) + dh * (kh - 1) + 1, sw * (wd - 1) + dw * (kw - 1) + 1
    full = np.zeros((n, o, full_h, full_w), dtype=np.float32)
    for gi in range(g):
        rows = np.ascontiguousarray(x[:, gi * cg:(gi + 1) * cg].transpose(1, 0, 2, 3)).reshape(cg, -1)
        wg = w[gi * cg:(gi + 1) * cg]  # (cg, og, kh, kw)
        for i in range(kh):
            for j in range(kw):
                term = (wg[:, :, i, j].T @ rows).reshape(og, n, h, wd).transpose(1, 0, 2, 3)
                full[:, gi * og:(gi + 1) * og, i * dh:i * dh + sh * (h - 1) + 1:sh,
                     j * dw:j * dw + sw * (wd - 1) + 1:sw] += term
    y = full[:, :, ph:full_h - ph, pw:full_w - pw]
    if "bias" in node.params:
        y = y + graph.param(node, "bias").reshape(1, -1, 1, 1)
    return [np.ascontiguousarray(y)]


def _channel_view(v: np.ndarray, rank: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (rank - 2))


@op("BatchNorm")
def _batchnorm(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    mean = _channel_view(graph.param(node, "running_mean"), x.ndim)
    var = _channel_view(graph.param(node, "running_var"), x.ndim)
    y = np.subtract(x, mean, dtype=np.float32)  # Caffe's order: subtract, then divide by the std
    np.divide(y, np.sqrt(var + np.float32(node.attrs["eps"])), out=y)
    return [y]


@op("Scale")
def _scale(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    axis = node.attrs["axis"]
    w = graph.param(node, "weight")
    shape = (1,) * axis + w.shape + (1,) * (x.ndim - axis - w.ndim)
    y = np.multiply(x, w.reshape(shape), dtype=np.float32)
    if "bias" in node.params:
        y += graph.param(node, "bias").reshape(shape)
    return [y]


@op("ReLU")
def _relu(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    slope = node.attrs.get("negative_slope", 0.0)
    if slope == 0.0:
        return [np.maximum(x, 0)]
    return [np.where(x > 0, x, x * np.float32(slope))]


@op("ELU")
def _elu(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    with np.errstate(over="ignore"):
        return [np.where(x > 0, x, np.float32(node.attrs["alpha"]) * np.expm1(np.minimum(x, 0)))]


@op("PReLU")
def _prelu(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    slope = graph.param(node, "weight")
    slope = slope.reshape((1, -1) + (1,) * (x.ndim - 2)) if slope.size > 1 else slope.reshape(())
    return [np.where(x > 0, x, x * slope)]


@op("Sigmoid")
def _sigmoid(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    with np.errstate(over="ignore"):  # exp overflow for x << 0 correctly gives 0
        return [1.0 / (1.0 + np.exp(-ins[0]))]


@op("TanH")
def _tanh(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    return [np.tanh(ins[0])]


@op("Dropout")
def _identity(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    return [ins[0]]


def pool_geometry(size: int, out: int, kernel: int, stride: int, pad: int) -> tuple[int, np.ndarray]:
    """Right padding needed so every window fits, and Caffe's AVE divisor per output position.

    Caffe clips each window to ``[start, min(start + k, size + pad))`` for the divisor, so padding
    inside ``size + pad`` counts but the ceil-mode overhang beyond it does not.
    """
    starts = np.arange(out) * stride - pad
    ends = np.minimum(starts + kernel, size + pad)
    right = max(0, (out - 1) * stride + kernel - size - pad)
    return right, (ends - starts).astype(np.float32)


@op("Pooling")
def _pool(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    a = node.attrs
    _, _, h, w = x.shape
    _, _, oh, ow = graph.shapes[node.outputs[0]]
    if a["global_pooling"]:
        kh, kw, sh, sw, ph, pw = h, w, 1, 1, 0, 0
    else:
        (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["pad"]
    rh, div_h = pool_geometry(h, oh, kh, sh, ph)
    rw, div_w = pool_geometry(w, ow, kw, sw, pw)
    fill = -np.inf if a["method"] == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, rh), (pw, rw)), constant_values=fill)
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :oh, :ow]
    if a["method"] == "max":
        return [win.max(axis=(4, 5))]
    return [win.sum(axis=(4, 5), dtype=np.float32) / np.outer(div_h, div_w)]


@op("Eltwise")
def _eltwise(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    operation = node.attrs["operation"]
    if operation == "sum":
        coeff = node.attrs["coeff"]
        y = ins[0] * np.float32(coeff[0]) if coeff[0] != 1 else ins[0].copy()
        for c, v in zip(coeff[1:], ins[1:]):
            y += v * np.float32(c) if c != 1 else v
        return [y]
    if operation == "prod":
        y = ins[0].copy()
        for v in ins[1:]:
            y *= v
        return [y]
    if operation == "max":
        y = ins[0].copy()
        for v in ins[1:]:
            np.maximum(y, v, out=y)
        return [y]
    raise UnsupportedLayerError(node.name, f"Eltwise {operation}", "operation")


@op("InnerProduct")
def _inner_product(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    axis = node.attrs["axis"]
    lead = x.shape[:axis]
    flat = x.reshape(int(np.prod(lead)), -1)  # C, H, W order: Caffe's flatten
    y = flat @ _aligned(graph.param(node, "weight")).T
    if "bias" in node.params:
        y = y + graph.param(node, "bias")
    return [y.reshape(*lead, -1)]


@op("Softmax")
def _softmax(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    axis = node.attrs["axis"]
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [e / e.sum(axis=axis, keepdims=True)]


@op("LRN")
def _lrn(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    a = node.attrs
    size, alpha, beta = a["size"], a["alpha"], a["beta"]
    half = (size - 1) // 2
    sq = x * x
    if a["region"] == "across":
        padded = np.pad(sq, ((0, 0), (half, size - 1 - half), (0, 0), (0, 0)))
        window = sliding_window_view(padded, size, axis=1).sum(axis=-1)
        scale = np.float32(a["k"]) + np.float32(alpha / size) * window
    else:
        # Caffe builds WITHIN_CHANNEL from AVE pooling (pad (size-1)/2, divisor size*size) and a Power
        # layer with shift 1: k plays no part there.
        padded = np.pad(sq, ((0, 0), (0, 0), (half, half), (half, half)))
        window = sliding_window_view(padded, (size, size), axis=(2, 3)).sum(axis=(4, 5))
        scale = 1.0 + np.float32(alpha / (size * size)) * window
    return [x * np.power(scale, np.float32(-beta))]


@op("Concat")
def _concat(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    return [np.concatenate(ins, axis=node.attrs["axis"])]


@op("Flatten")
def _flatten(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    a, e = node.attrs["axis"], node.attrs["end_axis"]
    return [x.reshape(*x.shape[:a], -1, *x.shape[e + 1:])]
