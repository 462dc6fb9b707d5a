"""Caffe layers that no ``torch.nn`` class computes exactly, as small ``nn.Module`` classes.

The module (:func:`to_module`)
------------------------------
One submodule per Caffe layer, registered under the layer's name, so ``state_dict()`` keys are the
graph's tensor keys (``conv1.weight``, ``bn_conv1.running_mean``, ``fc1000.bias``). ``torch.nn`` classes
are used where they compute exactly what Caffe computes (Conv2d, ReLU/LeakyReLU, Sigmoid, Tanh, Softmax,
Flatten, Dropout); small modules defined here cover the rest: :class:`CaffePooling` (ceil-mode output
size with Caffe's drop-last-window rule, MAX padded with -inf, AVE divided by Caffe's clipped window
size), :class:`CaffeBatchNorm` (always the stored statistics, eps added to the variance, no affine part,
no ``num_batches_tracked``), :class:`CaffeScale`, :class:`CaffeInnerProduct` (``nn.Linear`` that flattens
from ``axis`` in C, H, W order), :class:`CaffeEltwise`, :class:`CaffeConcat` and :class:`CaffeLRN`.
Those helper classes depend on nothing but torch and :func:`~caffe2x.graph.ir.pool_output_size`, because
``--emit-code`` copies their source verbatim into the generated ``model.py``: the generated net and this
module run the very same code.

"""
from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from caffe2x.graph.formulas import pool_window
from caffe2x.graph.ir import pool_output_size
from caffe2x.targets.torch.sizes import InputSizeError, check_min_size

torch.fx.wrap("check_min_size")  # FX records the call instead of tracing its Python `if` on sizes


# =========================================================================== Caffe layers as modules
# Everything in this section is copied verbatim into generated model code (see codegen.py), so it
# may use only torch, nn, F, math, pool_window, pool_output_size and the checks of sizes.py.

class CaffeBatchNorm(nn.BatchNorm2d):
    """Caffe's BatchNorm at inference: ``(x - mean) / sqrt(var + eps)``, per channel (axis 1).

    A real ``nn.BatchNorm2d`` (``affine=False``, ``track_running_stats=True``), so torch's own tools see
    it: ``nn.SyncBatchNorm.convert_sync_batchnorm``, ``torch.nn.utils.fusion.fuse_conv_bn_eval``, and
    every ``isinstance(m, nn.modules.batchnorm._BatchNorm)`` check. The statistics are Caffe's with the
    moving-average factor already divided out, ``eps`` is Caffe's (added to the variance), and
    ``momentum`` is ``1 - moving_average_fraction`` (used only where torch's batch statistics are, e.g.
    after conversion to SyncBatchNorm). Caffe keeps the affine part in a separate Scale layer, so there
    is no weight or bias here, and the stored statistics are always used (Caffe's
    ``use_global_stats``), even in ``train()`` mode. Caffe stores no batch count: ``num_batches_tracked``
    is ``None``, so the state_dict holds ``running_mean`` and ``running_var`` only.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.001) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False, track_running_stats=True)
        self.register_buffer("num_batches_tracked", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, None, None, False, 0.0, self.eps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # type: ignore[no-untyped-def]
        # nn.Module's own loading: _NormBase's would add a num_batches_tracked key the module does not have
        nn.Module._load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                        unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class CaffeScale(nn.Module):
    """Caffe's Scale (one-input form): multiply by ``weight`` and add ``bias``, both shaped like the
    input's dimensions ``axis .. axis + weight.dim()`` and broadcast over the others."""

    def __init__(self, shape: tuple[int, ...], axis: int = 1, bias: bool = True, rank: int = 4) -> None:
        super().__init__()
        self.axis = axis
        #: the parameters' broadcast view for a ``rank``-D input (fixed when built: no size arithmetic in forward)
        self.view_shape = [1] * axis + [int(d) for d in shape] + [1] * (rank - axis - len(shape))
        self.weight = nn.Parameter(torch.ones(shape))
        if bias:
            self.bias = nn.Parameter(torch.zeros(shape))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.weight.view(self.view_shape)
        if self.bias is not None:
            y = y + self.bias.view(self.view_shape)
        return y

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, axis={self.axis}, bias={self.bias is not None}"


