"""Caffe's input pipeline as framework objects: the torch module/transform and the Keras layer give the
validator's numpy numbers (caffe2x.validation.preprocess) to float rounding, and training crops are windows of them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from caffe2x.validation import preprocess as pp

PHOTOS = pp.find_images()
#: float32 rounding of 0..255 values after a few multiply-adds, in a different summation order
ATOL = 1e-3


def rgb(path: Path) -> np.ndarray:
    return np.asarray(pp.load_image(path))


def noise_image(h: int, w: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def mean_image(h: int = 256, w: int = 256) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (3, h, w)).astype(np.float32)


def test_resample_matrix_is_pillows_bilinear_filter_in_float() -> None:
    # Pillow's float ("F") images resize with the same filter without rounding to uint8: an independent check
    for path in PHOTOS:
        img = rgb(path)
        h, w = img.shape[:2]
        rh, rw = pp.resized_size(h, w, 256)
        pil = np.stack([np.asarray(Image.fromarray(img[..., c].astype(np.float32), mode="F")
                                   .resize((rw, rh), Image.BILINEAR)) for c in range(3)])
        ours = pp.resample_matrix(h, rh) @ img.astype(np.float32).transpose(2, 0, 1) @ pp.resample_matrix(w, rw).T
        np.testing.assert_allclose(ours, pil, atol=ATOL)
    np.testing.assert_array_equal(pp.resample_matrix(5, 5), np.eye(5, dtype=np.float32))


def test_torch_module_and_transform_equal_the_numpy_pipeline_on_the_photos() -> None:
    import torch

    from caffe2x.finetune.torch import CaffePreprocess, CaffeTransform

    module, transform = CaffePreprocess().eval(), CaffeTransform()
    for path in PHOTOS:
        ref = pp.preprocess_image(path, 224, 224)
        chw = torch.from_numpy(rgb(path).transpose(2, 0, 1).copy())
        np.testing.assert_allclose(module(chw).numpy(), ref, atol=ATOL)
        np.testing.assert_allclose(module(chw[None])[0].numpy(), ref, atol=ATOL)
        np.testing.assert_allclose(transform(pp.load_image(path)).numpy(), ref, atol=ATOL)
        np.testing.assert_allclose(transform(rgb(path)).numpy(), ref, atol=ATOL)


def test_keras_layer_equals_the_numpy_pipeline_on_the_photos() -> None:
    from caffe2x.finetune.keras import CaffePreprocessing

    layer = CaffePreprocessing()
    for path in PHOTOS:
        ref = pp.preprocess_image(path, 224, 224).transpose(1, 2, 0)
        np.testing.assert_allclose(np.asarray(layer(rgb(path)[None]))[0], ref, atol=ATOL)
        np.testing.assert_allclose(np.asarray(layer(rgb(path)[None], training=True))[0], ref, atol=ATOL)  # no aug.


def test_mean_image_and_mean_values_match_numpy_in_both_frameworks() -> None:
    import torch

    from caffe2x.finetune.keras import CaffePreprocessing
    from caffe2x.finetune.torch import CaffePreprocess

    img = noise_image(300, 340)
    for kwargs in ({"mean": mean_image()}, {"mean": mean_image(260, 300)}, {"mean_values": (1.0, 2.0, 3.0)}):
        ref = pp.transform_rgb(img, 224, 224, pp.Mean.resolve(kwargs.get("mean"), kwargs.get("mean_values")))
        got_t = CaffePreprocess(**kwargs).eval()(torch.from_numpy(img.transpose(2, 0, 1).copy())).numpy()
        got_k = np.asarray(CaffePreprocessing(**kwargs)(img[None]))[0].transpose(2, 0, 1)
        np.testing.assert_allclose(got_t, ref, atol=ATOL)
        np.testing.assert_allclose(got_k, ref, atol=ATOL)


def _windows(img: np.ndarray, mean: np.ndarray, h: int, w: int, resize: int) -> dict[tuple[int, int, bool], np.ndarray]:
    """Every crop Caffe's TRAIN transform can give: (top, left, mirrored) -> (3, h, w)."""
    g = pp.geometry(img.shape[0], img.shape[1], h, w, resize)
    full = g.rows @ img.astype(np.float32).transpose(2, 0, 1)[::-1] @ g.cols.T - mean   # mean before mirror
    out = {}
    for top in range(g.max_offset[0] + 1):
        for left in range(g.max_offset[1] + 1):
            win = full[:, top:top + h, left:left + w]
            out[(top, left, False)], out[(top, left, True)] = win, win[:, :, ::-1]
    return out


