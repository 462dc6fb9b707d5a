"""Fine-tuning in PyTorch: trainable conversions, head replacement, freezing by Caffe layer name."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import caffe2x
from caffe2x import Caffe2xError, fixtures
from caffe2x.finetune.torch import prepare
from caffe2x.targets.torch import TrainableBatchNorm


def tiny_batch(graph: caffe2x.Graph, n: int = 6, seed: int = 0) -> np.ndarray:
    shape = next(iter(graph.inputs.values()))
    return (np.random.default_rng(seed).standard_normal((n, *shape[1:])) * 50).astype(np.float32)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_trainable_module_in_eval_mode_matches_the_numpy_reference(resnet50_graph, image_batch) -> None:
    for graph, x in ((fixtures.graph("tiny"), tiny_batch(fixtures.graph("tiny"))), (resnet50_graph, image_batch[:1])):
        blob = graph.blob_name(graph.logits()[0])
        module = caffe2x.to_torch(graph, outputs=blob, trainable=True)
        assert not module.training and all(p.requires_grad for p in module.parameters())
        with torch.no_grad():
            got = module(torch.from_numpy(x)).numpy()
        assert rel_err(got, caffe2x.run(graph, x, outputs=blob)) <= 1e-5


def test_trainable_batchnorm_uses_batch_statistics_and_caffes_moving_average() -> None:
    graph = fixtures.graph("tiny")
    x = torch.from_numpy(tiny_batch(graph))
    default, trainable = caffe2x.to_torch(graph), caffe2x.to_torch(graph, trainable=True)
    bn = trainable.bn_conv1
    assert isinstance(bn, TrainableBatchNorm) and bn.momentum == pytest.approx(1 - 0.999)  # Caffe's default maf
    before = bn.running_mean.clone(), bn.running_var.clone()
    with torch.no_grad():
        conv = trainable.conv1(x)
        trainable.train()(x)
    mean, var = conv.mean(dim=(0, 2, 3)), conv.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_mean, 0.999 * before[0] + 0.001 * mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, 0.999 * before[1] + 0.001 * var, rtol=1e-5, atol=1e-5)
    # the default conversion stays inference-exact even in train(): stored statistics, nothing updated
    sd = {k: v.clone() for k, v in default.state_dict().items()}
    with torch.no_grad():
        torch.testing.assert_close(default.train()(x), default.eval()(x), rtol=0, atol=0)
    assert all(torch.equal(sd[k], v) for k, v in default.state_dict().items())


def prepared(freeze="up-to:res2a", **kwargs):  # type: ignore[no-untyped-def]
    graph = fixtures.graph("tiny")
    torch.manual_seed(0)
    return graph, prepare(caffe2x.to_torch(graph, trainable=True), num_classes=3, freeze=freeze, **kwargs)


def test_a_few_steps_lower_the_loss_and_touch_only_what_is_not_frozen() -> None:
    graph, module = prepared()
    x = torch.from_numpy(tiny_batch(graph, 12))
    y = torch.arange(12) % 3
    state = {k: v.clone() for k, v in module.state_dict().items()}
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=0.01)
    module.train()
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9 and losses[-1] == min(losses), losses
    frozen_prefixes = ("conv1.", "bn_conv1.", "scale_conv1.", "res2a_", "bn2a_", "scale2a_")
    after = module.state_dict()
    for key, value in after.items():
        if key.startswith(frozen_prefixes):
            assert torch.equal(value, state[key]), f"frozen {key} changed"   # bit for bit, BN stats included
        elif key.endswith(("weight", "running_mean", "running_var")):
            assert not torch.equal(value, state[key]), f"trainable {key} did not change"
    assert not any(p.requires_grad for n, p in module.named_parameters() if n.startswith(frozen_prefixes))
    assert module.bn_conv1.frozen and not module.bn3a_branch1.frozen


def test_head_is_replaced_and_softmax_kept_or_dropped() -> None:
    graph, logits = prepared(freeze=None)
    x = torch.from_numpy(tiny_batch(graph))
    out = logits.eval()(x)
    assert out.shape == (6, 3) and not torch.allclose(out.sum(1), torch.ones(6))
    assert logits.fc10.weight.std().item() == pytest.approx(0.01, rel=0.5) and not logits.fc10.bias.any()
    assert "prob" not in dict(logits.named_children()) and all(p.requires_grad for p in logits.parameters())
    _, probs = prepared(freeze="all-but-head", softmax=True)
    p = probs.eval()(x)
    torch.testing.assert_close(p.sum(1), torch.ones(6))
    assert [n for n, q in probs.named_parameters() if q.requires_grad] == ["fc10.weight", "fc10.bias"]
    _, listed = prepared(freeze=["conv1", "res3a_branch1"])
    assert [n for n, q in listed.named_parameters() if not q.requires_grad] == ["conv1.weight", "conv1.bias",
                                                                                 "res3a_branch1.weight"]


def test_unknown_layer_names_are_errors_listing_close_matches() -> None:
    graph = fixtures.graph("tiny")
    with pytest.raises(Caffe2xError, match=r"'res3b'.*close matches: res3a"):
        prepare(caffe2x.to_torch(graph, trainable=True), 3, freeze="up-to:res3b")
    with pytest.raises(Caffe2xError, match=r"'fc1000'.*close matches: fc10"):
        prepare(caffe2x.to_torch(graph, trainable=True), 3, head="fc1000")
    with pytest.raises(Caffe2xError, match="not an InnerProduct"):
        prepare(caffe2x.to_torch(graph, trainable=True), 3, head="conv1")
    with pytest.raises(Caffe2xError, match="includes the head"):
        prepare(caffe2x.to_torch(graph, trainable=True), 3, freeze=["fc10"])


def test_state_dict_export_reloads_into_a_fresh_prepared_module(tmp_path: Path) -> None:
    graph, module = prepared()
    x = torch.from_numpy(tiny_batch(graph))
    module.train()(x)                                 # move the trainable BatchNorm statistics
    torch.save(module.state_dict(), tmp_path / "ft.pt")
    fresh = prepare(caffe2x.to_torch(graph, trainable=True), num_classes=3, freeze="up-to:res2a")
    fresh.load_state_dict(torch.load(tmp_path / "ft.pt", weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), module.eval()(x), rtol=0, atol=0)
