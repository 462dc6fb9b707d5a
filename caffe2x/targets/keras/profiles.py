"""The ``keras-applications`` naming profile: an ``.h5`` that ``keras.applications.ResNet50/101/152`` loads."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph, Node
from caffe2x.graph.numeric import max_rel_error, round_to
from caffe2x.graph.reference import run as reference_run
from caffe2x.targets.keras.h5 import _write_h5_layers

# --------------------------------------------------------------------------- keras.applications profile
_RESNET_LAYER = re.compile(r"^res(\d)([a-z])(\d*)_branch(1|2a|2b|2c)$")
_RESNET_BRANCH = {"1": "0", "2a": "1", "2b": "2", "2c": "3"}
_RESNET_ARCH = {(3, 4, 6, 3): "ResNet50", (3, 4, 23, 3): "ResNet101", (3, 8, 36, 3): "ResNet152"}
#: keras.applications ResNet's BatchNormalization epsilon
KERAS_APPLICATIONS_BN_EPS = 1.001e-5
#: standard deviation of the seeded input the profile's logit difference is measured on
MEASURE_INPUT_STD = 50.0


#: root attributes of a keras-applications ``.h5``: the profile and the logit difference measured when
#: it was written (max|a-b|/max|b| on :func:`measure_input`), read back by ``validate --against``
PROFILE_ATTR = "caffe2x_profile"
BOUND_ATTR = "caffe2x_profile_max_rel"


def measure_input(graph: Graph) -> np.ndarray:
    """The seeded input the profile's logit difference is measured on: white noise of std
    :data:`MEASURE_INPUT_STD` (about what a mean-subtracted BGR image in [0, 255] looks like)."""
    (_, shape), = graph.inputs.items()
    return (np.random.default_rng(0).standard_normal((1, *shape[1:])) * MEASURE_INPUT_STD).astype(np.float32)


@dataclass
class _ResNetUnit:
    conv: Node
    bn: Node
    scale: Node


def _resnet_units(graph: Graph) -> tuple[str, dict[str, _ResNetUnit], Node]:
    """Map KaimingHe's ResNet layers to keras.applications names: ``{'conv2_block1_0': unit}``, arch, fc."""
    readers: dict[str, list[Node]] = {}
    for n in graph.nodes:
        for v in n.inputs:
            readers.setdefault(v, []).append(n)

    def follower(node: Node, op: str) -> Node:
        for n in readers.get(node.outputs[0], []):
            if n.op == op:
                return n
        raise Caffe2xError(f"keras-applications profile: layer {node.name!r} has no {op} after it "
                           f"(keras.applications ResNets need Conv+BatchNorm+Scale; do not fold BN)")

    units: dict[str, _ResNetUnit] = {}
    blocks: dict[int, set[int]] = {}
    fcs = [n for n in graph.nodes if n.op == "InnerProduct"]
    for node in graph.nodes:
        if node.op != "Convolution":
            continue
        if node.name == "conv1":
            prefix = "conv1"
        else:
            m = _RESNET_LAYER.match(node.name)
            if m is None:
                raise Caffe2xError(f"keras-applications profile: convolution {node.name!r} is not a KaimingHe "
                                   f"ResNet layer name (conv1, res<stage><block>_branch<1|2a|2b|2c>)")
            stage, letter, num, branch = int(m[1]), m[2], m[3], m[4]
            block = 1 if letter == "a" else (int(num) + 1 if num else ord(letter) - ord("a") + 1)
            blocks.setdefault(stage, set()).add(block)
            prefix = f"conv{stage}_block{block}_{_RESNET_BRANCH[branch]}"
        bn = follower(node, "BatchNorm")
        units[prefix] = _ResNetUnit(node, bn, follower(bn, "Scale"))
    counts = tuple(len(blocks.get(s, ())) for s in (2, 3, 4, 5))
    arch = _RESNET_ARCH.get(counts)
    if arch is None or len(fcs) != 1 or "conv1" not in units:
        raise Caffe2xError(f"keras-applications profile: not a KaimingHe ResNet-50/101/152 (blocks per stage "
                           f"{list(counts)}, {len(fcs)} InnerProduct layers)")
    return arch, units, fcs[0]


def _resnet_weights(graph: Graph, layer: keras.layers.Layer, units: dict[str, _ResNetUnit],
                    fc: Node) -> dict[str, np.ndarray]:
    """Values for one keras.applications layer's variables, by variable name."""

    def p(node: Node, role: str) -> np.ndarray:
        return np.asarray(graph.param(node, role), dtype=np.float32)

    name = layer.name
    if name == "predictions":
        # pool5 leaves (N, C, 1, 1): Caffe's C,H,W flattening is Keras' pooled (N, C) order
        return {"kernel": p(fc, "weight").T, "bias": p(fc, "bias") if "bias" in fc.params
                else np.zeros(fc.attrs["num_output"], np.float32)}
    prefix, _, kind = name.rpartition("_")
    unit = units.get(prefix)
    if unit is None:
        raise Caffe2xError(f"keras-applications profile: nothing in the Caffe net maps to keras layer {name!r}")
    if kind == "conv":
        c = unit.conv
        bias = p(c, "bias") if "bias" in c.params else np.zeros(c.attrs["num_output"], np.float32)
        return {"kernel": p(c, "weight").transpose(2, 3, 1, 0), "bias": bias}
    if kind == "bn":
        s = unit.scale
        gamma = p(s, "weight")
        beta = p(s, "bias") if "bias" in s.params else np.zeros_like(gamma)
        # var' + 1.001e-5 == var + Caffe's eps: the epsilon difference is compensated in the statistics
        var = p(unit.bn, "running_var").astype(np.float64) + (float(unit.bn.attrs["eps"]) - KERAS_APPLICATIONS_BN_EPS)
        return {"gamma": gamma, "beta": beta, "moving_mean": p(unit.bn, "running_mean"),
                "moving_variance": np.maximum(var, 0.0).astype(np.float32)}
    raise Caffe2xError(f"keras-applications profile: unexpected keras layer {name!r}")


