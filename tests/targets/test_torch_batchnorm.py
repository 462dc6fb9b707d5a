"""The torch target's BatchNorm is torch's own ``nn.BatchNorm2d``: torch's tools (SyncBatchNorm conversion,
conv-BN fusion, ``isinstance`` checks) see every converted BatchNorm, and the numbers, the state_dict keys
and the fine-tuning behaviour stay Caffe's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe.reader import graph_from_text
from caffe2x.graph.numeric import max_rel_error
from caffe2x.targets.torch import CaffeBatchNorm, TrainableBatchNorm

TOL = 1e-5

CONV_BN_SCALE = """
input: "data" input_shape { dim: 2 dim: 3 dim: 11 dim: 9 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { eps: 0.001 } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
"""


def _x(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.from_numpy((np.random.default_rng(seed).standard_normal(shape) * 3).astype(np.float32))


@pytest.mark.parametrize("trainable", [False, True])
def test_every_resnet50_batchnorm_is_a_torch_batchnorm_that_syncbatchnorm_converts(trainable: bool) -> None:
    net = caffe2x.to_torch(fixtures.graph("resnet50"), trainable=trainable)
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 53 and all(isinstance(m, nn.BatchNorm2d) for m in bns)
    assert all(isinstance(m, TrainableBatchNorm if trainable else CaffeBatchNorm) for m in bns)
    assert all(m.momentum == pytest.approx(1 - 0.999) and m.affine is False for m in bns)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()) == 53


def test_state_dict_keys_stay_the_graph_tensor_keys_without_a_batch_count() -> None:
    graph = fixtures.graph("resnet50")
    for trainable in (False, True):
        keys = set(caffe2x.to_torch(graph, trainable=trainable).state_dict())
        assert not any(k.endswith("num_batches_tracked") for k in keys)
        assert {"bn_conv1.running_mean", "bn_conv1.running_var", "scale_conv1.weight"} <= keys
        assert len(keys) == len(graph.tensors)


def test_caffe_eps_and_stored_statistics_match_the_reference_in_train_mode_too() -> None:
    graph = graph_from_text(CONV_BN_SCALE, seed=3)
    x = _x((2, 3, 11, 9))
    ref = caffe2x.run(graph, x.numpy())
    net = caffe2x.to_torch(graph)
    assert net.bn.eps == pytest.approx(1e-3)
    with torch.no_grad():
        assert max_rel_error(net(x).numpy(), ref) <= TOL
        net.train()   # Caffe's use_global_stats: the default module never uses batch statistics
        assert max_rel_error(net(x).numpy(), ref) <= TOL


def test_fuse_conv_bn_eval_folds_a_converted_batchnorm_exactly() -> None:
    graph = graph_from_text(CONV_BN_SCALE, seed=4)
    x = _x((2, 3, 11, 9), seed=1)
    net = caffe2x.to_torch(graph)
    fused = fuse_conv_bn_eval(net.conv, net.bn)
    with torch.no_grad():
        assert max_rel_error(net.scale(fused(x)).numpy(), caffe2x.run(graph, x.numpy())) <= TOL


def test_syncbatchnorm_converted_module_computes_the_same_in_eval() -> None:
    graph = graph_from_text(CONV_BN_SCALE, seed=5)
    x = _x((2, 3, 11, 9), seed=2)
    net = nn.SyncBatchNorm.convert_sync_batchnorm(caffe2x.to_torch(graph)).eval()
    assert isinstance(net.bn, nn.SyncBatchNorm) and net.bn.eps == pytest.approx(1e-3)
    with torch.no_grad():
        assert max_rel_error(net(x).numpy(), caffe2x.run(graph, x.numpy())) <= TOL


def test_trainable_batchnorm_learns_batch_statistics_unless_frozen() -> None:
    graph = graph_from_text(CONV_BN_SCALE, seed=6)
    net = caffe2x.to_torch(graph, trainable=True).train()
    x = _x((2, 3, 11, 9), seed=3)
    before = net.bn.running_mean.clone()
    net.bn.frozen = True
    net(x)
    assert torch.equal(net.bn.running_mean, before)
    net.bn.frozen = False
    net(x)
    batch_mean = net.conv(x).mean(dim=(0, 2, 3))
    expected = (1 - net.bn.momentum) * before + net.bn.momentum * batch_mean
    assert torch.allclose(net.bn.running_mean, expected, rtol=0, atol=1e-6)
    assert net.bn.num_batches_tracked is None
