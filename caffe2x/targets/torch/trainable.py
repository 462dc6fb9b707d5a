"""``to_torch(graph, trainable=True)``: the converted module made fit for training.

What changes against the default (inference-exact) module:

* BatchNorm layers become :class:`TrainableBatchNorm`: in ``train()`` mode they normalise with the batch's
  statistics and update the running ones, ``running = maf * running + (1 - maf) * batch`` (unbiased batch
  variance), i.e. torch momentum ``1 - moving_average_fraction`` (Caffe's default 0.999 -> 0.001). That is
  Caffe's own update once its stored factor has saturated (``factor = 1 / (1 - maf)``, 999.98 for the
  synthetic ResNet-50); KaimingHe's released ResNets store factor 1, for which Caffe's very first update
  would weigh the batch about one half instead. In ``eval()`` mode they compute exactly what the default
  module computes (Caffe's numbers). A layer marked ``frozen`` (``caffe2x.finetune.torch.prepare``) keeps
  the stored statistics even in ``train()`` mode.
* Every parameter requires grad (Dropout already drops in ``train()`` mode and is the identity in eval).

State_dict keys and values are the same as the default module's, so ``.pt`` files load into either.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from caffe2x.graph.ir import Graph
from caffe2x.targets.torch.model import CaffeNet, node_module_names
from caffe2x.targets.torch.modules import CaffeBatchNorm

__all__ = ["TrainableBatchNorm", "DEFAULT_MOVING_AVERAGE_FRACTION", "make_trainable"]

#: Caffe's default BatchNormParameter.moving_average_fraction
DEFAULT_MOVING_AVERAGE_FRACTION = 0.999


class TrainableBatchNorm(CaffeBatchNorm):
    """Caffe's BatchNorm that learns: batch statistics in ``train()`` mode (unless ``frozen``), the stored
    ones otherwise, with the same buffers (and keys) as :class:`CaffeBatchNorm`."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 1 - DEFAULT_MOVING_AVERAGE_FRACTION) -> None:
        super().__init__(num_features, eps, momentum)
        self.frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # both branches spelled out (no super().forward): torch.jit.script compiles this method alone
        if self.training and not self.frozen:
            return F.batch_norm(x, self.running_mean, self.running_var, None, None, True, self.momentum, self.eps)
        return F.batch_norm(x, self.running_mean, self.running_var, None, None, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", momentum={self.momentum:g}" + (", frozen" if self.frozen else "")


def make_trainable(net: CaffeNet, graph: Graph) -> CaffeNet:
    """Swap every BatchNorm of ``net`` (built from ``graph``) for a :class:`TrainableBatchNorm` sharing its
    statistics, and make every parameter require grad. Returns ``net`` (mode unchanged)."""
    for node, name in zip(graph.nodes, node_module_names(graph)):
        if node.op != "BatchNorm":
            continue
        old = getattr(net, name)
        maf = float(node.attrs.get("moving_average_fraction", DEFAULT_MOVING_AVERAGE_FRACTION))
        with torch.device("meta"):
            new = TrainableBatchNorm(old.running_mean.numel(), old.eps, 1.0 - maf)
        new.running_mean, new.running_var = old.running_mean, old.running_var
        new.train(old.training)
        setattr(net, name, new)
    return net.requires_grad_(True)