def _keras_application(arch: str, graph: Graph, classes: int) -> keras.Model:
    (_, c, h, w), = graph.inputs.values()
    return getattr(keras.applications, arch)(weights=None, classifier_activation=None,
                                             input_shape=(h, w, c), classes=classes)


def write_keras_applications(graph: Graph, path: str | os.PathLike[str], dtype: str = "float32") -> list[str]:
    """Weights for ``keras.applications.ResNet50/101/152(weights=None)``, loadable with ``load_weights``.

    Conv+BatchNorm+Scale become Keras' ``conv*_conv`` (Caffe's missing biases as zeros) and
    ``conv*_bn`` (gamma/beta from Scale, statistics from BatchNorm); fc1000 becomes ``predictions``.
    The architectures differ (see the notes), so the file is loaded into a keras.applications model
    here and its logits are compared with the numpy reference on a seeded input; the measured
    difference is returned as a note, not hidden.
    """
    path = Path(path)
    if len(graph.inputs) != 1:
        raise Caffe2xError("keras-applications profile: the net must have one input")
    arch, units, fc = _resnet_units(graph)
    fc_in = graph.shapes[fc.inputs[0]]
    if len(fc_in) == 4 and fc_in[2:] != (1, 1):
        raise Caffe2xError(f"keras-applications profile: {fc.name!r} reads a {fc_in[2]}x{fc_in[3]} map; "
                           f"keras.applications pools globally to 1x1 (use the net's own input size)")
    model = _keras_application(arch, graph, fc.attrs["num_output"])
    store = np.float16 if dtype == "float16" else np.float32
    layers = []
    used = set()
    for layer in model.layers:
        variables = layer.trainable_weights + layer.non_trainable_weights
        entries = []
        if variables:
            values = _resnet_weights(graph, layer, units, fc)
            for v in variables:
                value = values[v.name]
                if tuple(v.shape) != value.shape:
                    raise Caffe2xError(f"keras-applications profile: {v.path} has shape {list(value.shape)} "
                                       f"from Caffe, keras.applications expects {list(v.shape)}")
                entries.append((v.path, round_to(value, dtype).astype(store)))
            used.add(layer.name.rpartition("_")[0])
        layers.append((layer.name, entries))
    unmapped = sorted(set(units) - used)
    if unmapped:
        raise Caffe2xError(f"keras-applications profile: Caffe layers {unmapped[:3]} have no keras.applications "
                           f"counterpart in {arch}")
    _write_h5_layers(path, layers)

    # measure: load the file with Keras' own loader into the keras.applications model, compare logits
    model.load_weights(str(path))
    x = measure_input(graph)
    fc_blob = graph.blob_name(fc.outputs[0])
    exact = np.asarray(reference_run(graph, x, outputs=fc_blob))
    got = np.asarray(model(x.transpose(0, 2, 3, 1), training=False))
    err = max_rel_error(got, exact)
    # the bound `validate --against` holds this file to, in the file (Keras ignores extra root attributes)
    _write_h5_layers(path, layers, {PROFILE_ATTR: "keras-applications".encode("utf8"), BOUND_ATTR: float(err)})
    top1 = "agrees" if int(got.argmax()) == int(exact.argmax()) else "differs"
    return [
        f"keras-applications profile: weights for keras.applications.{arch}(weights=None, "
        f"classifier_activation=None for logits), load with model.load_weights(path); layer names "
        f"conv1_conv, conv2_block1_0_conv (shortcut), ..., predictions",
        f"keras-applications {arch} logits differ from Caffe's by {err:.2e} max relative error "
        f"(max|a-b|/max|b|, top-1 {top1}), measured by loading this file with Keras' load_weights and "
        f"running seeded white noise of std {MEASURE_INPUT_STD:g} (a hard case for pool1's one-pixel window "
        f"shift)",
        "architecture differences: keras.applications pool1 is ZeroPadding2D(1) + MaxPooling2D 3x3/2 "
        "(zero padding, floor rounding) where Caffe pools 3x3/2 with no padding and rounds up (same 56x56, "
        "windows shifted by one pixel); BatchNormalization epsilon 1.001e-5 vs Caffe's 1e-5 (compensated in "
        "moving_variance); Caffe's bias-free convolutions get zero biases; the input is Caffe's: BGR, "
        "mean-subtracted, 0-255 (keras.applications.resnet50.preprocess_input does this from RGB with "
        "per-channel means; Caffe's training used a per-pixel mean image)",
    ]