class CaffePooling(nn.Module):
    """Caffe's Pooling, at any input size, in a form every torch tracer and exporter keeps.

    Caffe's output size rounds up (``ceil((H + 2p - k) / s) + 1``), then drops a last window that
    would start at or beyond ``H + p``; MAX ignores padding; AVE divides by the window clipped to
    ``[-p, H + p)`` (padding counts, the ceil-mode overhang does not). Here the input is padded by
    ``p`` cells before and a fixed ``tail`` after (:meth:`tail_pad`, computed once from the window), and
    pooled without padding and without rounding up: the output size then comes from torch's pooling op
    at run time, with no size computed in Python, so ``torch.jit.trace``, ``torch.export`` with dynamic
    H/W (named ``Dim`` ranges included: torch's own ``ceil_mode`` leaves guards that export cannot
    prove) and ONNX export stay right at every size. MAX pads with copies of the edge, which no window
    can tell from ignoring the padding (every window holds a real cell, and the edge cell whenever it
    holds padding) and which FX quantization observers take as ordinary values; only a window wholly
    beyond the input (no pad, stride > kernel) sees ``-inf`` padding, as Caffe gives it. AVE pads with
    zeros and divides by the same pooling of a plane of ones over the input and its padding. Floor-mode
    layers (``round_mode: FLOOR``) whose pad torch accepts are one native call. ``global_pooling``
    pools the whole plane. An input smaller than the window allows is an :class:`InputSizeError`
    naming ``layer``.
    """

    def __init__(self, method: str = "max", kernel: tuple[int, int] = (1, 1), stride: tuple[int, int] = (1, 1),
                 pad: tuple[int, int] = (0, 0), ceil: bool = True, global_pooling: bool = False,
                 layer: str = "pooling") -> None:
        super().__init__()
        self.method = method
        self.kernel = (int(kernel[0]), int(kernel[1]))
        self.stride = (int(stride[0]), int(stride[1]))
        self.pad = (int(pad[0]), int(pad[1]))
        self.ceil = ceil
        self.global_pooling = global_pooling
        self.layer = layer
        th = self.tail_pad(self.kernel[0], self.stride[0], self.pad[0], ceil)
        tw = self.tail_pad(self.kernel[1], self.stride[1], self.pad[1], ceil)
        #: floor mode with a pad torch accepts: torch's own pooling computes Caffe's windows
        self.native = not ceil and all(2 * p <= k for k, p in zip(self.kernel, self.pad))
        #: otherwise: F.pad amounts (left, right, top, bottom) of the input, and of the AVE divisor's plane of ones
        self.padding = [self.pad[1], tw, self.pad[0], th]
        self.ones_padding = [self.pad[1], self.pad[1], self.pad[0], self.pad[0]]
        self.ones_tail = [0, tw - self.pad[1], 0, th - self.pad[0]]
        self.padded = self.pad[0] + self.pad[1] + th + tw > 0
        #: a window may lie wholly beyond the input (no pad, stride > kernel): Caffe's MAX gives it -inf
        self.empty_windows = any(ceil and p == 0 and s > k for k, s, p in zip(self.kernel, self.stride, self.pad))
        #: the smallest input plane with at least one window
        self.min_size = (max(1, self.kernel[0] - self.pad[0] - th), max(1, self.kernel[1] - self.pad[1] - tw))

    @staticmethod
    def tail_pad(kernel: int, stride: int, pad: int, ceil: bool) -> int:
        """Cells to add after the input (besides ``pad`` before it) so that pooling the padded axis
        without rounding up gives Caffe's window count at every input size ``H``.

        Floor-mode pooling of ``H + pad + t`` cells has window starts ``i * stride <= H + pad + t -
        kernel``. Caffe's starts (counted from the padded origin) are those below ``H + 2 pad - kernel +
        stride`` (ceil) and, when ``pad > 0``, also below ``H + pad`` (a window starting in the trailing
        padding is dropped); without ceil, those at most ``H + 2 pad - kernel``. Both bounds are ``H``
        plus a constant, so one ``t`` fits every ``H``."""
        if not ceil:
            return pad
        if pad == 0:
            return stride - 1
        return min(pad + stride - 1, kernel - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pooling:
            if self.method == "max":
                return torch.amax(x, dim=(2, 3), keepdim=True)
            return torch.mean(x, dim=(2, 3), keepdim=True)
        x = check_min_size(x, self.min_size[0], self.min_size[1], self.layer)
        if self.native:
            if self.method == "max":
                return F.max_pool2d(x, self.kernel, self.stride, self.pad)
            return F.avg_pool2d(x, self.kernel, self.stride, self.pad, count_include_pad=True)
        if self.method == "max":
            if self.empty_windows:
                x = F.pad(x, self.padding, value=float("-inf"))
            elif self.padded:  # edge copies: every window holds a real cell, and the edge cell when it holds padding
                x = F.pad(x, self.padding, mode="replicate")
            return F.max_pool2d(x, self.kernel, self.stride)
        if not self.padded:
            return F.avg_pool2d(x, self.kernel, self.stride)
        total = F.avg_pool2d(F.pad(x, self.padding), self.kernel, self.stride)
        # Caffe's divisor over kh*kw: a plane of ones over the input and its padding, zeros beyond
        ones = F.pad(torch.ones_like(x[:1, :1]), self.ones_padding, value=1.0)
        return total / F.avg_pool2d(F.pad(ones, self.ones_tail), self.kernel, self.stride)

    def extra_repr(self) -> str:
        if self.global_pooling:
            return f"{self.method!r}, global_pooling=True"
        return (f"{self.method!r}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, "
                f"ceil={self.ceil}")


class CaffeInnerProduct(nn.Linear):
    """Caffe's InnerProduct: ``nn.Linear`` applied after flattening dimensions ``axis..`` in C, H, W
    order (Caffe's memory order, which is also torch's)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, axis: int = 1) -> None:
        super().__init__(in_features, out_features, bias)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.flatten(self.axis), self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", axis={self.axis}"


class CaffeEltwise(nn.Module):
    """Caffe's Eltwise over any number of inputs: ``sum`` (each input times its ``coeff``), ``prod``
    or ``max``."""

    #: the inputs come as one list (TorchScript takes no ``*args``)
    takes_list = True

    def __init__(self, operation: str = "sum", coeff: tuple[float, ...] = ()) -> None:
        super().__init__()
        self.operation = operation
        #: one factor per input; inputs beyond the list (all of them without coeff) are taken once
        self.coeff = [float(c) for c in coeff] or [1.0]

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        y = xs[0]
        if self.operation == "sum":
            if self.coeff[0] != 1.0:
                y = y * self.coeff[0]
            for i in range(1, len(xs)):
                c = self.coeff[i] if i < len(self.coeff) else 1.0
                y = y + (xs[i] if c == 1.0 else xs[i] * c)
            return y
        for i in range(1, len(xs)):
            y = y * xs[i] if self.operation == "prod" else torch.maximum(y, xs[i])
        return y

    def extra_repr(self) -> str:
        return f"{self.operation!r}" + (f", coeff={tuple(self.coeff)}" if self.operation == "sum" else "")


class CaffeConcat(nn.Module):
    """Caffe's Concat along ``axis``."""

    #: the inputs come as one list (TorchScript takes no ``*args``)
    takes_list = True

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class CaffeLRN(nn.Module):
    """Caffe's LRN, ``y = x * scale ** -beta``.

    ACROSS_CHANNELS: ``scale = k + alpha / size * (sum of x^2 over size neighbouring channels)``.
    WITHIN_CHANNEL: ``scale = 1 + alpha / size^2 * (sum of x^2 over a size x size window, zero padded)``;
    Caffe builds it from AVE pooling and a Power layer with shift 1, so ``k`` plays no part there.
    (``nn.LocalResponseNorm`` differs: no within-channel mode, and it averages over a clipped window.)
    """

    def __init__(self, size: int = 5, alpha: float = 1.0, beta: float = 0.75, k: float = 1.0,
                 region: str = "across") -> None:
        super().__init__()
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = (self.size - 1) // 2
        sq = x * x
        if self.region == "across":
            padded = F.pad(sq, (0, 0, 0, 0, half, self.size - 1 - half))
            channels = x.shape[1]
            window = padded[:, 0:channels]
            for i in range(1, self.size):
                window = window + padded[:, i:i + channels]
            scale = self.k + (self.alpha / self.size) * window
        else:
            padded = F.pad(sq, (half, half, half, half))
            # alpha / n^2 * (window sum) = alpha * (window mean); no divisor_override (torch.onnx drops it)
            scale = 1.0 + self.alpha * F.avg_pool2d(padded, self.size, 1)
        return x * torch.pow(scale, -self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, region={self.region!r}"


#: helper classes in the order generated code defines them
HELPER_CLASSES: tuple[type[nn.Module], ...] = (CaffeBatchNorm, CaffeScale, CaffePooling, CaffeInnerProduct,
                                               CaffeEltwise, CaffeConcat, CaffeLRN)



#: what generated code defines in place of :class:`~caffe2x.targets.torch.sizes.InputSizeError`
GENERATED_SIZE_ERROR = '''class InputSizeError(ValueError):
    """An input this net cannot take: the message names the layer and the sizes it accepts."""
'''


def helper_source(classes: Sequence[type[nn.Module]]) -> str:
    """Source of the helper classes (and of the functions they call: ``pool_window`` /
    ``pool_output_size``, the size checks of :mod:`.sizes`) that generated code needs."""
    from caffe2x.targets.torch import sizes

    sources = [inspect.getsource(c) for c in HELPER_CLASSES if c in classes]
    sources += [inspect.getsource(c) for c in classes if c not in HELPER_CLASSES]  # op families' modules
    parts = [inspect.getsource(pool_window)] if any("pool_window(" in src for src in sources) else []
    if any("pool_output_size(" in src for src in sources + parts):
        parts.insert(0, inspect.getsource(pool_output_size))
    used = [name for name in sizes.GENERATED_HELPERS if any(f"{name}(" in src for src in sources)]
    if used:
        names = list(dict.fromkeys([helper for name in used for helper in sizes.GENERATED_HELPERS[name]] + used))
        parts += [GENERATED_SIZE_ERROR] + [inspect.getsource(getattr(sizes, name)) for name in names]
    return "\n\n".join(p.rstrip() + "\n" for p in parts + sources)
