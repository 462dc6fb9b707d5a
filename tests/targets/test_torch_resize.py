"""The torch module's Interp, nearest Upsample and unpooling (Upsample with a MAX pooling's mask) follow
the input's size at run time by Caffe's reshape rules (PriorBox's image size and steps too), in eager mode, through ``torch.fx``,
``torch.jit.script`` and ``torch.jit.trace`` (traced once, at the size the net was read at), and in the
``--emit-code`` module, exactly as the numpy reference at each size; where a parameter fixes the size
(Interp's height/width, Upsample's upsample_h/w) it stays fixed; a size the layer cannot take is an
error naming it."""
from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import caffe2x
from caffe2x.caffe.reader import graph_from_text
from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.graph.numeric import max_rel_error
from caffe2x.targets.torch.sizes import InputSizeError
from tests.helpers.resize_net import RESIZE_OUTPUTS, RESIZE_PROTOTXT, RESIZE_SIZES
from tests.helpers.torch_nets import seeded

TOL = 1e-5


def _emitted(graph: Graph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """The ``--emit-code`` Net of ``graph`` with its weights, loaded with caffe2x made unimportable."""
    caffe2x.save(graph, tmp_path / "net.pt", to="torch", emit_code=True)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "caffe2x", None)
        spec = importlib.util.spec_from_file_location("net_model", tmp_path / "net_model.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    net = module.Net()
    net.load_state_dict(torch.load(tmp_path / "net.pt", weights_only=True))
    return net


def _every_mode(net: torch.nn.Module, x0: torch.Tensor) -> dict[str, Callable]:
    """Eager, FX, TorchScript and jit.trace (at ``x0``, with no TracerWarning: nothing baked in)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(net, x0, strict=False)
    return {"eager": net, "fx": torch.fx.symbolic_trace(net), "script": torch.jit.script(net), "trace": traced}


def _check_at_sizes(graph: Graph, outputs: list[str], sizes: list[tuple[int, ...]], make, runs,  # type: ignore[no-untyped-def]
                    exact: bool = False) -> None:
    for shape in sizes:
        x = make(shape)
        want = caffe2x.run(graph, x, outputs)
        for mode, run in runs.items():
            with torch.no_grad():
                got = run(torch.from_numpy(x))
            got = got if isinstance(got, dict) else {outputs[0]: got}
            for blob in outputs:
                g, w = got[blob].numpy(), want[blob]
                assert g.shape == w.shape, (mode, shape, blob, g.shape, w.shape)
                assert np.array_equal(g, w) if exact else max_rel_error(g, w) <= TOL, (mode, shape, blob)


def test_interp_and_priorbox_follow_the_size_in_every_mode_and_the_emitted_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interp by zoom, shrink with a crop by pad_beg/pad_end, a second input's size and explicit
    height/width (fixed), a Reshape 0/-1 after them, PriorBox with its image size from the data input
    (derived and given steps): at 20x18 (read), 17x23 with batch 2, 9x11 and 32x31."""
    graph = graph_from_text(RESIZE_PROTOTXT, seed=1)
    x0 = torch.from_numpy(seeded(RESIZE_SIZES[0]))
    runs = _every_mode(caffe2x.to_torch(graph, RESIZE_OUTPUTS), x0)
    _check_at_sizes(graph, RESIZE_OUTPUTS, RESIZE_SIZES, lambda s: seeded(s, seed=s[2]), runs)
    emitted = _emitted(graph, tmp_path, monkeypatch)
    assert {"fixed", "prior"} <= set(graph.outputs)
    _check_at_sizes(graph, graph.outputs, RESIZE_SIZES, lambda s: seeded(s, seed=s[2]), _every_mode(emitted, x0))
    fixed = caffe2x.run(graph, seeded((1, 3, 32, 31)), "fixed")
    assert fixed.shape == (1, 6, 7, 9)  # height/width given: the size stays


def test_interp_that_crops_away_its_input_names_the_layer() -> None:
    text = ('input: "data" input_shape { dim: 1 dim: 2 dim: 9 dim: 9 }\n'
            'layer { name: "cut" type: "Interp" bottom: "data" top: "cut" interp_param { zoom_factor: 2 pad_beg: -2 '
            'pad_end: -2 } }')
    net = caffe2x.to_torch(graph_from_text(text))
    x = torch.zeros(1, 2, 4, 9)
    for run in (net, torch.fx.symbolic_trace(net)):
        with pytest.raises(InputSizeError, match=r"^layer 'cut' \(Interp\): cropping 2 and 2 leaves no input of 4x9$"):
            run(x)
    with pytest.raises(Exception, match="cut"):
        torch.jit.script(net)(x)
    with pytest.raises(Caffe2xError, match="'cut'"):
        caffe2x.run(graph_from_text(text), x.numpy())


def _unpool_net(shape: tuple[int, ...], kernel: int, stride: int, upsample: str) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'input: "data" input_shape {{ {dims} }}\n'
            f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "pool_mask" '
            f'pooling_param {{ pool: MAX kernel_size: {kernel} stride: {stride} }} }}\n'
            f'layer {{ name: "scale" type: "Power" bottom: "pool" top: "scaled" power_param {{ scale: 3 shift: 1 }} }}\n'
            f'layer {{ name: "up" type: "Upsample" bottom: "scaled" bottom: "pool_mask" top: "up" '
            f'upsample_param {{ {upsample} }} }}\n'
            f'layer {{ name: "near" type: "Upsample" bottom: "scaled" top: "near" upsample_param {{ scale: 3 }} }}')


