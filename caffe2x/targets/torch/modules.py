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


# =========================================================================== Caffe layers as modules
# Everything in this section is copied verbatim into generated model code (see codegen.py), so it
# may use only torch, nn, F, math, pool_window and pool_output_size.

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

    def __init__(self, shape: tuple[int, ...], axis: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.ones(shape))
        if bias:
            self.bias = nn.Parameter(torch.zeros(shape))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1,) * self.axis + tuple(self.weight.shape) + (1,) * (x.dim() - self.axis - self.weight.dim())
        y = x * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, axis={self.axis}, bias={self.bias is not None}"


class CaffePooling(nn.Module):
    """Caffe's Pooling, which no torch pooling call reproduces in general.

    Output size rounds up (``ceil``), then drops a last window that would start in the padding. MAX
    pads with -inf, so padding never wins over negative values. AVE sums the window and divides by
    Caffe's divisor: the window clipped to ``[-pad, size + pad)``, i.e. padding counts but the ceil-mode
    overhang beyond it does not. ``global_pooling`` pools the whole plane. Sizes are taken from the
    input at run time, so the module works at any input size, as a reshaped Caffe net does.
    """

    def __init__(self, method: str = "max", kernel: tuple[int, int] = (1, 1), stride: tuple[int, int] = (1, 1),
                 pad: tuple[int, int] = (0, 0), ceil: bool = True, global_pooling: bool = False) -> None:
        super().__init__()
        self.method = method
        self.kernel = kernel
        self.stride = stride
        self.pad = pad
        self.ceil = ceil
        self.global_pooling = global_pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        kh, kw, sh, sw, ph, pw, oh, ow, rh, rw = pool_window(h, w, self.kernel, self.stride, self.pad, self.ceil,
                                                             self.global_pooling)
        if self.method == "max":
            if ph or pw or rh or rw:
                x = F.pad(x, (pw, rw, ph, rh), value=float("-inf"))
            return F.max_pool2d(x, (kh, kw), (sh, sw))[:, :, :oh, :ow]
        if ph or pw or rh or rw:
            x = F.pad(x, (pw, rw, ph, rh))
        # avg_pool2d divides every window sum by kh*kw; Caffe divides by the clipped window, so rescale
        # (by exactly 1 where the window is whole). Not divisor_override=1: torch.onnx.export drops it.
        mean = F.avg_pool2d(x, (kh, kw), (sh, sw))[:, :, :oh, :ow]
        div_h = self._window_sizes(oh, kh, sh, ph, h, x)
        div_w = self._window_sizes(ow, kw, sw, pw, w, x)
        return mean * ((kh * kw) / (div_h.view(-1, 1) * div_w.view(1, -1)))

    @staticmethod
    def _window_sizes(out: int, kernel: int, stride: int, pad: int, size: int, like: torch.Tensor) -> torch.Tensor:
        """Caffe's AVE divisor along one axis: ``min(start + kernel, size + pad) - start``."""
        starts = torch.arange(out, device=like.device) * stride - pad
        return (torch.clamp(starts + kernel, max=size + pad) - starts).to(like.dtype)

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

    def __init__(self, operation: str = "sum", coeff: tuple[float, ...] = ()) -> None:
        super().__init__()
        self.operation = operation
        self.coeff = coeff

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "sum":
            coeff = self.coeff or (1.0,) * len(xs)
            y = xs[0] if coeff[0] == 1 else xs[0] * coeff[0]
            for c, x in zip(coeff[1:], xs[1:]):
                y = y + (x if c == 1 else x * c)
            return y
        y = xs[0]
        for x in xs[1:]:
            y = y * x if self.operation == "prod" else torch.maximum(y, x)
        return y

    def extra_repr(self) -> str:
        return f"{self.operation!r}" + (f", coeff={self.coeff}" if self.operation == "sum" else "")


class CaffeConcat(nn.Module):
    """Caffe's Concat along ``axis``."""

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
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



def helper_source(classes: Sequence[type[nn.Module]]) -> str:
    """Source of the helper classes (and ``pool_window`` / ``pool_output_size``) that generated code needs."""
    sources = [inspect.getsource(c) for c in HELPER_CLASSES if c in classes]
    sources += [inspect.getsource(c) for c in classes if c not in HELPER_CLASSES]  # op families' modules
    parts = [inspect.getsource(pool_window)] if any("pool_window(" in src for src in sources) else []
    if any("pool_output_size(" in src for src in sources + parts):
        parts.insert(0, inspect.getsource(pool_output_size))
    return "\n\n".join(p.rstrip() + "\n" for p in parts + sources)