def _which(window: np.ndarray, windows: dict[tuple[int, int, bool], np.ndarray]) -> tuple[int, int, bool]:
    hits = [k for k, v in windows.items() if np.allclose(v, window, atol=ATOL)]
    assert hits, "a training crop that is no window of the resized image"
    return hits[0]


def test_training_crops_are_random_windows_and_mirrors_of_the_resized_image() -> None:
    import torch

    from caffe2x.finetune.keras import CaffePreprocessing
    from caffe2x.finetune.torch import CaffePreprocess

    img, mean = noise_image(20, 25), mean_image(10, 12)      # resized to 10 x 12 (mean follows the crop)
    windows = _windows(img, mean, 6, 7, 10)
    torch.manual_seed(0)
    module = CaffePreprocess(6, 7, mean=mean, resize=10, random_crop=True, mirror=True).train()
    batch = torch.from_numpy(img.transpose(2, 0, 1).copy())[None].repeat(16, 1, 1, 1)
    seen_t = {_which(y, windows) for y in module(batch).numpy()}
    layer = CaffePreprocessing(6, 7, mean=mean, resize=10, random_crop=True, mirror=True, seed=3)
    seen_k = {_which(y.transpose(2, 0, 1), windows) for y in np.asarray(layer(np.repeat(img[None], 16, 0), training=True))}
    for seen in (seen_t, seen_k):
        assert len(seen) > 4 and {m for _, _, m in seen} == {False, True}
    # and inference is the centre window, unmirrored
    assert _which(module.eval()(batch[:1])[0].numpy(), windows) == (2, 2, False)
    assert _which(np.asarray(layer(img[None]))[0].transpose(2, 0, 1), windows) == (2, 2, False)


def test_keras_layer_saves_and_reloads_with_its_mean_image(tmp_path: Path) -> None:
    import keras

    from caffe2x.finetune.keras import CaffePreprocessing

    img = noise_image(300, 300)
    inp = keras.Input((300, 300, 3), dtype="uint8")
    model = keras.Model(inp, CaffePreprocessing(mean=mean_image(), mirror=True, seed=1)(inp))
    model.save(tmp_path / "pre.keras")
    again = keras.models.load_model(tmp_path / "pre.keras")   # safe mode: the layer is registered
    assert isinstance(again.layers[-1], CaffePreprocessing)
    np.testing.assert_array_equal(np.asarray(again(img[None])), np.asarray(model(img[None])))


def test_each_framework_module_imports_only_its_framework() -> None:
    code = ("import sys, caffe2x.finetune.{fw}; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    for fw, expected in (("torch", ["torch"]), ("keras", ["keras", "tensorflow"])):
        proc = subprocess.run([sys.executable, "-c", code.format(fw=fw)], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split("\n")[-2] == str(expected)


def test_images_too_small_for_the_crop_or_not_rgb_are_clear_errors() -> None:
    import torch

    from caffe2x import Caffe2xError
    from caffe2x.finetune.torch import CaffePreprocess

    with pytest.raises(Caffe2xError, match="smaller than the 8x8 crop"):
        CaffePreprocess(8, 8, resize=4)(torch.zeros(3, 10, 10, dtype=torch.uint8))
    with pytest.raises(Caffe2xError, match="RGB"):
        CaffePreprocess()(torch.zeros(1, 4, 10, 10, dtype=torch.uint8))
