"""The torch target: ``caffe2x.to_torch`` computes what Caffe computes, the ``.pt`` file loads where it
says it does (the module, the generated model code, torchvision's ResNet), and naming is consistent."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe.reader import graph_from_text
from caffe2x.errors import Caffe2xError, UnsupportedLayerError
from caffe2x.graph.ir import Graph, Node
from caffe2x.graph.numeric import max_rel_error, round_to
from caffe2x.graph.transforms import fold_bn
from caffe2x.targets.torch import module_names, to_module, torchvision_profile

TOL = 1e-5


def seeded(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def net_input(graph: Graph, seed: int = 0, batch: int | None = None, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {name: seeded((batch or shape[0], *shape[1:]), seed + i, scale)
            for i, (name, shape) in enumerate(graph.inputs.items())}


def torch_run(module: nn.Module, x: dict[str, np.ndarray]) -> dict[str, np.ndarray] | np.ndarray:
    with torch.no_grad():
        out = module({k: torch.from_numpy(v) for k, v in x.items()})
    if isinstance(out, dict):
        return {k: v.double().numpy() for k, v in out.items()}
    return out.double().numpy()


def load_code(path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import generated model code with caffe2x made unimportable, proving it stands alone."""
    monkeypatch.setitem(sys.modules, "caffe2x", None)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def resnet50(resnet50_graph_session: Graph) -> Graph:
    """The synthetic ResNet-50 read from its caffemodel (conftest, once per session); a private copy."""
    return resnet50_graph_session.copy()


@pytest.fixture(scope="module")
def resnet50_x() -> np.ndarray:
    """A seeded image scaled like mean-subtracted BGR pixels."""
    return seeded((1, 3, 224, 224), seed=7, scale=50.0)


@pytest.fixture(scope="module")
def resnet50_ref(resnet50: Graph, resnet50_x: np.ndarray) -> dict[str, np.ndarray]:
    return caffe2x.run(resnet50, resnet50_x, outputs=["fc1000", "prob"])


@pytest.fixture(scope="module")
def resnet50_torch(resnet50: Graph, resnet50_x: np.ndarray) -> dict[str, np.ndarray]:
    return torch_run(to_module(resnet50, ["fc1000", "prob"]), {"data": resnet50_x})


# --------------------------------------------------------------------------- numbers match Caffe's
@pytest.mark.parametrize("name", ["tiny", *fixtures.ZOO])
def test_every_blob_of_every_zoo_net_matches_the_reference(name: str) -> None:
    graph = fixtures.graph(name)
    blobs = list(graph.blobs)
    x = net_input(graph, seed=3)
    ref = caffe2x.run(graph, x, outputs=blobs)
    got = torch_run(caffe2x.to_torch(graph, outputs=blobs), x)
    errors = {b: max_rel_error(got[b], ref[b]) for b in blobs}
    assert max(errors.values()) <= TOL, errors


def test_resnet50_logits_and_prob_match_the_reference(resnet50_torch: dict[str, np.ndarray],
                                                      resnet50_ref: dict[str, np.ndarray]) -> None:
    assert max_rel_error(resnet50_torch["fc1000"], resnet50_ref["fc1000"]) <= TOL
    assert max_rel_error(resnet50_torch["prob"], resnet50_ref["prob"]) <= TOL
    assert (resnet50_torch["prob"].argmax(1) == resnet50_ref["prob"].argmax(1)).all()


def test_fold_bn_module_matches_the_unfolded_module(resnet50: Graph, resnet50_x: np.ndarray,
                                                    resnet50_torch: dict[str, np.ndarray]) -> None:
    folded = fold_bn(resnet50)
    assert not any(n.op in ("BatchNorm", "Scale") for n in folded.nodes)
    got = torch_run(to_module(folded, "fc1000"), {"data": resnet50_x})
    assert max_rel_error(got, resnet50_torch["fc1000"]) <= TOL


def test_pooling_follows_the_input_size_like_a_reshaped_caffe_net() -> None:
    text = fixtures.ZOO["pooling_ceil_and_pads"]
    module = caffe2x.to_torch(graph_from_text(text))              # built for 13x12
    other = graph_from_text(text, input_shape=(2, 3, 16, 9))      # Caffe reshaped to 16x9
    x = net_input(other, seed=5)
    ref = caffe2x.run(other, x)
    got = torch_run(module, x)
    assert got.keys() == ref.keys()
    assert all(max_rel_error(got[k], ref[k]) <= TOL for k in ref)


