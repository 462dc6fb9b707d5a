"""ONNX target: onnxruntime reproduces the numpy reference, and the file is a plain, checkable ONNX model."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import caffe2x  # noqa: E402
from caffe2x import fixtures  # noqa: E402
from caffe2x.caffe.reader import graph_from_text  # noqa: E402
from caffe2x.errors import UnsupportedLayerError  # noqa: E402
from caffe2x.graph.numeric import max_rel_error  # noqa: E402
from caffe2x.graph.transforms import rounded  # noqa: E402
from caffe2x.targets.onnx import run_onnx, to_onnx  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def r50(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Synthetic ResNet-50, a batch of two, the reference logits/probabilities and the written .onnx."""
    graph = fixtures.graph("resnet50")
    x = (np.random.default_rng(1).standard_normal((2, 3, 224, 224)) * 50).astype(np.float32)
    ref = caffe2x.run(graph, x, outputs=["fc1000", "prob"])
    path = tmp_path_factory.mktemp("onnx") / "resnet50.onnx"
    notes = caffe2x.save(graph, path)
    return {"graph": graph, "x": x, "ref": ref, "path": path, "notes": notes}


def _all_blobs_and_values(graph) -> list[str]:  # type: ignore[no-untyped-def]
    """Every Caffe blob (its final value) and every in-place intermediate value (``conv1@bn_conv1``)."""
    return list(graph.blobs) + [v for v in graph.shapes if v not in graph.blobs]


def _input_for(graph, batch: int, seed: int = 0) -> np.ndarray:  # type: ignore[no-untyped-def]
    (shape,) = graph.inputs.values()
    return np.random.default_rng(seed).standard_normal((batch, *shape[1:])).astype(np.float32)


# --------------------------------------------------------------------------- numbers
def test_resnet50_onnxruntime_logits_match_reference_at_batch_two(r50: dict) -> None:
    model = to_onnx(r50["graph"], outputs=["fc1000", "prob"])
    got = run_onnx(model, r50["x"])
    for name in ("fc1000", "prob"):
        assert got[name].shape == (2, 1000)
        err = max_rel_error(got[name], r50["ref"][name])
        assert err <= TOL, f"{name}: max relative error {err:.2e}"


def test_resnet50_written_file_runs_to_reference_probabilities(r50: dict) -> None:
    got = run_onnx(r50["path"], r50["x"])
    assert list(got) == ["prob"]
    assert max_rel_error(got["prob"], r50["ref"]["prob"]) <= TOL
    assert r50["notes"] == []


@pytest.mark.parametrize("name", ["tiny", *fixtures.ZOO])
def test_every_blob_of_small_nets_matches_reference(name: str) -> None:
    graph = fixtures.graph(name)
    names = _all_blobs_and_values(graph)
    model = to_onnx(graph, outputs=names)
    onnx.checker.check_model(model, full_check=True)
    x = _input_for(graph, batch=3)  # differs from the prototxt's batch: the batch dimension is dynamic
    ref = caffe2x.run(graph, x, outputs=names)
    got = run_onnx(model, x)
    # a blob rewritten in place from the graph input ('data' in bn_scale_activations) cannot share the
    # input's name: it comes out under its value name ('data@scale')
    expected = {b if b not in graph.inputs else graph.value(b): b for b in names}
    assert set(got) == set(expected)
    for out, blob in expected.items():
        assert got[out].shape == ref[blob].shape, blob
        err = max_rel_error(got[out], ref[blob])
        assert err <= TOL, f"{name}/{blob}: max relative error {err:.2e}"


AXES_NET = """
input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
layer { name: "s_hw" type: "Scale" bottom: "data" top: "s_hw" scale_param { axis: 2 num_axes: 2 bias_term: true } }
layer { name: "s_rest" type: "Scale" bottom: "data" top: "s_rest" scale_param { axis: 1 num_axes: -1 } }
layer { name: "s_last" type: "Scale" bottom: "data" top: "s_last" scale_param { axis: -1 num_axes: 1 bias_term: true } }
layer { name: "sum3" type: "Eltwise" bottom: "s_hw" bottom: "s_rest" bottom: "s_last" top: "sum3"
  eltwise_param { coeff: 1 coeff: -1 coeff: 0.25 } }
layer { name: "prod3" type: "Eltwise" bottom: "sum3" bottom: "data" bottom: "s_hw" top: "prod3" eltwise_param { operation: PROD } }
layer { name: "max3" type: "Eltwise" bottom: "sum3" bottom: "data" bottom: "s_hw" top: "max3" eltwise_param { operation: MAX } }
layer { name: "ip2" type: "InnerProduct" bottom: "sum3" top: "ip2" inner_product_param { num_output: 6 axis: 2 } }
layer { name: "bn3d" type: "BatchNorm" bottom: "ip2" top: "ip2" }
layer { name: "sm2" type: "Softmax" bottom: "ip2" top: "sm2" softmax_param { axis: 2 } }
layer { name: "flat23" type: "Flatten" bottom: "sum3" top: "flat23" flatten_param { axis: 2 } }
layer { name: "flat01" type: "Flatten" bottom: "sum3" top: "flat01" flatten_param { axis: 0 end_axis: 1 } }
layer { name: "cat_w" type: "Concat" bottom: "sum3" bottom: "data" top: "cat_w" concat_param { axis: 3 } }
"""


