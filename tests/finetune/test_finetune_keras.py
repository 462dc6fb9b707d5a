"""Fine-tuning in Keras: trainable conversions, head replacement, freezing by Caffe layer name."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

import caffe2x
from caffe2x import Caffe2xError, fixtures
from caffe2x.finetune.keras import prepare


def tiny_batch(graph: caffe2x.Graph, n: int = 6, seed: int = 0) -> np.ndarray:
    """NHWC, scaled like mean-subtracted pixels."""
    shape = next(iter(graph.inputs.values()))
    return (np.random.default_rng(seed).standard_normal((n, *shape[1:])) * 50).astype(np.float32).transpose(0, 2, 3, 1)


def prepared(freeze="up-to:res2a", **kwargs):  # type: ignore[no-untyped-def]
    graph = fixtures.graph("tiny")
    keras.utils.set_random_seed(0)
    return graph, prepare(caffe2x.to_keras(graph, trainable=True), num_classes=3, freeze=freeze, **kwargs)


def test_trainable_model_in_inference_matches_the_numpy_reference() -> None:
    graph = fixtures.graph("tiny")
    x = tiny_batch(graph)
    model = caffe2x.to_keras(graph, outputs="fc10", trainable=True)
    ref = caffe2x.run(graph, x.transpose(0, 3, 1, 2), outputs="fc10")
    got = np.asarray(model(x, training=False))
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-5
    assert model.get_layer("bn_conv1").momentum == pytest.approx(0.999)   # Caffe's moving_average_fraction
    assert all(layer.trainable for layer in model.layers)


def test_a_few_steps_lower_the_loss_and_touch_only_what_is_not_frozen() -> None:
    graph, model = prepared()
    x, y = tiny_batch(graph, 12), np.arange(12) % 3
    before = {v.path: np.array(v.numpy()) for v in model.weights}
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = model.fit(x, y, batch_size=12, epochs=10, shuffle=False, verbose=0).history["loss"]
    assert losses[-1] < losses[0] * 0.9 and losses[-1] == min(losses), losses
    frozen = ("conv1/", "bn_conv1/", "scale_conv1/", "res2a_", "bn2a_", "scale2a_")
    for v in model.weights:
        if v.path.startswith(frozen):
            assert np.array_equal(v.numpy(), before[v.path]), f"frozen {v.path} changed"   # BN stats included
        elif v.path.split("/")[-1] in ("kernel", "moving_mean", "moving_variance", "gamma"):
            assert not np.array_equal(v.numpy(), before[v.path]), f"trainable {v.path} did not change"
    assert not model.get_layer("bn_conv1").trainable and model.get_layer("bn3a_branch1").trainable


def test_head_is_replaced_and_softmax_kept_or_dropped() -> None:
    graph, logits = prepared(freeze=None)
    x = tiny_batch(graph)
    out = np.asarray(logits(x))
    assert out.shape == (6, 3) and not np.allclose(out.sum(1), 1.0)
    assert logits.layers[-1].name == "fc10" and all(layer.trainable for layer in logits.layers)
    _, probs = prepared(freeze="all-but-head", softmax=True)
    np.testing.assert_allclose(np.asarray(probs(x)).sum(1), 1.0, rtol=1e-5)
    assert probs.layers[-1].name == "prob"
    assert [w.path for w in probs.trainable_weights] == ["fc10/kernel", "fc10/bias"]


def test_unknown_layer_names_are_errors_listing_close_matches() -> None:
    graph = fixtures.graph("tiny")
    model = caffe2x.to_keras(graph, trainable=True)
    with pytest.raises(Caffe2xError, match=r"'res3b'.*close matches: res3a"):
        prepare(model, 3, freeze="up-to:res3b")
    with pytest.raises(Caffe2xError, match=r"'fc1000'.*close matches: fc10"):
        prepare(model, 3, head="fc1000")


def test_keras_export_reloads_with_identical_outputs(tmp_path: Path) -> None:
    graph, model = prepared()
    x = tiny_batch(graph)
    model(x, training=True)                  # move the trainable BatchNorm statistics
    model.save(tmp_path / "ft.keras")
    again = keras.models.load_model(tmp_path / "ft.keras")
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))
    assert [layer.trainable for layer in again.layers] == [layer.trainable for layer in model.layers]
