"""Keras layers for the Caffe ops no standard Keras layer computes exactly.

Each layer is registered serialisable under the ``caffe2x`` package (``caffe2x>CaffePooling2D`` …), so
a model saved with them loads with ``keras.models.load_model`` (``safe_mode=True``, no ``Lambda``) once
``caffe2x.targets.keras`` (or this module) has been imported. Everything is written with ``keras.ops``,
so the layers are not tied to the TensorFlow backend, and every 4-D tensor is NHWC.

Why each exists:

* :class:`CaffePooling2D` -- Caffe's MAX pooling pads with -inf (a window over negative values never
  sees a zero) and rounds output sizes up; Caffe's AVE pooling divides by the window clipped to
  ``H + pad`` (padding inside counts, the ceil overhang does not). Keras' pooling layers do neither.
* :class:`CaffeScale` -- a learned per-channel (or per-axes) multiply-add; Keras has no such layer.
* :class:`CaffeLRN` -- Caffe's LRN, across channels (``k + alpha/n * sum``) or within a channel
  (``1 + alpha/(n*n) * sum``, ``k`` unused).
* :class:`CaffeEltwiseSum` -- Eltwise SUM with per-input coefficients, in one layer with Caffe's name.
"""
from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from caffe2x.graph.ir import pool_output_size  # noqa: E402
from caffe2x.graph.reference import pool_geometry  # noqa: E402