def test_scale_innerproduct_flatten_softmax_concat_honour_non_default_axes() -> None:
    graph = graph_from_text(AXES_NET, seed=3)
    names = list(graph.blobs)
    x = _input_for(graph, batch=3, seed=4)
    ref = caffe2x.run(graph, x, outputs=names)
    got = run_onnx(to_onnx(graph, outputs=names), x)
    assert got["flat01"].shape == (9, 4, 5)
    for blob in names:
        assert max_rel_error(got[blob], ref[blob]) <= TOL, blob


# --------------------------------------------------------------------------- the file
def test_written_file_passes_checker_and_has_caffe_names(r50: dict) -> None:
    path, graph = r50["path"], r50["graph"]
    onnx.checker.check_model(str(path))
    model = onnx.load(str(path))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [t.name for t in model.graph.initializer] == list(graph.tensors)
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer)
    (inp,) = model.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "data"
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [3, 224, 224]
    assert [o.name for o in model.graph.output] == ["prob"]
    node_names = {n.name for n in model.graph.node}
    assert {n.name for n in graph.nodes} <= node_names


def test_pooling_uses_explicit_pads_not_onnx_ceil_mode() -> None:
    model = to_onnx(fixtures.graph("pooling_ceil_and_pads"))
    pools = [n for n in model.graph.node if n.op_type in ("MaxPool", "AveragePool")]
    assert len([n for n in pools if not n.name.endswith("/divisor_share")]) == 6  # AVE at a run-time size: + divisor
    for n in pools:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs.get("ceil_mode", 0) == 0 and "pads" not in attrs, n.name