# --------------------------------------------------------------------------- module behaviour
def test_module_is_returned_in_eval_mode_with_graph_tensor_keys(resnet50: Graph) -> None:
    module = caffe2x.to_torch(resnet50)
    assert not module.training and not any(m.training for m in module.modules())
    state = module.state_dict()
    assert set(state) == set(resnet50.tensors)  # no num_batches_tracked or other extras
    for key, value in state.items():
        assert np.array_equal(value.numpy(), resnet50.tensors[key]), key


def test_outputs_select_caffe_blobs_with_in_place_blobs_giving_their_final_value() -> None:
    graph = fixtures.graph("tiny")
    x = net_input(graph)
    single = torch_run(to_module(graph, "res2a"), x)
    assert isinstance(single, np.ndarray) and single.min() >= 0  # res2a after its in-place ReLU
    assert max_rel_error(single, caffe2x.run(graph, x, "res2a")) <= TOL
    several = torch_run(to_module(graph, ["pool1", "prob"]), x)
    assert isinstance(several, dict) and list(several) == ["pool1", "prob"]
    with pytest.raises(Caffe2xError, match="nope"):
        to_module(graph, "nope")


MULTI_INPUT = """
input: "a" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
input: "b" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
layer { name: "conv" type: "Convolution" bottom: "a" top: "conv" convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "b" top: "sum" eltwise_param { coeff: 1 coeff: -3 } }
"""


def test_multi_input_net_takes_a_dict_keywords_or_positional_tensors() -> None:
    graph = graph_from_text(MULTI_INPUT)
    x = net_input(graph)
    ref = caffe2x.run(graph, x)
    module = caffe2x.to_torch(graph)
    a, b = torch.from_numpy(x["a"]), torch.from_numpy(x["b"])
    with torch.no_grad():
        for out in (module({"a": a, "b": b}), module(a=a, b=b), module(a, b), module(a, b=b)):
            assert max_rel_error(out.numpy(), ref) <= TOL
        with pytest.raises(Caffe2xError, match="'b'"):
            module(a)
        with pytest.raises(Caffe2xError, match="'c'"):
            module(a=a, b=b, c=b)


def test_jit_trace_and_torch_export_reproduce_the_tiny_net() -> None:
    module = caffe2x.to_torch(fixtures.graph("tiny"))
    x = torch.from_numpy(seeded((1, 3, 32, 32), seed=11))
    other_batch = torch.from_numpy(seeded((3, 3, 32, 32), seed=12))
    with torch.no_grad():
        expected = module(x)
        traced = torch.jit.trace(module, x)
        assert torch.equal(traced(x), expected)
        assert torch.allclose(traced(other_batch), module(other_batch), rtol=0, atol=1e-6)
    exported = torch.export.export(module, (x,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), expected, rtol=0, atol=1e-6)


def test_double_precision_module_matches_the_reference() -> None:
    graph = fixtures.graph("tiny")
    x = net_input(graph, seed=2)
    module = caffe2x.to_torch(graph).to("cpu").double()
    with torch.no_grad():
        out = module(torch.from_numpy(x["data"]).double())
    assert out.dtype == torch.float64
    assert max_rel_error(out.numpy(), caffe2x.run(graph, x)) <= TOL


def test_unsupported_op_names_the_layer() -> None:
    graph = fixtures.graph("tiny")
    graph.nodes.append(Node("up", "FancyAttention", [graph.outputs[0]], ["up"]))  # no builder for it
    with pytest.raises(UnsupportedLayerError, match="'up'"):
        to_module(graph)


# --------------------------------------------------------------------------- the .pt file
def test_pt_file_carries_the_weights_and_loads_strictly_with_weights_only(resnet50: Graph, tmp_path: Path,
                                                                          resnet50_x: np.ndarray,
                                                                          resnet50_ref: dict[str, np.ndarray]) -> None:
    path = tmp_path / "resnet50.pt"
    caffe2x.save(resnet50, path)
    state = torch.load(path, weights_only=True)
    assert set(state) == set(resnet50.tensors)
    assert all(v.dtype == torch.float32 for v in state.values())
    # a module built from zeroed tensors computes the Caffe net once the file is loaded into it
    blank = to_module(resnet50.copy({k: np.zeros_like(v) for k, v in resnet50.tensors.items()}), "fc1000")
    blank.load_state_dict(state, strict=True)
    assert max_rel_error(torch_run(blank, {"data": resnet50_x}), resnet50_ref["fc1000"]) <= TOL


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reduced_dtype_casts_every_tensor_and_still_loads(dtype: str, tmp_path: Path) -> None:
    graph = fixtures.graph("tiny")
    path = tmp_path / "tiny.pth"
    notes = caffe2x.save(graph, path, dtype=dtype)
    state = torch.load(path, weights_only=True)
    assert {str(v.dtype) for v in state.values()} == {f"torch.{dtype}"}
    for key, value in state.items():
        assert np.array_equal(value.float().numpy(), round_to(graph.tensors[key], dtype)), key
    module = caffe2x.to_torch(graph)
    module.load_state_dict(state, strict=True)
    assert any(dtype in n for n in notes)