_PACKAGE = "caffe2x"


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffePooling2D(keras.layers.Layer):
    """Caffe Pooling (MAX or AVE) on NHWC input with Caffe's geometry.

    The output size is :func:`caffe2x.graph.ir.pool_output_size` (ceil by default, last window dropped when
    it would start in the right padding). MAX pads with -inf; AVE pads with zeros and divides each
    window sum by Caffe's divisor from :func:`caffe2x.graph.reference.pool_geometry`. The divisor depends on
    the spatial size: computed once from a static H and W, or in the graph when they are known only at
    run time (:meth:`_call_dynamic`).
    """

    def __init__(self, method: str, pool_size: Any, strides: Any, padding: Any = (0, 0), ceil: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if method not in ("max", "ave"):
            raise ValueError(f"CaffePooling2D method must be 'max' or 'ave', got {method!r}")
        self.method = method
        self.pool_size = _pair(pool_size)
        self.strides = _pair(strides)
        self.padding = _pair(padding)
        self.ceil = bool(ceil)

    def _geometry(self, h: int, w: int) -> tuple[int, int, int, int, np.ndarray]:
        (kh, kw), (sh, sw), (ph, pw) = self.pool_size, self.strides, self.padding
        oh = pool_output_size(h, kh, sh, ph, self.ceil)
        ow = pool_output_size(w, kw, sw, pw, self.ceil)
        rh, div_h = pool_geometry(h, oh, kh, sh, ph)
        rw, div_w = pool_geometry(w, ow, kw, sw, pw)
        return oh, ow, rh, rw, np.outer(div_h, div_w).astype(np.float32)

    def call(self, x: Any) -> Any:
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            return self._call_dynamic(x)
        (kh, kw), (sh, sw), (ph, pw) = self.pool_size, self.strides, self.padding
        oh, ow, rh, rw, divisor = self._geometry(int(h), int(w))
        pads = [[0, 0], [ph, rh], [pw, rw], [0, 0]]
        padded = bool(ph or pw or rh or rw)
        if self.method == "max":
            xp = ops.pad(x, pads, constant_values=float("-inf")) if padded else x
            return ops.max_pool(xp, (kh, kw), (sh, sw), padding="valid")[:, :oh, :ow, :]
        xp = ops.pad(x, pads) if padded else x
        y = ops.average_pool(xp, (kh, kw), (sh, sw), padding="valid")[:, :oh, :ow, :]
        # average_pool divided by kh*kw; rescale to Caffe's clipped divisor per output position
        factor = (np.float32(kh * kw) / divisor).reshape(1, oh, ow, 1)
        if np.all(factor == 1):
            return y
        return y * ops.convert_to_tensor(factor, dtype=y.dtype)

    def _extent(self, size: Any, k: int, s: int, p: int) -> Any:
        """Caffe's output size along one axis from a run-time size (a scalar tensor)."""
        out = (size + (2 * p - k + (s - 1 if self.ceil else 0))) // s + 1
        if p > 0:  # the last window may not start in the right padding
            out = out - ops.cast(ops.greater_equal((out - 1) * s, size + p), out.dtype)
        return out

    def _call_dynamic(self, x: Any) -> Any:
        """The pooling when H or W is known only at run time (a model saved with ``(None, None, C)``
        inputs, traced by TensorFlow): pad by ``pad`` left and ``pad + stride`` right (at least what
        any size needs), pool, keep Caffe's ``oh x ow`` windows. AVE divides each window sum by
        Caffe's divisor, the pooled count of a ones plane padded with ones inside ``size + pad``."""
        (kh, kw), (sh, sw), (ph, pw) = self.pool_size, self.strides, self.padding
        shape = ops.shape(x)
        oh, ow = self._extent(shape[1], kh, sh, ph), self._extent(shape[2], kw, sw, pw)
        pads = [[0, 0], [ph, ph + sh], [pw, pw + sw], [0, 0]]
        if self.method == "max":
            xp = ops.pad(x, pads, constant_values=float("-inf"))
            return ops.max_pool(xp, (kh, kw), (sh, sw), padding="valid")[:, :oh, :ow, :]
        mean = ops.average_pool(ops.pad(x, pads), (kh, kw), (sh, sw), padding="valid")[:, :oh, :ow, :]
        ones = ops.ones_like(x[:, :, :, :1])
        counted = ops.pad(ops.pad(ones, [[0, 0], [ph, ph], [pw, pw], [0, 0]], constant_values=1.0),
                          [[0, 0], [0, sh], [0, sw], [0, 0]])
        share = ops.average_pool(counted, (kh, kw), (sh, sw), padding="valid")[:, :oh, :ow, :]
        return mean / share

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        n, h, w, c = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.pool_size, self.strides, self.padding
        oh = None if h is None else pool_output_size(int(h), kh, sh, ph, self.ceil)
        ow = None if w is None else pool_output_size(int(w), kw, sw, pw, self.ceil)
        return (n, oh, ow, c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "method": self.method, "pool_size": list(self.pool_size),
                "strides": list(self.strides), "padding": list(self.padding), "ceil": self.ceil}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeScale(keras.layers.Layer):
    """Caffe Scale: ``x * scale (+ bias)``, the parameters broadcast against the input.

    ``shape`` is the parameter shape already laid out to broadcast against the input without its batch
    axis (``(C,)`` for the usual per-channel Scale of an NHWC or (N, C) blob).
    """

    def __init__(self, shape: Any, use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.param_shape = tuple(int(d) for d in shape)
        self.use_bias = bool(use_bias)
        # attributes, as Keras' own layers have them, so a builder can create the variables holding
        # their values (caffe2x.targets.keras.ops.built_with); not part of the config
        self.scale_initializer: Any = "ones"
        self.bias_initializer: Any = "zeros"

    def build(self, input_shape: tuple[Any, ...]) -> None:
        self.scale = self.add_weight(name="scale", shape=self.param_shape, initializer=self.scale_initializer)
        self.bias = (self.add_weight(name="bias", shape=self.param_shape, initializer=self.bias_initializer)
                     if self.use_bias else None)

    def call(self, x: Any) -> Any:
        y = x * self.scale
        return y + self.bias if self.bias is not None else y

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": list(self.param_shape), "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeLRN(keras.layers.Layer):
    """Caffe LRN on NHWC input: ``y = x * scale ** -beta``.

    ACROSS_CHANNELS: ``scale = k + alpha/size * sum of x^2 over size channels`` (window from
    ``(size-1)//2`` channels before to the rest after, zero beyond the ends). WITHIN_CHANNEL (Caffe
    builds it from an AVE pooling of x^2 with pad ``(size-1)//2`` and a Power layer with shift 1):
    ``scale = 1 + alpha/(size*size) * sum over the size x size window``; ``k`` plays no part.
    """

    def __init__(self, size: int, alpha: float, beta: float, k: float = 1.0, region: str = "across",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if region not in ("across", "within"):
            raise ValueError(f"CaffeLRN region must be 'across' or 'within', got {region!r}")
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)
        self.region = region

    def call(self, x: Any) -> Any:
        n = self.size
        half = (n - 1) // 2
        sq = x * x
        if self.region == "across":
            channels = x.shape[-1]
            padded = ops.pad(sq, [[0, 0], [0, 0], [0, 0], [half, n - 1 - half]])
            window = padded[..., 0:channels]
            for i in range(1, n):
                window = window + padded[..., i:i + channels]
            scale = self.k + (self.alpha / n) * window
        else:
            padded = ops.pad(sq, [[0, 0], [half, half], [half, half], [0, 0]])
            # average_pool's mean is the window sum / (n*n): alpha/(n*n) * sum == alpha * mean
            scale = 1.0 + self.alpha * ops.average_pool(padded, (n, n), (1, 1), padding="valid")
        return x * ops.power(scale, -self.beta)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta,
                "k": self.k, "region": self.region}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeEltwiseSum(keras.layers.Layer):
    """Caffe Eltwise SUM with coefficients: ``sum_i coeff[i] * x_i`` (Keras' ``Add`` has no weights)."""

    def __init__(self, coeff: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.coeff = [float(c) for c in coeff]

    def call(self, inputs: list[Any]) -> Any:
        if len(inputs) != len(self.coeff):
            raise ValueError(f"{self.name}: {len(inputs)} inputs but {len(self.coeff)} coefficients")
        y = inputs[0] * self.coeff[0] if self.coeff[0] != 1 else inputs[0]
        for c, v in zip(self.coeff[1:], inputs[1:]):
            y = y + (v * c if c != 1 else v)
        return y

    def compute_output_shape(self, input_shape: list[tuple[Any, ...]]) -> tuple[Any, ...]:
        return tuple(input_shape[0])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "coeff": list(self.coeff)}


#: every custom layer, for ``custom_objects=`` when a caller prefers not to rely on registration
CUSTOM_OBJECTS: dict[str, type[keras.layers.Layer]] = {
    cls.__name__: cls for cls in (CaffePooling2D, CaffeScale, CaffeLRN, CaffeEltwiseSum)
}
