"""The converted torch module is plain traceable tensor code: ``torch.fx.symbolic_trace``,
``torch.jit.script`` and ``torch.jit.trace`` take it (and the ``--emit-code`` module), a module traced at
one input size stays right at another, Caffe's ceil-mode pooling holds at every size, and a size the net
cannot take is an error naming the layer."""
from __future__ import annotations

import importlib.util
import inspect
import re
import sys
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe.reader import graph_from_text
from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.graph.numeric import max_rel_error
from caffe2x.targets.torch import CaffePooling
from caffe2x.targets.torch.sizes import InputSizeError
from tests.helpers.layer_nets import NETS
from tests.helpers.torch_nets import fcn_graph, reference_cases, seeded

TOL = 1e-5


@pytest.fixture(scope="module")
def fcn() -> Graph:
    return fcn_graph()


@pytest.fixture(scope="module")
def cases(fcn: Graph) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(input, reference output) at each size of :data:`SIZES`; the reference runs the same weights
    (the seeded graph read at that input size: checked equal) with Caffe's own shape rules."""
    return [(torch.from_numpy(x), ref) for x, ref in reference_cases(fcn)]


def assert_matches_at_every_size(run, cases) -> None:  # type: ignore[no-untyped-def]
    for x, ref in cases:
        with torch.no_grad():
            y = run(x)
        assert tuple(y.shape) == ref.shape
        assert max_rel_error(y.detach().numpy(), ref) <= TOL


def test_eager_module_follows_the_input_size_with_caffes_rounding(fcn: Graph, cases) -> None:  # type: ignore[no-untyped-def]
    assert_matches_at_every_size(caffe2x.to_torch(fcn), cases)


def test_forward_has_one_named_argument_per_net_input(fcn: Graph) -> None:
    net = caffe2x.to_torch(fcn)
    assert list(inspect.signature(net.forward).parameters) == ["data"]
    two = graph_from_text('input: "im-data" input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n'
                          'input: "class" input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n'
                          'layer { name: "s" type: "Eltwise" bottom: "im-data" bottom: "class" top: "s" }')
    net = caffe2x.to_torch(two)
    assert list(inspect.signature(net.forward).parameters) == ["im_data", "class_"]
    a, b = torch.ones(1, 2, 4, 4), torch.full((1, 2, 4, 4), 2.0)
    for y in (net(a, b), net({"im-data": a, "class": b}), net(im_data=a, class_=b), torch.jit.script(net)(a, b)):
        assert torch.equal(y, a + b)


def test_fx_symbolic_trace_keeps_every_size_right(fcn: Graph, cases) -> None:  # type: ignore[no-untyped-def]
    gm = torch.fx.symbolic_trace(caffe2x.to_torch(fcn))
    assert_matches_at_every_size(gm, cases)
    calls = [n.target.__name__ for n in gm.graph.nodes if n.op == "call_function" and hasattr(n.target, "__name__")]
    assert calls.count("check_min_size") == 4 and calls.count("check_crop") == 1  # the size checks stay nodes


def test_jit_script_runs_at_every_size(fcn: Graph, cases) -> None:  # type: ignore[no-untyped-def]
    assert_matches_at_every_size(torch.jit.script(caffe2x.to_torch(fcn)), cases)


def test_jit_trace_at_one_size_stays_right_at_others_without_tracer_warnings(fcn: Graph, cases) -> None:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(caffe2x.to_torch(fcn), cases[0][0])
    assert_matches_at_every_size(traced, cases)


def test_every_batch_size_matches_each_sample_alone(fcn: Graph) -> None:
    net = torch.jit.trace(caffe2x.to_torch(fcn), torch.from_numpy(seeded((1, 3, 23, 19))))
    x = seeded((3, 3, 17, 29), seed=4)
    ref = caffe2x.run(fcn_graph(17, 29, 3), x)
    with torch.no_grad():
        assert max_rel_error(net(torch.from_numpy(x)).numpy(), ref) <= TOL