LAYER_NAMES = """
input: "data" input_shape { dim: 1 dim: 2 dim: 6 dim: 6 }
layer { name: "inception_3a/1x1" type: "Convolution" bottom: "data" top: "inception_3a/1x1" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "a.b" type: "Convolution" bottom: "inception_3a/1x1" top: "a.b" convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "a_b" type: "ReLU" bottom: "a.b" top: "relu" }
layer { name: "forward" type: "Scale" bottom: "relu" top: "relu" scale_param { bias_term: true } }
layer { name: "3x3" type: "Convolution" bottom: "relu" top: "class" convolution_param { num_output: 2 kernel_size: 3 } }
"""


def test_layer_names_are_sanitised_the_same_in_module_file_and_code(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    graph = graph_from_text(LAYER_NAMES)
    graph.name = 'odd """ net \\'  # must not break the generated docstring
    names = module_names(graph)
    assert names == {"inception_3a/1x1": "inception_3a_1x1", "a.b": "a_b_2", "a_b": "a_b",
                     "forward": "forward_", "3x3": "layer_3x3"}
    path = tmp_path / "odd-net.pt"
    notes = caffe2x.save(graph, path, emit_code=True)
    state = torch.load(path, weights_only=True)
    module = caffe2x.to_torch(graph)
    assert list(state) == list(module.state_dict())
    assert "a_b_2.weight" in state and "forward_.bias" in state
    assert any("renamed" in n for n in notes)
    net = load_code(tmp_path / "odd_net_model.py", monkeypatch).Net()  # stem made importable
    net.load_state_dict(state, strict=True)
    x = net_input(graph)
    with torch.no_grad():
        assert max_rel_error(net(torch.from_numpy(x["data"])).numpy(), caffe2x.run(graph, x)) <= TOL


@pytest.mark.parametrize("name", ["tiny", *fixtures.ZOO])
def test_emitted_model_code_loads_the_pt_and_matches_the_reference(name: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    graph = fixtures.graph(name)
    path = tmp_path / f"{name}.pt"
    caffe2x.save(graph, path, emit_code=True)
    code = tmp_path / f"{name}_model.py"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, code.name])  # no temporaries left
    source = code.read_text()
    assert "caffe2x" not in re.sub(r'""".*?"""', "", source, count=1, flags=re.S)  # only the docstring names it
    net = load_code(code, monkeypatch).Net()
    assert not net.training
    net.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = net_input(graph, seed=4)
    ref = caffe2x.run(graph, x)
    with torch.no_grad():
        out = net(*(torch.from_numpy(v) for v in x.values()))
    if isinstance(ref, dict):
        assert list(out) == list(ref)
        assert all(max_rel_error(out[k].numpy(), ref[k]) <= TOL for k in ref)
    else:
        assert max_rel_error(out.numpy(), ref) <= TOL


# --------------------------------------------------------------------------- torchvision profile
class TVBottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck's structure (v1.5: stride on the 3x3 conv2), or with
    ``caffe_v1`` the stride on conv1 as in KaimingHe's Caffe net."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool, caffe_v1: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride if caffe_v1 else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1 if caffe_v1 else stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes * 4)) if downsample else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TVResNet(nn.Module):
    """torchvision.models.resnet.ResNet's structure (Bottleneck, expansion 4), written for this test
    since torchvision is not installed. ``caffe_v1`` swaps in Caffe's pool1 (pad 0, ceil) and strides."""

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), num_classes: int = 1000, caffe_v1: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True) if caffe_v1 else nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
            stage = []
            for b in range(blocks):
                stage.append(TVBottleneck(inplanes, planes, 2 if (b == 0 and i > 1) else 1, b == 0, caffe_v1))
                inplanes = planes * 4
            setattr(self, f"layer{i}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tv_net(state: dict[str, torch.Tensor], caffe_v1: bool = False) -> TVResNet:
    """A TVResNet holding ``state``, loaded strictly (built on the meta device: no wasted init)."""
    with torch.device("meta"):
        net = TVResNet(caffe_v1=caffe_v1)
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval()


def torchvision_resnet50_table() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in TVResNet().state_dict().items()}


