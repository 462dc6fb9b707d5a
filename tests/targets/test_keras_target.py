"""The Keras target computes what Caffe computes, and every file it writes loads with Keras' own loaders.

Equivalence is measured against the numpy reference executor (Caffe's exact semantics) on seeded
inputs, as ``max|keras - reference| / max|reference|`` with Keras' NHWC outputs transposed back to NCHW.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import caffe2x  # noqa: E402
from caffe2x import fixtures  # noqa: E402
from caffe2x.caffe.reader import graph_from_text  # noqa: E402
from caffe2x.errors import Caffe2xError, UnsupportedLayerError  # noqa: E402
from caffe2x.graph.numeric import max_rel_error  # noqa: E402
from caffe2x.targets.keras import keras_name, to_model  # noqa: E402

TOL = 1e-5
#: input scale of a mean-subtracted BGR image, what the synthetic nets are calibrated for
INPUT_STD = 50.0


def _input(graph: caffe2x.Graph, seed: int = 0, std: float = INPUT_STD) -> np.ndarray:
    ((_, shape),) = graph.inputs.items()
    return (np.random.default_rng(seed).standard_normal(shape) * std).astype(np.float32)


def _nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def _nchw(y: object) -> np.ndarray:
    y = np.asarray(y)
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


def _output_blobs(graph: caffe2x.Graph) -> list[str]:
    inverse = {v: b for b, v in graph.blobs.items()}
    return [inverse.get(v, v) for v in graph.outputs]


def _keras_outputs(model: keras.Model, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    got = model(_nhwc(x), training=False)
    if not isinstance(got, (list, tuple)):
        got = [got]
    return {n: _nchw(y) for n, y in zip(names, got)}


def _scramble(model: keras.Model) -> None:
    """Overwrite every variable so a later load that silently does nothing is caught."""
    for v in model.weights:
        v.assign(np.full(v.shape, 0.5, dtype="float32"))


# --------------------------------------------------------------------------- ResNet-50, built once
R50_OUTPUTS = ["fc1000", "prob"]


#: module fixtures kept on one xdist worker (tests/conftest.py): each builds a ResNet-50 run
XDIST_SHARED_FIXTURES = ("r50",)


@pytest.fixture(scope="module")
def r50() -> dict:
    graph = fixtures.graph("resnet50")
    x = _input(graph)
    return {
        "graph": graph,
        "x": x,
        "ref": caffe2x.run(graph, x, outputs=R50_OUTPUTS),
        "model": to_model(graph, R50_OUTPUTS),
    }


def test_resnet50_keras_logits_match_numpy_reference(r50: dict) -> None:
    got = _keras_outputs(r50["model"], r50["x"], R50_OUTPUTS)
    for name in R50_OUTPUTS:
        assert got[name].shape == r50["ref"][name].shape
        assert max_rel_error(got[name], r50["ref"][name]) <= TOL, name


def test_resnet50_model_is_nhwc_and_named_after_caffe_layers(r50: dict) -> None:
    model = r50["model"]
    assert tuple(model.input.shape) == (None, 224, 224, 3)
    for caffe in ("conv1", "bn_conv1", "scale_conv1", "pool1", "res2a_branch1", "res5c", "fc1000", "prob"):
        model.get_layer(caffe)  # raises if missing
    assert not any(type(layer).__name__ == "Lambda" for layer in model.layers)
    bn = model.get_layer("bn_conv1")
    assert isinstance(bn, keras.layers.BatchNormalization)
    assert bn.epsilon == pytest.approx(1e-5)  # Caffe's eps, not Keras' 1e-3


def test_resnet50_h5_loads_with_keras_load_weights(r50: dict, tmp_path: Path) -> None:
    path = tmp_path / "resnet50.h5"
    caffe2x.save(r50["graph"], path)
    with h5py.File(path, "r") as f:
        layer_names = [n.decode() for n in f.attrs["layer_names"]]
        assert {"conv1", "bn_conv1", "scale_conv1", "fc1000"} <= set(layer_names)
        assert [n.decode() for n in f["conv1"].attrs["weight_names"]] == ["conv1/kernel", "conv1/bias"]
        assert f["conv1/conv1/kernel"].shape == (7, 7, 3, 64)
        assert f.attrs["backend"] in ("tensorflow", b"tensorflow")
    fresh = to_model(r50["graph"], R50_OUTPUTS)
    _scramble(fresh)
    scrambled = _keras_outputs(fresh, r50["x"], R50_OUTPUTS)
    assert max_rel_error(scrambled["fc1000"], r50["ref"]["fc1000"]) > 0.1
    fresh.load_weights(str(path))
    got = _keras_outputs(fresh, r50["x"], R50_OUTPUTS)
    assert max_rel_error(got["fc1000"], r50["ref"]["fc1000"]) <= TOL


def test_resnet50_full_model_h5_loads_with_load_model(r50: dict, tmp_path: Path) -> None:
    path = tmp_path / "resnet50-full.h5"
    caffe2x.save(r50["graph"], path, full_model=True)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert not any(type(layer).__name__ == "Lambda" for layer in loaded.layers)
    prob = _nchw(loaded(_nhwc(r50["x"]), training=False))
    assert max_rel_error(prob, r50["ref"]["prob"]) <= TOL
    logits = _nchw(keras.Model(loaded.input, loaded.get_layer("fc1000").output)(_nhwc(r50["x"])))
    assert max_rel_error(logits, r50["ref"]["fc1000"]) <= TOL


def test_keras_applications_profile_loads_into_resnet50_and_reports_measured_difference(
        r50: dict, tmp_path: Path) -> None:
    path = tmp_path / "resnet50-apps.h5"
    notes = caffe2x.save(r50["graph"], path, profile="keras-applications")
    app = keras.applications.ResNet50(weights=None, classifier_activation=None)
    app.load_weights(str(path))
    logits = np.asarray(app(_nhwc(r50["x"]), training=False))
    err = max_rel_error(logits, r50["ref"]["fc1000"])
    note = next(n for n in notes if "max relative error" in n)
    reported = float(re.search(r"by ([0-9.e+-]+) max relative error", note).group(1))
    # the note is a measurement of this very file (same seeded input scale), not a canned number
    assert reported == pytest.approx(err, rel=0.05, abs=1e-7)
    assert any("pool1" in n for n in notes)

    # every weight maps exactly: the whole difference is keras.applications' pool1 (pad 1 with zeros,
    # floor) vs Caffe's (no pad, ceil); give the Caffe net Keras' pool1 and the logits agree
    keras_pool1 = r50["graph"].copy()
    keras_pool1.node("pool1").attrs.update(pad=[1, 1], ceil=False)
    assert max_rel_error(logits, caffe2x.run(keras_pool1, r50["x"], outputs="fc1000")) <= TOL
    assert err > TOL


# --------------------------------------------------------------------------- every small net
@pytest.mark.parametrize("name", [*fixtures.ZOO, "tiny"])
def test_zoo_net_matches_numpy_reference(name: str) -> None:
    graph = fixtures.graph(name)
    x = _input(graph, std=1.0)
    names = _output_blobs(graph)
    ref = caffe2x.run(graph, x, outputs=names)
    got = _keras_outputs(to_model(graph, names), x, names)
    for n in names:
        assert got[n].shape == ref[n].shape, n
        assert max_rel_error(got[n], ref[n]) <= TOL, n


def test_max_pool_over_negative_values_never_sees_zero_padding() -> None:
    graph = fixtures.graph("maxpool_negative")
    x = _input(graph, std=1.0)
    ref = caffe2x.run(graph, x)
    assert ref.max() < 0  # all windows negative: zero padding would show up as 0
    got = _nchw(to_model(graph)(_nhwc(x)))
    assert got.max() < 0 and max_rel_error(got, ref) <= TOL


@pytest.mark.parametrize("name", ["tiny", "lrn", "maxpool_negative", "pooling_ceil_and_pads"])
def test_keras_native_file_round_trips(name: str, tmp_path: Path) -> None:
    graph = fixtures.graph(name)
    x = _input(graph, std=1.0)
    names = _output_blobs(graph)
    path = tmp_path / f"{name}.keras"
    caffe2x.save(graph, path)
    loaded = keras.models.load_model(path, safe_mode=True)
    got = _keras_outputs(loaded, x, names)
    ref = caffe2x.run(graph, x, outputs=names)
    for n in names:
        assert max_rel_error(got[n], ref[n]) <= TOL, n


def test_weights_h5_loads_by_name(tmp_path: Path) -> None:
    graph = fixtures.graph("tiny")
    x = _input(graph, std=1.0)
    path = tmp_path / "tiny.h5"
    caffe2x.save(graph, path)
    model = to_model(graph)
    _scramble(model)
    model.load_weights(str(path), by_name=True)
    assert max_rel_error(_nchw(model(_nhwc(x))), caffe2x.run(graph, x)) <= TOL


def test_dot_weights_h5_destination_gets_keras_native_weights(tmp_path: Path) -> None:
    graph = fixtures.graph("tiny")
    x = _input(graph, std=1.0)
    path = tmp_path / "tiny.weights.h5"  # Keras 3 reads this name with its native loader
    caffe2x.save(graph, path)
    model = to_model(graph)
    _scramble(model)
    model.load_weights(str(path))
    assert max_rel_error(_nchw(model(_nhwc(x))), caffe2x.run(graph, x)) <= TOL


def test_float16_h5_stores_half_precision_and_loads(tmp_path: Path) -> None:
    graph = fixtures.graph("tiny")
    x = _input(graph, std=1.0)
    path = tmp_path / "tiny16.h5"
    notes = caffe2x.save(graph, path, dtype="float16")
    with h5py.File(path, "r") as f:
        assert f["conv1/conv1/kernel"].dtype == np.float16
    assert any("float16" in n for n in notes)
    model = to_model(graph)
    _scramble(model)
    model.load_weights(str(path))
    err = max_rel_error(_nchw(model(_nhwc(x))), caffe2x.run(graph, x))
    assert err < 1e-2


def test_caffe_names_keras_rejects_are_sanitised_consistently(tmp_path: Path) -> None:
    text = textwrap.dedent("""
        input: "data/in" input_shape { dim: 1 dim: 2 dim: 6 dim: 6 }
        layer { name: "conv1/7x7 s2" type: "Convolution" bottom: "data/in" top: "c1"
          convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
        layer { name: "conv1:7x7 s2" type: "ReLU" bottom: "c1" top: "r1" }
        layer { name: "fc/out" type: "InnerProduct" bottom: "r1" top: "out" inner_product_param { num_output: 4 } }
    """)
    graph = graph_from_text(text)
    model = to_model(graph)
    assert keras_name("conv1/7x7 s2") == "conv1_7x7_s2"
    names = {layer.name for layer in model.layers}
    # both Caffe names sanitise to the same string: the later layer gets a numbered suffix
    assert {"data_in", "conv1_7x7_s2", "conv1_7x7_s2_2", "fc_out"} <= names
    assert isinstance(model.get_layer("conv1_7x7_s2"), keras.layers.Conv2D)
    assert isinstance(model.get_layer("conv1_7x7_s2_2"), keras.layers.ReLU)
    x = _input(graph, std=1.0)
    assert max_rel_error(np.asarray(model.predict(_nhwc(x), verbose=0)), caffe2x.run(graph, x)) <= TOL
    path = tmp_path / "odd.h5"
    caffe2x.save(graph, path)
    fresh = to_model(graph)
    _scramble(fresh)
    fresh.load_weights(str(path))
    assert max_rel_error(np.asarray(fresh(_nhwc(x))), caffe2x.run(graph, x)) <= TOL


def test_unknown_op_is_reported_with_its_layer() -> None:
    graph = fixtures.graph("tiny")
    graph.node("pool1").op = "FancyAttention"  # no builder is registered for it
    with pytest.raises(UnsupportedLayerError, match="pool1"):
        to_model(graph)


def test_keras_applications_profile_rejects_a_net_that_is_not_a_resnet(tmp_path: Path) -> None:
    with pytest.raises(Caffe2xError, match="keras-applications"):
        caffe2x.save(fixtures.graph("tiny"), tmp_path / "tiny-apps.h5", profile="keras-applications")
    assert not (tmp_path / "tiny-apps.h5").exists()


def test_converting_to_keras_never_imports_torch(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        import caffe2x, caffe2x.targets.keras
        from caffe2x import fixtures
        g = fixtures.graph("tiny")
        caffe2x.to_keras(g)
        caffe2x.save(g, {str(tmp_path / 'tiny.h5')!r})
        assert "torch" not in sys.modules, "torch was imported"
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --------------------------------------------------------------------------- one build per validation
def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from caffe2x.targets.keras import files as kfiles, model as kmodel

    builds: list[str] = []
    real = kmodel.build_net

    def counted(graph: caffe2x.Graph) -> kmodel.BuiltNet:
        builds.append(graph.name)
        return real(graph)

    monkeypatch.setattr(kmodel, "build_net", counted)
    monkeypatch.setattr(kfiles, "build_net", counted)
    return builds


def test_write_then_load_builds_the_net_once_and_every_weight_still_comes_from_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """validate's sequence (write the .h5, load it back, run the logits) builds the Keras layers once:
    the load cuts its model from the net the write built, zeroes every variable, then loads the file.
    A weight changed in the file after writing shows in the output, so nothing comes from the build."""
    from caffe2x.convert import write
    from caffe2x.targets import get, write_then_load
    from caffe2x.targets.keras import target as ktarget

    builds = _count_builds(monkeypatch)
    zero_at_load: list[bool] = []
    real_load = ktarget.load_weights

    def checked(model: keras.Model, path: str | Path) -> None:
        zero_at_load.append(all(not np.any(np.asarray(w.numpy())) for w in model.weights))
        real_load(model, path)

    monkeypatch.setattr(ktarget, "load_weights", checked)
    graph = fixtures.graph("tiny")
    x = _input(graph, std=1.0)
    path = tmp_path / "tiny.h5"
    with write_then_load():
        write(graph, path, "keras")
        with h5py.File(path, "r+") as f:
            f["fc10/fc10/bias"][...] = f["fc10/fc10/bias"][...] + 1.0  # the file now says something else
        logits, _ = graph.logits()
        runner = get("keras").load(path, graph)
    got = runner.run(x, [logits])[logits]
    changed = graph.copy({**graph.tensors, "fc10.bias": graph.tensors["fc10.bias"] + 1.0})
    assert max_rel_error(got, caffe2x.run(changed, x, outputs=logits)) <= TOL
    assert builds == [graph.name] and zero_at_load == [True]


def test_a_load_without_a_matching_write_builds_afresh_and_the_offer_dies_with_its_graph(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from caffe2x.targets import get, write_then_load
    from caffe2x.targets.keras import model as kmodel

    builds = _count_builds(monkeypatch)
    graph = fixtures.graph("tiny")
    x = _input(graph, std=1.0)
    path = tmp_path / "tiny.h5"
    caffe2x.save(graph, path)
    assert kmodel._offered is None  # a plain save keeps nothing once it returns
    with write_then_load():
        caffe2x.save(graph, path, overwrite=True)
        other = fixtures.graph("tiny")  # equal, but not the graph the net was built from
        get("keras").load(path, other).run(x, ["fc10"])
        assert len(builds) == 3 and kmodel._offered is None  # a take for another graph drops the offer
        caffe2x.save(graph, path, overwrite=True)
        graph.node("pool1").attrs["method"] = "ave"  # changed since the write: not served
        get("keras").load(path, graph).run(x, ["fc10"])
        assert len(builds) == 5
        caffe2x.save(other, path, overwrite=True)
        assert kmodel._offered is not None
    del other
    gc.collect()
    assert kmodel._offered is None  # never keeps a graph (or its net) alive


def test_build_draws_no_random_initial_values_and_keeps_the_configured_initializers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kernel is assigned from the graph right after its layer is built, so the build creates
    zeros instead of drawing Glorot-uniform numbers (seconds for VGG-16); the config still says Glorot."""
    drawn: list[str] = []
    real = keras.initializers.GlorotUniform.__call__

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        drawn.append(type(self).__name__)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(keras.initializers.GlorotUniform, "__call__", counted)
    graph = fixtures.graph("tiny")
    model = to_model(graph)
    assert drawn == []
    for name in ("conv1", "fc10"):
        assert model.get_layer(name).get_config()["kernel_initializer"]["class_name"] == "GlorotUniform"
    x = _input(graph, std=1.0)
    assert max_rel_error(_nchw(model(_nhwc(x))), caffe2x.run(graph, x)) <= TOL


def test_big_weights_are_assigned_and_written_in_slices_with_the_same_values(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large variables are assigned, zeroed and written to the .h5 a slice of rows at a time (VGG-16's
    fc6 cost ~1.2 GB of temporaries whole); with tiny slices every value still arrives exactly."""
    from caffe2x.targets.keras import h5, ops

    monkeypatch.setattr(ops, "ASSIGN_SLICE_BYTES", 256)
    monkeypatch.setattr(h5, "ROWS_BYTES", 256)
    graph = fixtures.graph("tiny")
    x = _input(graph, std=1.0)
    model = to_model(graph)
    kernel = model.get_layer("conv1").kernel
    assert kernel.numpy().nbytes > 256
    assert np.array_equal(kernel.numpy(), graph.tensors["conv1.weight"].transpose(2, 3, 1, 0))
    path = tmp_path / "tiny.h5"
    caffe2x.save(graph, path)
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["conv1/conv1/kernel"][...], graph.tensors["conv1.weight"].transpose(2, 3, 1, 0))
    from caffe2x.targets import get

    got = get("keras").load(path, graph).run(x, ["fc10"])["fc10"]
    assert max_rel_error(got, caffe2x.run(graph, x, outputs="fc10")) <= TOL


def test_building_creates_each_variable_holding_its_value_without_assigning_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables are created from the graph's values (ops.built_with), not filled and then assigned:
    assigning wrote every variable twice and left ResNet-50's temporaries with the allocator."""
    from caffe2x.targets.keras import ops

    assigned: list[str] = []
    real = ops.assign_in_slices
    monkeypatch.setattr(ops, "assign_in_slices", lambda var, value: (assigned.append(var.path), real(var, value)))
    graph = fixtures.graph("tiny")
    model = to_model(graph)
    assert assigned == []
    assert np.array_equal(model.get_layer("conv1").kernel.numpy(), graph.tensors["conv1.weight"].transpose(2, 3, 1, 0))
    assert np.array_equal(model.get_layer("conv1").bias.numpy(), graph.tensors["conv1.bias"])
    x = _input(graph, std=1.0)
    assert max_rel_error(_nchw(model(_nhwc(x))), caffe2x.run(graph, x)) <= TOL


def test_the_runner_computes_exactly_what_the_eager_model_computes(tmp_path: Path) -> None:
    """The validation runner calls the model as a tf.function (its intermediates freed as they are
    used) with Grappler's rewrites off: bit for bit the numbers of Keras' eager ``model(x)``, and the
    process's optimizer options as they were."""
    import tensorflow as tf

    from caffe2x.targets import get

    graph = fixtures.graph("tiny")
    x = _input(graph, std=1.0)
    path = tmp_path / "tiny.h5"
    caffe2x.save(graph, path)
    model = to_model(graph)
    model.load_weights(str(path))
    eager = _nchw(model(_nhwc(x), training=False))
    before = tf.config.optimizer.get_experimental_options()
    runner = get("keras").load(path, graph)
    for _ in range(2):  # traced once, then run again
        got = runner.run(x, [graph.outputs[0]])[graph.outputs[0]]
        assert got.dtype == eager.dtype and np.array_equal(got, eager)
    assert tf.config.optimizer.get_experimental_options() == before