@pytest.mark.parametrize(("method", "kernel", "stride", "pad", "ceil"), [
    ("max", 3, 2, 0, True), ("max", 3, 2, 1, True), ("max", 3, 2, 2, True), ("max", 2, 3, 0, True),
    ("max", 3, 3, 1, True), ("max", 5, 2, 4, True), ("max", 3, 2, 1, False), ("ave", 3, 2, 0, True),
    ("ave", 3, 2, 1, True), ("ave", 3, 2, 2, True), ("ave", 3, 3, 2, True), ("ave", 5, 3, 3, True),
    ("ave", 2, 2, 1, True), ("ave", 3, 1, 1, True), ("ave", 3, 2, 1, False),
])
def test_pooling_matches_caffes_rule_at_every_input_size(method: str, kernel: int, stride: int, pad: int,
                                                         ceil: bool) -> None:
    """Every size from the smallest the window takes to several strides beyond, one module (traced once)."""
    module = CaffePooling(method, (kernel, kernel), (stride, stride), (pad, pad), ceil, layer="p")
    mode = "" if ceil else " round_mode: FLOOR"
    text = (f'input: "x" input_shape {{ dim: 1 dim: 2 dim: 9 dim: 9 }}\n'
            f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "p" pooling_param {{ pool: {method.upper()} '
            f'kernel_size: {kernel} stride: {stride} pad: {pad}{mode} }} }}')
    traced = torch.jit.trace(module, torch.zeros(1, 2, 9, 9))
    smallest = module.min_size[0]
    for h in range(smallest, smallest + 4 * stride + 3):
        w = h + 1
        x = seeded((1, 2, h, w), seed=h)
        graph = graph_from_text(text, input_shape=(1, 2, h, w))
        ref = caffe2x.run(graph, x)
        finite = np.isfinite(ref)  # a MAX window wholly beyond the input (stride > kernel, no pad) is -inf
        for run in (module, traced):
            y = run(torch.from_numpy(x)).numpy()
            assert y.shape == ref.shape, (h, w)
            assert np.array_equal(y[~finite], ref[~finite]) and max_rel_error(y[finite], ref[finite]) <= TOL, (h, w)
    if smallest > 1:
        with pytest.raises(InputSizeError, match="layer 'p' takes an input of at least"):
            module(torch.zeros(1, 2, smallest - 1, smallest))
        with pytest.raises(Caffe2xError):  # and Caffe's shape rule refuses it too
            graph_from_text(text, input_shape=(1, 2, smallest - 1, smallest))


def test_a_size_resnet50_cannot_take_names_pool5() -> None:
    net = caffe2x.to_torch(fixtures.graph("resnet50"))
    with torch.no_grad(), pytest.raises(InputSizeError, match=r"^layer 'pool5' takes an input of at least 7x7, got 5x5$"):
        net(torch.zeros(1, 3, 160, 160))


CROP = ('input: "a" input_shape { dim: 1 dim: 2 dim: 8 dim: 8 }\ninput: "b" input_shape { dim: 1 dim: 2 dim: 6 dim: 6 }\n'
        'layer { name: "cut" type: "Crop" bottom: "a" bottom: "b" top: "c" crop_param { axis: 2 offset: 1 } }')


def test_a_crop_larger_than_its_input_names_the_layer_in_eager_fx_and_script() -> None:
    net = caffe2x.to_torch(graph_from_text(CROP))
    a, b = torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 6)
    for run in (net, torch.fx.symbolic_trace(net)):
        with pytest.raises(InputSizeError, match=r"layer 'cut': axis 2 of size 8 cannot be cropped to 8 from offset 1"):
            run(a, b)
    with pytest.raises(Exception, match="cut"):
        torch.jit.script(net)(a, b)


def _load(path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setitem(sys.modules, "caffe2x", None)  # the generated file stands alone
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_emitted_code_is_fx_traceable_scriptable_and_traceable_at_every_size(
        fcn: Graph, cases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    pt = tmp_path / "fcn.pt"
    caffe2x.save(fcn, pt, to="torch", emit_code=True)
    code = _load(tmp_path / "fcn_model.py", monkeypatch)
    net = code.Net()
    net.load_state_dict(torch.load(pt, weights_only=True))
    assert list(inspect.signature(net.forward).parameters) == ["data"]
    for run in (net, torch.fx.symbolic_trace(net), torch.jit.script(net), torch.jit.trace(net, cases[0][0])):
        assert_matches_at_every_size(run, cases)
    crop_pt = tmp_path / "crop.pt"
    caffe2x.save(graph_from_text(CROP), crop_pt, to="torch", emit_code=True)
    crop = _load(tmp_path / "crop_model.py", monkeypatch)
    assert issubclass(crop.InputSizeError, ValueError)
    with pytest.raises(crop.InputSizeError, match="layer 'cut': axis 2 of size 8 cannot be cropped to 8"):
        crop.Net()(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 6))


def test_resnet50_traces_and_scripts_with_torch_batchnorms_kept() -> None:
    net = caffe2x.to_torch(fixtures.graph("resnet50"))
    gm = torch.fx.symbolic_trace(net)
    assert sum(n.op == "call_module" for n in gm.graph.nodes) > 100
    scripted = torch.jit.script(net)
    assert "forward" in scripted.code


def _other_size(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One more sample, and for a 4-D blob an odd row and an even column more."""
    grown = (shape[0] + 1, *shape[1:])
    return (*grown[:2], grown[2] + 1, grown[3] + 2) if len(shape) == 4 else grown


@pytest.mark.parametrize("name", sorted(NETS))
def test_layer_family_nets_fx_trace_and_script_at_two_sizes(name: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every family's module and its ``--emit-code`` module, traced (FX) and scripted once at the size
    the net was read at, match the reference there and, where the net takes it, at another batch and
    map size."""
    net = NETS[name]
    graph = graph_from_text(net.text, seed=1)
    feeds = net.inputs(dict(graph.inputs))
    ref = caffe2x.run(graph, feeds)
    ref = ref if isinstance(ref, dict) else {graph.outputs[0]: ref}
    module = caffe2x.to_torch(graph, list(ref))
    runs = [module, torch.fx.symbolic_trace(module), torch.jit.script(module)]
    if list(ref) == graph.outputs:  # the emitted code computes the net's own outputs
        caffe2x.save(graph, tmp_path / "net.pt", to="torch", emit_code=True)
        emitted = _load(tmp_path / "net_model.py", monkeypatch).Net()
        emitted.load_state_dict(torch.load(tmp_path / "net.pt", weights_only=True))
        runs += [emitted, torch.fx.symbolic_trace(emitted), torch.jit.script(emitted)]
    cases = [(feeds, ref)]
    other = net.inputs({k: _other_size(tuple(s)) for k, s in graph.inputs.items()})
    try:
        other_ref = caffe2x.run(graph, other, list(ref))
    except Caffe2xError:  # a layer fixes this size (InnerProduct weights, explicit Reshape dims, ...)
        other_ref = None
    if other_ref is not None:
        cases.append((other, other_ref if isinstance(other_ref, dict) else {next(iter(ref)): other_ref}))
    for inputs, want_all in cases:
        args = [torch.from_numpy(inputs[k]) for k in graph.inputs]
        for run in runs:
            with torch.no_grad():
                out = run(*args)
            out = out if isinstance(out, dict) else {next(iter(ref)): out}
            for blob, want in want_all.items():
                got = out[blob].numpy()
                nan = np.isnan(want)  # a Log of a negative seeded value: NaN in the reference and here alike
                assert got.shape == want.shape and np.array_equal(np.isnan(got), nan), (name, blob, got.shape)
                assert max_rel_error(got[~nan], want[~nan]) <= TOL, (name, blob, got.shape)


RESHAPES = ('input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }\n'
            'layer { name: "flat" type: "Reshape" bottom: "data" top: "flat" reshape_param { shape { dim: 0 dim: -1 } } }\n'
            'layer { name: "split" type: "Reshape" bottom: "data" top: "split" '
            'reshape_param { shape { dim: 3 dim: 1 dim: -1 } axis: 1 num_axes: 1 } }\n')
FIXED_RESHAPE = ('input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }\n'
                 'layer { name: "fixed" type: "Reshape" bottom: "data" top: "fixed" reshape_param { shape { dim: 0 dim: 3 dim: 20 } } }')


def test_reshape_follows_caffes_rule_at_every_size_in_eager_fx_script_and_trace() -> None:
    """``dim: 0 dim: -1`` and an axis-1 split follow batch and map size (traced once at the read size);
    explicit dims that no longer hold the input are an error naming the layer."""
    graph = graph_from_text(RESHAPES, seed=1)
    outputs = ["flat", "split"]
    module = caffe2x.to_torch(graph, outputs)
    x0 = torch.from_numpy(seeded((2, 3, 4, 5)))
    runs = (module, torch.fx.symbolic_trace(module), torch.jit.script(module), torch.jit.trace(module, x0, strict=False))
    for shape in ((2, 3, 4, 5), (1, 3, 7, 5), (3, 3, 5, 8), (2, 3, 9, 11)):
        x = seeded(shape, seed=sum(shape))
        want = caffe2x.run(graph, x, outputs)
        for run in runs:
            got = run(torch.from_numpy(x))
            for blob in outputs:
                assert tuple(got[blob].shape) == want[blob].shape and np.array_equal(got[blob].numpy(), want[blob]), \
                    (shape, blob)
    graph = graph_from_text(FIXED_RESHAPE)
    fixed = caffe2x.to_torch(graph)
    assert tuple(fixed(torch.zeros(4, 3, 4, 5)).shape) == (4, 3, 20)  # the batch still follows the input
    with pytest.raises(Caffe2xError, match="layer 'fixed'"):
        caffe2x.run(graph, np.zeros((1, 3, 5, 5), np.float32))
    for run in (fixed, torch.fx.symbolic_trace(fixed)):
        with pytest.raises(InputSizeError, match=r"^layer 'fixed' \(Reshape\): an input shaped \[1, 3, 5, 5\] cannot be "
                                                 r"shaped \[0, 3, 20\] from axis 0$"):
            run(torch.zeros(1, 3, 5, 5))
    with pytest.raises(Exception, match="fixed"):
        torch.jit.script(fixed)(torch.zeros(1, 3, 5, 5))


@pytest.mark.slow
def test_resnet50_emitted_code_through_fx_script_and_trace_at_two_sizes(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``--emit-code`` ResNet-50, traced (jit) at 1x224x224, at batch 2 and at 201x199 (odd: pool5
    still sees 7x7, which its InnerProduct needs), eager, FX, TorchScript and jit.trace alike."""
    graph = fixtures.graph("resnet50")
    caffe2x.save(graph, tmp_path / "r50.pt", to="torch", emit_code=True)
    net = _load(tmp_path / "r50_model.py", monkeypatch).Net()
    net.load_state_dict(torch.load(tmp_path / "r50.pt", weights_only=True))
    xs = [seeded((1, 3, 224, 224), 30, 50.0), seeded((2, 3, 224, 224), 31, 50.0), seeded((1, 3, 201, 199), 32, 50.0)]
    cases = [(torch.from_numpy(x), caffe2x.run(graph, x)) for x in xs]
    gm = torch.fx.symbolic_trace(net)
    assert sum(n.op == "call_module" for n in gm.graph.nodes) > 100
    for run in (net, gm, torch.jit.script(net), torch.jit.trace(net, cases[0][0])):
        assert_matches_at_every_size(run, cases)


def _refused_everywhere(text: str, x: np.ndarray, message: str) -> None:
    """The reference and the module (eager, FX: ``message`` as the whole line; TorchScript: naming
    the layer) refuse ``x``."""
    graph = graph_from_text(text, seed=1)
    with pytest.raises(Caffe2xError, match=re.escape(message.split(":")[0])):
        caffe2x.run(graph, x)
    net = caffe2x.to_torch(graph)
    for run in (net, torch.fx.symbolic_trace(net)):
        with pytest.raises(InputSizeError, match="^" + re.escape(message) + "$"):
            run(torch.from_numpy(x))
    with pytest.raises(Exception, match=message.split("'")[1]):
        torch.jit.script(net)(torch.from_numpy(x))


def test_an_argmax_top_k_larger_than_its_axis_at_another_size_names_the_layer() -> None:
    text = ('input: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 5 }\n'
            'layer { name: "best3" type: "ArgMax" bottom: "data" top: "best3" argmax_param { axis: 1 top_k: 3 } }')
    _refused_everywhere(text, np.zeros((1, 2, 4, 5), np.float32),
                        "layer 'best3' (ArgMax): top_k 3 takes at least 3 values along axis 1, got 2")
    flat = text.replace("axis: 1 top_k: 3", "top_k: 30")
    _refused_everywhere(flat, np.zeros((1, 3, 2, 3), np.float32),
                        "layer 'best3' (ArgMax): top_k 30 takes at least 30 values per sample, got 18")


def test_an_embed_index_past_its_table_names_the_layer() -> None:
    text = ('input: "data" input_shape { dim: 2 dim: 3 }\n'
            'layer { name: "words" type: "Embed" bottom: "data" top: "words" embed_param { input_dim: 4 num_output: 2 } }')
    x = np.array([[0, 1, 2], [3, 5, 1]], np.float32)
    _refused_everywhere(text, x, "layer 'words' (Embed): input must hold integers in 0..3, got 5")