@pytest.fixture(scope="module")
def tv_file(resnet50: Graph, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("tv") / "resnet50_tv.pt"
    return path, caffe2x.save(resnet50, path, profile="torchvision")


def test_torchvision_profile_keys_and_shapes_are_torchvision_resnet50s(tv_file: tuple[Path, list[str]]) -> None:
    table = torchvision_resnet50_table()
    assert len(table) == 320
    state = torch.load(tv_file[0], weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == table
    tv_net(state)


def test_torchvision_profile_merges_bn_and_scale_and_folds_the_conv1_bias(resnet50: Graph,
                                                                          tv_file: tuple[Path, list[str]]) -> None:
    state = torch.load(tv_file[0], weights_only=True)
    t = resnet50.tensors
    close = dict(rtol=1e-6, atol=1e-6)
    assert np.allclose(state["bn1.running_mean"].numpy(), t["bn_conv1.running_mean"] - t["conv1.bias"], **close)
    assert np.allclose(state["bn1.weight"].numpy(), t["scale_conv1.weight"], **close)
    assert np.allclose(state["layer2.0.downsample.1.bias"].numpy(), t["scale3a_branch1.bias"], **close)
    assert np.array_equal(state["layer4.2.conv3.weight"].numpy(), t["res5c_branch2c.weight"])
    assert np.allclose(state["layer3.5.bn2.running_var"].numpy(), t["bn4f_branch2b.running_var"], rtol=1e-6, atol=1e-9)
    assert state["bn1.num_batches_tracked"].dtype == torch.long


def test_torchvision_profile_is_exact_under_caffes_v1_architecture(tv_file: tuple[Path, list[str]],
                                                                   resnet50_x: np.ndarray,
                                                                   resnet50_ref: dict[str, np.ndarray]) -> None:
    # Only the architecture differs: the same weights in a torchvision-keyed net with Caffe's strides and
    # pool1 reproduce Caffe's logits, so every approximation lies in the documented differences.
    net = tv_net(torch.load(tv_file[0], weights_only=True), caffe_v1=True)
    with torch.no_grad():
        logits = net(torch.from_numpy(resnet50_x)).numpy()
    assert max_rel_error(logits, resnet50_ref["fc1000"]) <= TOL


def test_torchvision_profile_reports_the_measured_logit_difference(tv_file: tuple[Path, list[str]],
                                                                   resnet50_x: np.ndarray,
                                                                   resnet50_ref: dict[str, np.ndarray]) -> None:
    notes = " ".join(tv_file[1])
    m = re.search(r"max \|d\| = ([0-9.e+-]+) \(relative ([0-9.e+-]+)\)", notes)
    assert m is not None, notes
    assert "resnet50" in notes
    reported = float(m.group(2))
    # the real v1.5 architecture changes the logits: by a clear but bounded amount on our input too
    net = tv_net(torch.load(tv_file[0], weights_only=True))
    with torch.no_grad():
        ours = max_rel_error(net(torch.from_numpy(resnet50_x)).numpy(), resnet50_ref["fc1000"])
    assert 1e-3 < reported < 10 and 1e-3 < ours < 10


def test_torchvision_profile_of_a_folded_graph_computes_the_same_net(resnet50: Graph,
                                                                     tv_file: tuple[Path, list[str]]) -> None:
    folded = torchvision_profile(fold_bn(resnet50)).state  # no BatchNorm left: conv biases become bn shifts
    unfolded = torch.load(tv_file[0], weights_only=True)
    assert folded.keys() == unfolded.keys()
    x = torch.from_numpy(seeded((1, 3, 96, 96), seed=8, scale=50.0))  # any size shows the nets are equal
    outs = []
    for state in (folded, unfolded):
        with torch.no_grad():
            outs.append(tv_net(state)(x).numpy())
    assert max_rel_error(outs[0], outs[1]) <= TOL


@pytest.mark.parametrize("name", ["tiny", "eltwise"])
def test_torchvision_profile_rejects_a_net_that_is_not_a_kaiming_resnet(name: str, tmp_path: Path) -> None:
    with pytest.raises(Caffe2xError, match="torchvision"):
        caffe2x.save(fixtures.graph(name), tmp_path / "x.pt", profile="torchvision")
    assert list(tmp_path.iterdir()) == []


def test_torchvision_profile_and_emit_code_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Caffe2xError, match="emit_code"):
        caffe2x.save(fixtures.graph("tiny"), tmp_path / "x.pt", profile="torchvision", emit_code=True)


def test_runner_computes_with_one_thread_and_gives_the_callers_setting_back(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Validation runs one photo at a time; torch's spin-waiting threads made that 5x slower on a busy
    2-core machine, so a runner computes with RUN_THREADS (1) and restores the caller's count."""
    from caffe2x.targets import get

    graph = caffe2x.load(*tiny_files)
    path = tmp_path / "tiny.pt"
    caffe2x.save(graph, path)
    runner = get("torch").load(path, graph)
    seen = []
    module = runner.module(["fc10"])
    module.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = np.zeros(graph.inputs["data"], np.float32)
        runner.run(x, ["fc10"])
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
