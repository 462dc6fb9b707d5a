"""Naming profiles of the torch target: another library's state_dict keys for the same weights.

The torchvision profile (``profile="torchvision"``)
---------------------------------------------------
Writes KaimingHe's ResNet-50/101/152 under the keys of ``torchvision.models.resnet50/101/152()`` so that
``load_state_dict(strict=True)`` succeeds: ``conv1``, ``bn1``, ``layer{1-4}.{i}.conv{1,2,3}``/``bn{1,2,3}``,
``layer{1-4}.0.downsample.{0,1}``, ``fc``. Caffe's BatchNorm + Scale pair becomes one torchvision
BatchNorm2d (weight = gamma, bias = beta, running statistics; a Caffe eps other than torchvision's 1e-5
is moved into ``running_var``); a convolution bias, which torchvision's convolutions lack, is folded
exactly into the following BatchNorm (``running_mean -= bias``; conv1 of ResNet-50 has one). Those steps
are exact. The architectures are not the same, so the torchvision model computes something else:

* Downsampling: Caffe's ResNet (v1) strides the first 1x1 convolution of a block (``res3a_branch2a``
  stride 2); torchvision (v1.5) strides the 3x3 (``layer2.0.conv2``) and keeps ``conv1`` at stride 1.
  The weights have the same shapes, so they load, but each strided block sees different pixels.
* ``pool1``: Caffe's MAX 3x3 stride 2 has pad 0 and rounds up; torchvision's ``maxpool`` has pad 1 and
  rounds down. Same 56x56 output at 224x224, windows shifted by one pixel.
* ``pool5``: Caffe's AVE 7x7 is torchvision's ``AdaptiveAvgPool2d(1)`` only at a 224x224 input.
* Output: the Caffe net ends in ``prob`` (Softmax); torchvision returns the ``fc`` logits.
* Input convention is unchanged by the profile: the weights still expect Caffe's preprocessing
  (BGR channel order, 0-255 pixels minus the mean), not torchvision's RGB 0-1 normalised input.

Because of the first two the result cannot be exact; :func:`caffe2x.targets.torch.write` therefore runs the torchvision
architecture (reimplemented here in plain torch, torchvision itself is not needed) on a seeded input and
reports the measured logit difference against the numpy reference in its notes.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import as_tensor


#: torchvision ResNet constructor by blocks per stage
RESNET_LAYOUTS: dict[tuple[int, ...], str] = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101",
                                              (3, 8, 36, 3): "resnet152"}
_BLOCK_CONV = re.compile(r"res(?P<stage>[2-5])(?P<block>[a-z][0-9]*)_branch(?P<branch>1|2a|2b|2c)\Z")
_BRANCH_KEYS = {"2a": ("conv1", "bn1"), "2b": ("conv2", "bn2"), "2c": ("conv3", "bn3"),
                "1": ("downsample.0", "downsample.1")}
TORCHVISION_BN_EPS = 1e-5


class _TVBottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: the stride sits on the 3x3 ``conv2``)."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                        nn.BatchNorm2d(planes * 4)) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class TorchvisionResNet(nn.Module):
    """The architecture of ``torchvision.models.resnet50/101/152`` in plain torch (same submodule names,
    hence the same state_dict keys), used to check the profile's keys and measure its logits."""

    def __init__(self, layers: Sequence[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
            stride = 1 if i == 1 else 2
            stage = []
            for b in range(blocks):
                stage.append(_TVBottleneck(inplanes, planes, stride if b == 0 else 1, downsample=b == 0))
                inplanes = planes * 4
            self.add_module(f"layer{i}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _not_resnet(why: str) -> Caffe2xError:
    return Caffe2xError(f"profile 'torchvision' needs KaimingHe's ResNet-50/101/152 layer naming: {why}")


@dataclass
class TorchvisionProfile:
    """The profile's state_dict, with what is needed to describe and measure it."""

    state: dict[str, torch.Tensor]
    layers: tuple[int, ...]
    num_classes: int
    logits: str                      # value name of the InnerProduct output (the logits)

    @property
    def constructor(self) -> str:
        return RESNET_LAYOUTS[self.layers]

    def module(self) -> TorchvisionResNet:
        with torch.device("meta"):
            net = TorchvisionResNet(self.layers, self.num_classes)
        net.load_state_dict(self.state, strict=True, assign=True)
        return net.eval()

    def measure(self, graph: Graph, seed: int = 0) -> str:
        """Run the torchvision architecture and the numpy reference on one seeded image-like input
        (uniform 0-255 pixels minus the ImageNet BGR means, Caffe's preprocessing); describe the gap."""
        from caffe2x.graph.reference import run

        x = measure_input(graph, seed)
        ref = np.asarray(run(graph, x, outputs=self.logits), dtype=np.float64)
        with torch.no_grad():
            got = self.module()(torch.from_numpy(x)).double().numpy()
        diff = float(np.abs(got - ref).max())
        rel = diff / max(float(np.abs(ref).max()), 1e-30)
        top1 = "agrees" if int(got.argmax()) == int(ref.argmax()) else "differs"
        return (f"torchvision profile is not exact (v1.5 strides the 3x3 conv, pool1 pads 1 and rounds down): "
                f"on a seeded input, logits differ from Caffe's by max |d| = {diff:.4g} "
                f"(relative {rel:.3g}); top-1 class {top1}")


def measure_input(graph: Graph, seed: int = 0) -> np.ndarray:
    """The seeded input :meth:`TorchvisionProfile.measure` runs (and ``validate --against --profile
    torchvision`` re-runs): one image of uniform 0-255 pixels minus the ImageNet BGR means."""
    shape = (1, *graph.inputs[next(iter(graph.inputs))][1:])
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, shape) - np.array([103.94, 116.78, 123.68]).reshape(1, 3, 1, 1)).astype(np.float32)


def _affine_after(conv: Node, graph: Graph, consumers: Mapping[str, list[Node]]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torchvision BatchNorm (weight, bias, running_mean, running_var) equal to what follows ``conv``
    in Caffe: its bias, an optional BatchNorm, an optional per-channel Scale. All steps are exact:
    ``((z + cb) - m) / sqrt(v + eps) * g + b == (z - (m - cb)) / sqrt((v + eps - 1e-5) + 1e-5) * g + b``."""
    channels = int(conv.attrs["num_output"])
    cb = graph.param(conv, "bias").astype(np.float64) if "bias" in conv.params else np.zeros(channels)
    mean, var = np.zeros(channels), np.full(channels, 1.0 - TORCHVISION_BN_EPS)
    gamma, beta = np.ones(channels), np.zeros(channels)
    value = conv.outputs[0]
    nxt = consumers.get(value, [])
    if len(nxt) == 1 and nxt[0].op == "BatchNorm":
        bn = nxt[0]
        mean = graph.param(bn, "running_mean").astype(np.float64)
        var = graph.param(bn, "running_var").astype(np.float64) + float(bn.attrs["eps"]) - TORCHVISION_BN_EPS
        value = bn.outputs[0]
        nxt = consumers.get(value, [])
    if len(nxt) == 1 and nxt[0].op == "Scale":
        sc = nxt[0]
        if sc.attrs["axis"] != 1 or graph.param(sc, "weight").shape != (channels,):
            raise _not_resnet(f"Scale layer {sc.name!r} is not per-channel")
        gamma = graph.param(sc, "weight").astype(np.float64)
        beta = graph.param(sc, "bias").astype(np.float64) if "bias" in sc.params else beta
    return gamma, beta, mean - cb, np.maximum(var, 0.0)


def torchvision_profile(graph: Graph) -> TorchvisionProfile:
    """Map a KaimingHe ResNet-50/101/152 graph onto torchvision's state_dict keys (see module docstring).

    Recognition is by KaimingHe's layer names (``conv1``, ``res<stage><block>_branch<1|2a|2b|2c>``, one
    InnerProduct) and then checked against torchvision's exact key/shape table; anything else raises
    :class:`Caffe2xError` naming what does not fit.
    """
    consumers: dict[str, list[Node]] = {}
    for n in graph.nodes:
        for v in dict.fromkeys(n.inputs):
            consumers.setdefault(v, []).append(n)
    convs = [n for n in graph.nodes if n.op == "Convolution"]
    if not any(n.name == "conv1" for n in convs):
        raise _not_resnet("no Convolution layer named 'conv1'")
    stages: dict[int, dict[str, dict[str, Node]]] = {}
    for n in convs:
        if n.name == "conv1":
            continue
        m = _BLOCK_CONV.match(n.name)
        if m is None:
            raise _not_resnet(f"convolution {n.name!r} is not named res<stage><block>_branch<1|2a|2b|2c>")
        stages.setdefault(int(m["stage"]), {}).setdefault(m["block"], {})[m["branch"]] = n
    if sorted(stages) != [2, 3, 4, 5]:
        raise _not_resnet(f"found stages {sorted(stages)}, expected res2..res5")
    layers = tuple(len(stages[s]) for s in (2, 3, 4, 5))
    if layers not in RESNET_LAYOUTS:
        raise _not_resnet(f"blocks per stage {list(layers)} are none of ResNet-50/101/152's "
                          f"{', '.join(str(list(k)) for k in RESNET_LAYOUTS)}")
    ips = [n for n in graph.nodes if n.op == "InnerProduct"]
    if len(ips) != 1:
        raise _not_resnet(f"expected one InnerProduct (fc1000), found {len(ips)}")
    fc = ips[0]
    pools = [n for n in graph.nodes if n.op == "Pooling"]
    if len(pools) != 2 or pools[0].attrs["method"] != "max" or pools[1].attrs["method"] != "ave":
        raise _not_resnet("expected a MAX pool1 and an AVE pool5")

    tensors: dict[str, np.ndarray] = {}

    def put_conv_bn(conv: Node, conv_key: str, bn_key: str) -> None:
        tensors[f"{conv_key}.weight"] = graph.param(conv, "weight")
        w, b, m, v = _affine_after(conv, graph, consumers)
        tensors.update({f"{bn_key}.weight": w, f"{bn_key}.bias": b, f"{bn_key}.running_mean": m,
                        f"{bn_key}.running_var": v})

    put_conv_bn(graph.node("conv1"), "conv1", "bn1")
    for i, stage in enumerate((2, 3, 4, 5), start=1):
        for b, (block, branches) in enumerate(stages[stage].items()):
            expected = {"1", "2a", "2b", "2c"} if b == 0 else {"2a", "2b", "2c"}
            if set(branches) != expected:
                raise _not_resnet(f"block res{stage}{block} has branches {sorted(branches)}, "
                                  f"expected {sorted(expected)}")
            for branch, conv in branches.items():
                conv_key, bn_key = _BRANCH_KEYS[branch]
                put_conv_bn(conv, f"layer{i}.{b}.{conv_key}", f"layer{i}.{b}.{bn_key}")
    tensors["fc.weight"] = graph.param(fc, "weight")
    if "bias" in fc.params:
        tensors["fc.bias"] = graph.param(fc, "bias")
    num_classes = int(fc.attrs["num_output"])

    with torch.device("meta"):  # only the key/shape table is needed
        reference = TorchvisionResNet(layers, num_classes).state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, ref in reference.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
            continue
        if key not in tensors:
            raise _not_resnet(f"nothing in the graph gives torchvision's {key!r}")
        arr = np.asarray(tensors[key], dtype=np.float32)
        if tuple(arr.shape) != tuple(ref.shape):
            raise _not_resnet(f"{key} would have shape {list(arr.shape)}, torchvision's is {list(ref.shape)}")
        state[key] = as_tensor(arr, share=True)
    return TorchvisionProfile(state, layers, num_classes, fc.outputs[0])

