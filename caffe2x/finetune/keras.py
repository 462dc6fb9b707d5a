"""Fine-tuning in Keras: :func:`prepare` (new head, freezing by Caffe layer name) and the Caffe input
pipeline as :class:`CaffePreprocessing`, a registered, serialisable Keras preprocessing layer. Imports
keras (and its backend) and nothing else heavy.

The preprocessing numbers come from :mod:`caffe2x.validation.preprocess` (the validator's pipeline): the resize
and crop matrices, crop offsets and means are computed there in numpy; this layer only gathers rows of
those matrices and multiplies, so the two cannot drift.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from caffe2x.errors import Caffe2xError
from caffe2x.finetune import UP_TO, FreezeSpec, frozen_layers, resolve_layer
from caffe2x.targets.keras.ops import (keras_name)  # the package __init__ (run first) sets the backend (tensorflow) default
from caffe2x.validation import preprocess as pp

import keras  # noqa: E402  (isort: after the target)
from keras import ops  # noqa: E402

__all__ = ["CaffePreprocessing", "prepare", "HEAD_INIT_STD"]

#: standard deviation of the new head's Gaussian kernel (Caffe's fine-tuning recipes: gaussian 0.01)
HEAD_INIT_STD = 0.01
#: separates a Caffe layer's Keras name from the role of a helper layer (``res2a_branch2b__pad``)
AUX_SEPARATOR = "__"


# =========================================================================== head + freezing
def _owner(layer_name: str) -> str:
    return layer_name.split(AUX_SEPARATOR, 1)[0]


def prepare(model: keras.Model, num_classes: int, head: str | None = None, freeze: FreezeSpec = "all-but-head",
            softmax: bool = False) -> keras.Model:
    """A model ready to fine-tune, built from a converted one (``caffe2x.to_keras(graph, trainable=True)``).

    - ``head`` (Caffe layer name, default: the last Dense) is replaced by a fresh ``Dense(num_classes)``
      of the same name (kernel N(0, 0.01²), bias 0); every other layer is shared with ``model``, pretrained.
    - The new model outputs the head's logits (``from_logits=True`` losses), or with ``softmax=True`` their
      softmax (a ``Softmax`` layer named like the Caffe one that followed the head, ``prob`` by default).
    - ``freeze``: see :mod:`caffe2x.finetune`; frozen layers (with their helper layers, ``<name>__pad`` …)
      get ``trainable = False``, which in Keras also keeps a BatchNormalization in inference mode
      (stored statistics, never updated) even when the model is called with ``training=True``.

    Unknown layer names raise :class:`Caffe2xError` listing close matches.
    """
    if not isinstance(model, keras.Model):
        raise Caffe2xError(f"prepare() takes a keras.Model from caffe2x.to_keras, got {type(model).__name__}")
    if int(num_classes) < 1:
        raise Caffe2xError(f"num_classes must be at least 1, got {num_classes}")
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    order = list(dict.fromkeys(_owner(layer.name) for layer in layers))
    dense = [layer.name for layer in layers if isinstance(layer, keras.layers.Dense)]
    if head is None:
        if not dense:
            raise Caffe2xError("the model has no Dense (InnerProduct) layer to replace; name the head explicitly")
        head = dense[-1]
    head = resolve_layer(keras_name(head), order, "head layer")
    old = model.get_layer(head)
    if not isinstance(old, keras.layers.Dense):
        raise Caffe2xError(f"head {head!r} is a {type(old).__name__}, not a Dense (InnerProduct)"
                           + (f"; Dense layers: {', '.join(dense)}" if dense else ""))
    new = keras.layers.Dense(int(num_classes), name=head,
                             kernel_initializer=keras.initializers.RandomNormal(stddev=HEAD_INIT_STD),
                             bias_initializer="zeros")
    out = new(old.input)
    if softmax:
        after = [layer for layer in layers if isinstance(layer, keras.layers.Softmax) and layer.input is old.output]
        out = keras.layers.Softmax(axis=-1, name=after[0].name if after else "prob")(out)
    prepared = keras.Model(model.inputs, out, name=model.name)
    kept = [layer for layer in prepared.layers if not isinstance(layer, keras.layers.InputLayer)]
    order = [n for n in order if n in {_owner(layer.name) for layer in kept}]
    frozen = set(frozen_layers(None if freeze is None else _keras_names(freeze), order, head))
    for layer in kept:
        layer.trainable = _owner(layer.name) not in frozen
    return prepared


def _keras_names(freeze: FreezeSpec) -> FreezeSpec:
    """Caffe layer names in a freeze spec spelled as the Keras target names them."""
    if isinstance(freeze, str):
        if freeze.startswith(UP_TO):
            return UP_TO + keras_name(freeze[len(UP_TO):].strip())
        return freeze if freeze in ("all-but-head", "none", "") else keras_name(freeze)
    return [keras_name(str(n)) for n in freeze] if freeze is not None else None


# =========================================================================== preprocessing
@keras.saving.register_keras_serializable(package="caffe2x")
class CaffePreprocessing(keras.layers.Layer):
    """Caffe's input pipeline as a Keras layer: RGB ``uint8`` images ``(N, H, W, 3)`` in, the converted
    model's NHWC float32 input ``(N, height, width, 3)`` out -- shorter side resized to ``resize``
    (default 256 for 224..256 crops), crop, RGB->BGR, 0..255, mean subtracted (``mean``: a
    ``.binaryproto`` path or (3, H, W) array, stored as a weight; or ``mean_values`` in BGR order;
    default B 103.94, G 116.78, R 123.68).

    Inference (``training`` false) takes the centre crop: the validator's numbers to float rounding.
    With ``training=True`` (``model.fit``), ``random_crop=True`` draws each image's crop offset and
    ``mirror=True`` flips half of them left-right, like Caffe's ``transform_param`` in TRAIN.
    The image size must be static (known when the layer is traced); a batch shares one size.
    """

    def __init__(self, height: int = 224, width: int = 224, mean: str | os.PathLike[str] | np.ndarray | None = None,
                 mean_values: Sequence[float] | None = None, resize: int | None = None, random_crop: bool = False,
                 mirror: bool = False, seed: int | None = None, mean_image_shape: Sequence[int] | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.height, self.width, self.resize = int(height), int(width), resize
        self.random_crop, self.mirror, self.seed = bool(random_crop), bool(mirror), seed
        resolved = pp.Mean.resolve(mean, mean_values)
        self.mean_values = None if resolved.image is not None else [float(v) for v in resolved.values or ()]
        shape = tuple(resolved.image.shape) if resolved.image is not None else mean_image_shape
        self.mean_image = None
        if shape is not None:  # a weight, so a saved model carries the mean image's values
            self.mean_image = self.add_weight(shape=tuple(int(d) for d in shape), initializer="zeros",
                                              trainable=False, name="mean_image")
            if resolved.image is not None:
                self.mean_image.assign(np.asarray(resolved.image, np.float32))
        self.generator = keras.random.SeedGenerator(seed) if (random_crop or mirror) else None
        self.built = True

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(height=self.height, width=self.width, mean_values=self.mean_values, resize=self.resize,
                      random_crop=self.random_crop, mirror=self.mirror, seed=self.seed,
                      mean_image_shape=None if self.mean_image is None else list(self.mean_image.shape))
        return config

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return (input_shape[0], self.height, self.width, 3)

    def _mean(self) -> pp.Mean:
        if self.mean_image is not None:
            return pp.Mean(image=np.zeros(tuple(self.mean_image.shape), np.float32))
        return pp.Mean(values=tuple(self.mean_values or pp.DEFAULT_MEAN_BGR))

    def call(self, images: Any, training: bool | None = None) -> Any:
        in_h, in_w = images.shape[1], images.shape[2]
        if in_h is None or in_w is None or images.shape[3] != 3:
            raise Caffe2xError(f"CaffePreprocessing needs RGB images of a static size (N, H, W, 3), got "
                               f"{tuple(images.shape)}")
        g = pp.geometry(int(in_h), int(in_w), self.height, self.width, self.resize)
        n = ops.shape(images)[0]
        top, left = g.centre
        tops = ops.full((n,), top, dtype="int32")
        lefts = ops.full((n,), left, dtype="int32")
        flips = ops.zeros((n,), dtype="bool")
        if training and self.random_crop:
            max_top, max_left = g.max_offset
            tops = keras.random.randint((n,), 0, max_top + 1, dtype="int32", seed=self.generator)
            lefts = keras.random.randint((n,), 0, max_left + 1, dtype="int32", seed=self.generator)
        if training and self.mirror:
            flips = keras.random.uniform((n,), seed=self.generator) < 0.5
        rows_i = tops[:, None] + ops.arange(self.height, dtype="int32")[None, :]
        cols_i = lefts[:, None] + ops.arange(self.width, dtype="int32")[None, :]
        cols_i = ops.where(flips[:, None], ops.flip(cols_i, axis=1), cols_i)
        rows = ops.take(ops.convert_to_tensor(g.rows), rows_i, axis=0)        # (N, h, H)
        cols = ops.take(ops.convert_to_tensor(g.cols), cols_i, axis=0)        # (N, w, W)
        bgr = ops.flip(ops.cast(images, "float32"), axis=-1)
        y = ops.einsum("nih,nhwc,njw->nijc", rows, bgr, cols)
        mean, follows = self._mean().for_crop(g.resized, g.crop)
        m = self.mean_image if self.mean_image is not None else ops.convert_to_tensor(mean)
        if self.mean_image is not None and not follows:
            (mt, ml) = pp.crop_offsets(*tuple(self.mean_image.shape[1:]), *g.crop)
            m = m[:, mt:mt + self.height, ml:ml + self.width]
        m = ops.transpose(m, (1, 2, 0))                                       # HWC
        if follows:                    # a resized-size mean image, indexed at each image's window
            m = ops.take(m, rows_i, axis=0)                                   # (N, h, rw, 3)
            m = ops.take_along_axis(m, ops.broadcast_to(cols_i[:, None, :, None], (n, self.height, self.width, 3)),
                                    axis=2)
        return y - m
