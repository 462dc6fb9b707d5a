"""User-registered layers (caffe2x.register_layer and the ``caffe2x.layers`` entry-point group)."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import Caffe2xError, UnsupportedLayerError, plugins
from caffe2x.caffe import reader
from caffe2x.graph.ir import SHAPE_FUNCTIONS
from caffe2x.graph.reference import OPS as REFERENCE_OPS
from caffe2x.targets import families

HERE = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HERE))
import tests.helpers.scaled_tanh_plugin as scaled_tanh_plugin  # noqa: E402

NET = """
name: "fork_net"
input: "data"
input_shape { dim: 2 dim: 2 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "act" type: "ScaledTanh" bottom: "conv" top: "conv" power_param { scale: 1.7159 shift: 0.6667 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture()
def clean_registries(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Undo every registration a test makes (the registries are process-wide)."""
    saved = [(r, dict(r)) for r in (reader.LAYERS, SHAPE_FUNCTIONS, REFERENCE_OPS, *families._registries.values())]
    monkeypatch.setattr(families, "_pending", {})
    yield
    for registry, content in saved:
        registry.clear()
        registry.update(content)


def test_an_unregistered_fork_layer_names_layer_and_type(clean_registries) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsupportedLayerError, match="'ScaledTanh' in layer 'act'"):
        reader.graph_from_text(NET)


def test_a_registered_fork_layer_converts_and_validates_in_every_framework(clean_registries, tmp_path) -> None:  # type: ignore[no-untyped-def]
    scaled_tanh_plugin.register()
    graph = reader.graph_from_text(NET)
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    conv = caffe2x.run(graph, x, outputs="conv@conv")
    act = caffe2x.run(graph, x, outputs="conv")
    np.testing.assert_allclose(act, 1.7159 * np.tanh(0.6667 * conv), rtol=1e-6)
    model = tmp_path / "fork.safetensors"
    caffe2x.save(graph, model)
    report = caffe2x.validate(str(model), frameworks=["numpy", "torch", "keras", "onnx"])
    assert report.passed, report.table()
    assert {f.name for f in report.frameworks} >= {"torch", "keras", "onnx"}


def test_registering_a_torch_builder_does_not_import_torch() -> None:
    code = ("import sys; sys.path.insert(0, %r); import scaled_tanh_plugin, caffe2x; "
            "scaled_tanh_plugin.register(); assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules; "
            "import caffe2x.targets.torch as t; assert 'ScaledTanh' in t.OPS; print('ok')") % str(HERE)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr


def test_entry_points_are_read_when_a_layer_type_is_missing(clean_registries, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ep = EntryPoint(name="scaled-tanh", value="scaled_tanh_plugin:register", group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group=None: [ep] if group == plugins.ENTRY_POINT_GROUP else [])
    graph = reader.graph_from_text(NET)  # the reader's miss on 'ScaledTanh' loads the entry point
    assert [n.op for n in graph.nodes] == ["Convolution", "ScaledTanh", "InnerProduct", "Softmax"]


def test_a_broken_plugin_is_a_caffe2x_error_naming_it() -> None:
    def boom() -> None:
        raise ImportError("No module named 'mylayers'")

    with pytest.raises(Caffe2xError, match=r"layer plugin 'mine' \(mylayers:register\) failed to load: ImportError"):
        plugins.run_entry_point("mine", "mylayers:register", boom)


def test_registration_mistakes_are_clear_errors(clean_registries) -> None:  # type: ignore[no-untyped-def]
    read = scaled_tanh_plugin.read
    with pytest.raises(Caffe2xError, match="op 'Brand' is new, so it needs both shape= and reference="):
        caffe2x.register_layer("Brand", reader=read, shape=scaled_tanh_plugin.shape)
    with pytest.raises(Caffe2xError, match="layer type 'ReLU' is already registered; pass replace=True"):
        caffe2x.register_layer("ReLU", reader=read)
    with pytest.raises(Caffe2xError, match="torch= must be a function"):
        caffe2x.register_layer("Brand", reader=read, shape=scaled_tanh_plugin.shape,
                               reference=scaled_tanh_plugin.reference, torch="nope")
    # mapping a fork's type onto an op caffe2x already has needs only the reader
    caffe2x.register_layer("ReLU6Fork", op="ReLU",
                           reader=lambda layer, ins, blobs: reader.LayerSpec("ReLU", {"negative_slope": 0.0}))
    assert [n.op for n in reader.graph_from_text(NET.replace("ScaledTanh", "ReLU6Fork")).nodes][1] == "ReLU"


def test_a_registered_layer_can_be_read_as_several_plain_ops(clean_registries) -> None:  # type: ignore[no-untyped-def]
    """A fork layer Caffe computes with inner layers (here: global MAX and AVE pooling, concatenated)
    is read as a Composite: its parts become nodes '<layer>/<part>', the last one is the layer itself."""
    def read(layer, ins, blobs):  # type: ignore[no-untyped-def]
        pool = {"kernel": list(ins[0][2:]), "stride": [1, 1], "pad": [0, 0], "ceil": True, "global_pooling": True}
        return reader.Composite([
            reader.SubLayer("max", reader.LayerSpec("Pooling", {"method": "max", **pool}), [0]),
            reader.SubLayer("ave", reader.LayerSpec("Pooling", {"method": "ave", **pool}), [0]),
            reader.SubLayer("", reader.LayerSpec("Concat", {"axis": 1}), ["max", "ave"])])

    caffe2x.register_layer("MaxAvePool", reader=read, op="Concat")
    text = NET.replace('type: "ScaledTanh" bottom: "conv" top: "conv" power_param { scale: 1.7159 shift: 0.6667 }',
                       'type: "MaxAvePool" bottom: "conv" top: "pooled"').replace('bottom: "conv" top: "fc"',
                                                                                   'bottom: "pooled" top: "fc"')
    graph = reader.graph_from_text(text)
    assert [n.name for n in graph.nodes][1:4] == ["act/max", "act/ave", "act"]
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    conv, pooled = caffe2x.run(graph, x, outputs="conv"), caffe2x.run(graph, x, outputs="pooled")
    np.testing.assert_allclose(pooled[:, :, 0, 0], np.concatenate([conv.max(axis=(2, 3)), conv.mean(axis=(2, 3))], 1),
                               rtol=1e-5)