def _ties(shape: tuple[int, ...]) -> np.ndarray:
    """Values in {0, 1, 2}: windows with ties, where the first maximum is the one recorded."""
    return np.random.default_rng(sum(shape)).choice(np.array([0, 1, 2], np.float32), shape)


UNPOOLS = {  # (read shape, kernel, stride, upsample_param, other sizes: odd and even, batch)
    "scale_2": ((2, 3, 10, 14), 2, 2, "scale: 2", [(1, 3, 7, 9), (3, 3, 12, 13), (1, 3, 5, 5)]),
    "scale_3": ((1, 2, 9, 12), 3, 3, "scale_h: 3 scale_w: 3", [(1, 2, 10, 10), (2, 2, 13, 16), (1, 2, 3, 4)]),
    "pad_out_odd_size": ((1, 2, 9, 11), 2, 2, "scale: 2 pad_out_h: true pad_out_w: true",
                         [(1, 2, 13, 15), (2, 2, 5, 7), (1, 2, 21, 3)]),
    "overlapping_fixed_plane": ((2, 3, 11, 13), 3, 2, "upsample_h: 11 upsample_w: 13",
                                [(1, 3, 10, 12), (3, 3, 9, 13), (1, 3, 11, 11)]),
}


@pytest.mark.parametrize("case", list(UNPOOLS))
def test_unpooling_and_nearest_upsample_follow_the_size_in_every_mode(case: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The mask's pooling, the unpooled plane (H * scale - pad_out at run time, upsample_h x w fixed)
    and the nearest Upsample: bit-exact at the read size and three others, ties included."""
    shape, kernel, stride, upsample, others = UNPOOLS[case]
    graph = graph_from_text(_unpool_net(shape, kernel, stride, upsample))
    outputs = ["pool_mask", "up", "near"]
    x0 = torch.from_numpy(_ties(shape))
    _check_at_sizes(graph, outputs, [shape, *others], _ties, _every_mode(caffe2x.to_torch(graph, outputs), x0),
                    exact=True)
    emitted = _emitted(graph, tmp_path, monkeypatch)
    _check_at_sizes(graph, ["up", "near"], [shape, *others], _ties, _every_mode(emitted, x0), exact=True)
    if "upsample_h" in upsample:  # the plane is fixed whatever the input
        assert caffe2x.run(graph, _ties(others[0]), "up").shape[2:] == (11, 13)


def test_an_unpooling_mask_outside_its_plane_names_the_layer() -> None:
    """pad_out at an even size: the last row's mask indices fall past the ``H * 2 - 1`` rows."""
    graph = graph_from_text(_unpool_net((1, 2, 9, 9), 2, 2, "scale: 2 pad_out_h: true"))
    x = _ties((1, 2, 10, 10))
    with pytest.raises(Caffe2xError, match=r"layer 'up' \(Upsample\): mask index \d+ is outside the 9x10 output"):
        caffe2x.run(graph, x, "up")
    net = caffe2x.to_torch(graph, "up")
    for run in (net, torch.fx.symbolic_trace(net)):
        with pytest.raises(InputSizeError, match=r"^layer 'up' \(Upsample\): mask index \d+ is outside the 9x10 output$"):
            run(torch.from_numpy(x))
    with pytest.raises(Exception, match="layer up"):
        torch.jit.script(net)(torch.from_numpy(x))


@pytest.mark.slow  # two exports with dynamic N, H, W: about 10 s on 2 shared cores
def test_torch_export_with_dynamic_batch_and_hw_follows_interp_reshape_priorbox_and_unpooling() -> None:
    """Exported once (at batch 2), the resize net and an unpooling net run at every size: Reshape takes
    Caffe's rule and the value checks step aside instead of specialising or guarding on data."""
    from torch.export import Dim

    dims = {"data": {0: Dim("N"), 2: Dim("H", min=8, max=512), 3: Dim("W", min=8, max=512)}}
    graph = graph_from_text(RESIZE_PROTOTXT, seed=1)
    exported = torch.export.export(caffe2x.to_torch(graph, RESIZE_OUTPUTS), (torch.from_numpy(seeded((2, 3, 20, 18))),),
                                   dynamic_shapes=dims)
    _check_at_sizes(graph, RESIZE_OUTPUTS, RESIZE_SIZES, lambda s: seeded(s, seed=s[2]), {"export": exported.module()})
    shape, kernel, stride, upsample, others = UNPOOLS["pad_out_odd_size"]
    graph = graph_from_text(_unpool_net(shape, kernel, stride, upsample))
    exported = torch.export.export(caffe2x.to_torch(graph, ["pool_mask", "up"]), (torch.from_numpy(_ties((2, 2, 9, 11))),),
                                   dynamic_shapes=dims)
    _check_at_sizes(graph, ["pool_mask", "up"], [(1, 2, 13, 15), (2, 2, 9, 11), (3, 2, 21, 9)], _ties,
                    {"export": exported.module()}, exact=True)


def test_a_graph_stored_without_the_rules_keeps_the_geometry_it_was_read_at() -> None:
    """Interp and Upsample nodes from before their rule was kept: the torch module computes what the
    reference does at the read size (the reference refuses other sizes for them)."""
    text = ('input: "data" input_shape { dim: 1 dim: 2 dim: 11 dim: 9 }\n'
            'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask" '
            'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
            'layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up" '
            'upsample_param { scale: 2 pad_out_h: true pad_out_w: true } }\n'
            'layer { name: "shrink" type: "Interp" bottom: "up" top: "shrink" '
            'interp_param { shrink_factor: 2 pad_beg: -1 pad_end: -2 } }')
    graph = graph_from_text(text, seed=1)
    for node in graph.nodes:
        node.attrs.pop("rule", None)
    x = seeded((1, 2, 11, 9))
    want = caffe2x.run(graph, x, ["up", "shrink"])
    net = caffe2x.to_torch(graph, ["up", "shrink"])
    for run in (net, torch.fx.symbolic_trace(net), torch.jit.script(net)):
        got = run(torch.from_numpy(x))
        assert np.array_equal(got["up"].numpy(), want["up"])
        assert got["shrink"].shape == want["shrink"].shape == (1, 2, 4, 3)
        assert max_rel_error(got["shrink"].numpy(), want["shrink"]) <= TOL
    with pytest.raises(Caffe2xError, match="was resolved for an input shaped"):
        caffe2x.run(graph, seeded((1, 2, 13, 9)), "up")
