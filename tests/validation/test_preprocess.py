"""ImageNet-style preprocessing: Caffe's channel order, mean subtraction, resize and crop geometry."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from caffe2x import Caffe2xError
from caffe2x.validation import preprocess as pp


def _save(arr: np.ndarray, path: Path) -> Path:
    Image.fromarray(arr.astype(np.uint8)).save(path)  # PNG: lossless, so pixel values are exact
    return path


def solid(path: Path, rgb: tuple[int, int, int], width: int = 400, height: int = 300) -> Path:
    return _save(np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)), path)


def test_solid_colour_becomes_bgr_minus_default_channel_means(tmp_path: Path) -> None:
    path = solid(tmp_path / "c.png", (200, 100, 50))
    x = pp.preprocess_image(path, 224, 224)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    # BGR order, 0..255 scale (no /255), default means B 103.94, G 116.78, R 123.68
    expected = np.array([50 - 103.94, 100 - 116.78, 200 - 123.68], np.float32)
    np.testing.assert_allclose(x.reshape(3, -1), np.repeat(expected[:, None], 224 * 224, axis=1), atol=1e-4)


def test_explicit_mean_values_are_subtracted_in_bgr_order(tmp_path: Path) -> None:
    path = solid(tmp_path / "c.png", (30, 20, 10))
    x = pp.preprocess_image(path, 8, 8, pp.Mean.resolve(mean_values=(1, 2, 3)))
    np.testing.assert_allclose(x[:, 0, 0], [10 - 1, 20 - 2, 30 - 3])


def test_greyscale_images_are_replicated_to_three_channels(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    Image.fromarray(np.full((300, 300), 77, np.uint8)).save(path)  # 2-D uint8: mode L
    x = pp.preprocess_image(path, 224, 224, pp.Mean.resolve(mean_values=(0,)))
    np.testing.assert_array_equal(x[0], x[1])
    np.testing.assert_array_equal(x[0], x[2])
    np.testing.assert_allclose(x, 77.0, atol=1e-4)  # resampled in float: 77 to float rounding


def test_shorter_side_is_resized_to_256_keeping_aspect() -> None:
    assert pp.resize_shorter(Image.new("RGB", (400, 300)), 256).size == (341, 256)
    assert pp.resize_shorter(Image.new("RGB", (300, 600)), 256).size == (256, 512)
    assert pp.resize_size(224, 224) == 256
    assert pp.resize_size(227, 227) == 256          # CaffeNet's crop from 256
    assert pp.resize_size(32, 32) == 37              # same 256/224 ratio for small nets
    assert pp.resize_size(320, 320) == 366


def test_centre_crop_uses_caffe_offsets(tmp_path: Path) -> None:
    # a 341 x 256 image whose pixels encode their position: R = x % 256, B = x // 256, G = y
    h, w = 256, 341
    yy, xx = np.mgrid[0:h, 0:w]
    img = Image.fromarray(np.stack([xx % 256, yy, xx // 256], axis=-1).astype(np.uint8))
    crop = np.asarray(pp.center_crop(img, 224, 224)).astype(int)
    x0 = crop[0, 0, 0] + 256 * crop[0, 0, 2]
    assert (x0, crop[0, 0, 1]) == ((341 - 224) // 2, (256 - 224) // 2) == (58, 16)
    assert crop.shape == (224, 224, 3)


def test_whole_pipeline_keeps_the_photo_centre_at_the_crop_centre(tmp_path: Path) -> None:
    # 600 x 300 landscape, black with a white 2-pixel vertical line at its centre and a white
    # horizontal line at its centre: after resize (512 x 256) and crop (224 x 224 at 144, 16) both
    # lines cross at the crop centre
    arr = np.zeros((300, 600, 3), np.uint8)
    arr[:, 299:301] = 255
    arr[149:151, :] = 255
    x = pp.preprocess_image(_save(arr, tmp_path / "cross.png"), 224, 224, pp.Mean.resolve(mean_values=(0, 0, 0)))
    col = int(np.argmax(x[1, 5, :]))     # away from the horizontal line
    row = int(np.argmax(x[1, :, 5]))     # away from the vertical line
    assert col in (111, 112) and row in (111, 112)


def test_crop_geometry_without_resize_and_bgr_order(tmp_path: Path) -> None:
    # 512 x 256: shorter side already 256, so no resampling; R = x % 256, G = y, B = x // 256
    h, w = 256, 512
    yy, xx = np.mgrid[0:h, 0:w]
    path = _save(np.stack([xx % 256, yy, xx // 256], axis=-1), tmp_path / "pos.png")
    x = pp.preprocess_image(path, 224, 224, pp.Mean.resolve(mean_values=(0, 0, 0)))
    # output channel 0 is B, 1 is G, 2 is R; crop offset (144, 16)
    assert x[2, 0, 0] + 256 * x[0, 0, 0] == 144
    assert x[1, 0, 0] == 16
    assert x[2, 0, 10] + 256 * x[0, 0, 10] == 154 and x[1, 7, 0] == 23


def write_binaryproto(path: Path, mean: np.ndarray) -> Path:
    from caffe2x.caffe.proto import caffe_pb2

    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([1, *mean.shape])
    blob.data.extend(mean.astype(np.float32).ravel().tolist())
    path.write_bytes(blob.SerializeToString())
    return path


def test_mean_binaryproto_is_centre_cropped_and_subtracted(tmp_path: Path) -> None:
    # mean image 3 x 256 x 256: channel c holds 10*c + row index, so the crop offset shows in the result
    rows = np.arange(256, dtype=np.float32)[:, None] * np.ones((1, 256), np.float32)
    mean = np.stack([rows, rows + 10, rows + 20])
    mean_file = write_binaryproto(tmp_path / "mean.binaryproto", mean)
    photo = solid(tmp_path / "c.png", (200, 150, 100), 300, 300)
    inputs = pp.make_inputs("data", (1, 3, 224, 224), images=[photo], mean=mean_file)
    x = inputs.array[0]
    top = (256 - 224) // 2
    r = np.arange(224, dtype=np.float32)
    np.testing.assert_allclose(x[0, :, 3], 100 - (r + top), atol=1e-4)      # B
    np.testing.assert_allclose(x[1, :, 3], 150 - (r + top + 10), atol=1e-4)  # G
    np.testing.assert_allclose(x[2, :, 3], 200 - (r + top + 20), atol=1e-4)  # R
    assert inputs.mean == {"kind": "image", "path": str(mean_file), "shape": [3, 256, 256]}


def test_mean_image_smaller_than_the_input_is_an_error(tmp_path: Path) -> None:
    mean_file = write_binaryproto(tmp_path / "small.binaryproto", np.zeros((3, 100, 100), np.float32))
    photo = solid(tmp_path / "c.png", (1, 2, 3))
    with pytest.raises(Caffe2xError, match="smaller than"):
        pp.make_inputs("data", (1, 3, 224, 224), images=[photo], mean=mean_file)


def test_mean_and_mean_values_together_or_wrong_count_are_errors() -> None:
    with pytest.raises(Caffe2xError, match="not both"):
        pp.Mean.resolve(mean=np.zeros((3, 4, 4)), mean_values=(1, 2, 3))
    with pytest.raises(Caffe2xError, match="2 mean values for a 3-channel"):
        pp.Mean.resolve(mean_values=(1, 2)).subtract(np.zeros((3, 2, 2), np.float32))


def test_images_accepts_files_and_directories_and_defaults_to_the_packaged_photos(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    a = solid(d / "b.png", (1, 1, 1))
    b = solid(d / "a.png", (2, 2, 2))
    (d / "notes.txt").write_text("not an image")
    single = solid(tmp_path / "z.png", (3, 3, 3))
    assert pp.find_images([single, d]) == [single, b, a]
    defaults = pp.find_images()
    assert [p.name for p in defaults] == ["astronaut.jpg", "chelsea_cat.jpg", "coffee_cup.jpg", "rocket_launch.jpg"]
    with pytest.raises(Caffe2xError, match="no such image"):
        pp.find_images([tmp_path / "missing.jpg"])


def test_default_inputs_are_the_four_photos_preprocessed() -> None:
    inputs = pp.make_inputs("data", (1, 3, 224, 224))
    assert inputs.kind == "images" and inputs.array.shape == (4, 3, 224, 224)
    assert inputs.mean == {"kind": "values", "values": [103.94, 116.78, 123.68]}
    # mean-subtracted pixels: centred near zero, spread of tens, no /255 scaling
    assert abs(float(inputs.array.mean())) < 60 and 20 < float(inputs.array.std()) < 120


def test_non_image_input_falls_back_to_seeded_gaussian_and_says_so() -> None:
    a = pp.make_inputs("data", (2, 4, 11, 13))
    b = pp.make_inputs("data", (2, 4, 11, 13))
    assert a.kind == "gaussian" and a.array.shape == (pp.GAUSSIAN_BATCH, 4, 11, 13)
    assert "not 3-channel" in (a.note or "")
    np.testing.assert_array_equal(a.array, b.array)  # seeded
    with pytest.raises(Caffe2xError, match="3-channel"):
        pp.make_inputs("data", (2, 4, 11, 13), images=[pp.default_image_dir()])


def test_undecodable_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(Caffe2xError, match="cannot decode image"):
        pp.preprocess_image(bad, 224, 224)