def test_conversion_imports_neither_torch_nor_tensorflow(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        import caffe2x
        from caffe2x import fixtures
        caffe2x.save(fixtures.graph("tiny"), {str(tmp_path / "tiny.onnx")!r})
        print("onnx" in sys.modules, sorted(m for m in ("torch", "tensorflow") if m in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == "True []"
    assert (tmp_path / "tiny.onnx").stat().st_size > 0


# --------------------------------------------------------------------------- reduced precision
@pytest.mark.parametrize("dtype, onnx_type", [("float16", "FLOAT16"), ("bfloat16", "BFLOAT16")])
def test_reduced_dtype_file_stores_that_type_and_computes_the_rounded_net(dtype: str, onnx_type: str,
                                                                           tmp_path: Path) -> None:
    graph = fixtures.graph("tiny")
    path = tmp_path / f"tiny-{dtype}.onnx"
    notes = caffe2x.save(graph, path, dtype=dtype)
    assert any("cast to float32" in n for n in notes)
    onnx.checker.check_model(str(path))
    model = onnx.load(str(path))
    assert [t.name for t in model.graph.initializer] == list(graph.tensors)
    assert {t.data_type for t in model.graph.initializer} == {getattr(onnx.TensorProto, onnx_type)}
    x = _input_for(graph, batch=2)
    got = run_onnx(path, x)["prob"]
    # exactly the net with rounded weights, computed in float32
    assert max_rel_error(got, caffe2x.run(rounded(graph, dtype), x, outputs="prob")) <= TOL


def test_resnet50_float16_logits_stay_close_to_float32(r50: dict) -> None:
    model = to_onnx(r50["graph"], outputs="fc1000", dtype="float16")
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    logits = run_onnx(model, r50["x"])["fc1000"]
    ref = r50["ref"]["fc1000"]
    assert max_rel_error(logits, ref) <= 1e-2  # measured 1.5e-3
    assert (logits.argmax(axis=1) == ref.argmax(axis=1)).all()


# --------------------------------------------------------------------------- errors and naming
def test_unsupported_op_raises_naming_the_layer(tmp_path: Path) -> None:
    graph = fixtures.graph("conv_innerproduct")
    graph.node("relu").op = "FancyAttention"  # no converter is registered for it
    with pytest.raises(UnsupportedLayerError, match=r"'FancyAttention'.*'relu'"):
        to_onnx(graph)
    with pytest.raises(UnsupportedLayerError, match="relu"):
        caffe2x.save(graph, tmp_path / "broken.onnx")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_inplace_blob_output_is_named_by_its_caffe_blob() -> None:
    # conv_innerproduct: 'conv' is rewritten in place by 'relu', 'fc1' by 'drop'
    graph = fixtures.graph("conv_innerproduct")
    model = to_onnx(graph, outputs=["conv", "fc1", "prob"])
    assert [o.name for o in model.graph.output] == ["conv", "fc1", "prob"]
    x = _input_for(graph, batch=2)
    got = run_onnx(model, x)
    ref = caffe2x.run(graph, x, outputs=["conv", "fc1"])  # final values, as pycaffe's net.blobs shows
    assert ref["conv"].min() == 0 and max_rel_error(got["conv"], ref["conv"]) <= TOL
    assert max_rel_error(got["fc1"], ref["fc1"]) <= TOL


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", ["tiny", "ssd_mobilenet_style"])
def test_written_file_is_exactly_the_model_to_onnx_returns(name: str, dtype: str, tmp_path: Path) -> None:
    """The writer fills the initializers only after the size check; the file parses to the very message
    to_onnx builds, and is as long as protobuf says that message is."""
    import onnx

    graph = fixtures.graph(name)
    path = tmp_path / f"{name}.onnx"
    caffe2x.save(graph, path, dtype=dtype)
    expected = to_onnx(graph, dtype=dtype)
    assert onnx.load(str(path)) == expected
    assert path.stat().st_size == expected.ByteSize()


def test_the_size_check_runs_before_any_weight_is_copied_into_the_message() -> None:
    from caffe2x.targets.onnx.model import build

    graph = fixtures.graph("tiny")
    model, payloads = build(graph)
    assert all(not t.raw_data for t in model.graph.initializer)  # the message holds no weight
    assert payloads.keys() == graph.tensors.keys()
    assert all(np.shares_memory(payloads[k], graph.tensors[k]) for k in graph.tensors)


def test_runner_session_gets_the_asked_values_as_outputs_from_the_file_itself(tmp_path: Path) -> None:
    """The session gets the values asked for as extra graph outputs; the file is left as it was."""
    from caffe2x.targets import get

    graph = fixtures.graph("tiny")
    path = tmp_path / "tiny.onnx"
    caffe2x.save(graph, path)
    before = path.read_bytes()
    runner = get("onnx").load(path, graph)
    x = np.random.default_rng(0).standard_normal(graph.inputs["data"]).astype(np.float32)
    got = runner.run(x, ["fc10", "pool1"])
    for name in ("fc10", "pool1"):
        assert max_rel_error(got[name], caffe2x.run(graph, x, outputs=name)) <= 1e-5, name
    assert max_rel_error(runner.run(x, ["prob"])["prob"], caffe2x.run(graph, x, outputs="prob")) <= 1e-5
    assert path.read_bytes() == before


def test_runner_runs_a_model_whose_weights_live_in_a_side_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A file from another exporter may keep its weights as external data: they are read from the side
    file, relative to the model's folder, both for a session from the file and for one with outputs
    added."""
    import onnx

    from caffe2x.targets import get

    graph = fixtures.graph("tiny")
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "tiny.onnx"
    onnx.save_model(to_onnx(graph), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="tiny.weights", size_threshold=0)
    assert (tmp_path / "m" / "tiny.weights").is_file()
    monkeypatch.chdir(tmp_path)  # side files resolve against the model's folder, not the working directory
    x = np.random.default_rng(0).standard_normal(graph.inputs["data"]).astype(np.float32)
    runner = get("onnx").load(path, graph)
    for value in ("fc10", "prob"):  # an added output; the file's own output (a session from the file)
        got = runner.run(x, [value])[value]
        assert max_rel_error(got, caffe2x.run(graph, x, outputs=value)) <= 1e-5, value


def test_the_validation_runner_exposes_a_masked_poolings_float_mask(tmp_path: Path) -> None:
    """validate asks the loaded file for a masked pooling's mask (per layer, or to check near-tie flips):
    the runner gives the float mask (the ``Cast`` after ``MaxPool``), not the int64 ``MaxPool`` indices
    that share the layer's node name (onnxruntime refused the model with those declared float)."""
    from caffe2x.targets import get

    graph = graph_from_text("""input: "data" input_shape { dim: 1 dim: 2 dim: 6 dim: 8 }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "pool_mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "pool" bottom: "pool_mask" top: "up" upsample_param { scale: 2 } }
""")
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 8)).astype(np.float32)
    path = tmp_path / "net.onnx"
    caffe2x.save(graph, path)
    mask, up = graph.value("pool_mask"), graph.value("up")
    got = get("onnx").load(path, graph).run(x, [up, mask])
    ref = caffe2x.run(graph, x, outputs=["pool_mask", "up"])
    np.testing.assert_array_equal(got[mask], ref["pool_mask"])
    np.testing.assert_array_equal(got[up], ref["up"])
