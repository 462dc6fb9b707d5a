"""ImageNet-style inputs for the validator: photos preprocessed the way Caffe's ImageNet models expect.

The pipeline, step by step (what ``caffe.io.Transformer`` + ``caffe_classify`` / ``DataTransformer`` do
for KaimingHe's ResNets, VGG, CaffeNet):

1. decode with Pillow, apply the EXIF orientation (as OpenCV's ``imread`` does), convert to RGB
   (greyscale is replicated, alpha dropped);
2. resize so the **shorter side is 256** pixels (bilinear) when the net's input is 224..256 pixels
   (ResNet, VGG, GoogLeNet, CaffeNet's 227); for other input sizes the shorter side becomes
   ``round(max(H, W) * 256 / 224)``, the same crop ratio (a 32x32 net sees the photo's centre at 37).
   The resampling is Pillow's bilinear filter (a triangle widened by the scale factor when shrinking,
   so it antialiases) written as one weight matrix per axis (:func:`resample_matrix`) and kept in float
   (no rounding back to uint8 in between);
3. **centre crop** the net's input ``H x W`` (224 x 224 for ResNet), offsets ``(size - crop) // 2`` as
   Caffe's ``DataTransformer`` computes them;
4. HWC -> CHW, **RGB -> BGR**, float32, pixel values kept in 0..255 (**no /255**);
5. subtract the mean: either a mean image from a ``.binaryproto`` (centre-cropped to ``H x W`` when
   larger, as Caffe's transformer indexes the mean at the crop offset), or per-channel means in BGR
   order, by default **B 103.94, G 116.78, R 123.68** (the ImageNet means KaimingHe's ResNets and the
   Keras/Caffe ports use).

Resize and crop together are two matrices, ``out = rows[top:top+h] @ image @ cols[left:left+w].T`` per
channel: :func:`geometry` computes them, :func:`transform_rgb` applies them with numpy. The framework
objects (``caffe2x.finetune.torch.CaffePreprocess``/``CaffeTransform``,
``caffe2x.finetune.keras.CaffePreprocessing``) take the very same matrices, offsets and mean from here and
only multiply; training-time random crops and mirroring (Caffe's ``transform_param`` ``crop_size`` in
TRAIN and ``mirror``) are other row/column windows of the same matrices.

A net whose input is not a 3-channel 4-D blob cannot take photos; :func:`make_inputs` then gives seeded
Gaussian noise of standard deviation 50 (about the spread of mean-subtracted pixels) and says so.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caffe2x.errors import Caffe2xError, option

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

PathLike = str | os.PathLike[str]

#: per-channel means subtracted by default, in BGR order (Caffe's channel order)
DEFAULT_MEAN_BGR: tuple[float, float, float] = (103.94, 116.78, 123.68)
#: shorter side after resizing, for inputs up to 256 pixels
RESIZE_SHORTER = 256
#: standard deviation and seed of the Gaussian fallback input
GAUSSIAN_STD = 50.0
GAUSSIAN_SEED = 0
#: number of samples of the Gaussian fallback input (as many as the default photos)
GAUSSIAN_BATCH = 4
#: file suffixes taken from a directory given as ``images``
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


def default_image_dir() -> Path:
    """The four sample photos shipped in the package (``caffe2x/data/images``)."""
    return Path(__file__).resolve().parent.parent / "data" / "images"


def find_images(paths: PathLike | Sequence[PathLike] | None = None) -> list[Path]:
    """Image files from files and/or directories (a directory contributes its image files, sorted by
    name, not recursively); ``None`` means the packaged sample photos."""
    if paths is None:
        paths = [default_image_dir()]
    elif isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise Caffe2xError(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this directory")
            found.extend(files)
        elif p.is_file():
            found.append(p)
        else:
            raise Caffe2xError(f"{p}: no such image file or directory")
    if not found:
        raise Caffe2xError("no images given")
    return found


def resize_size(height: int, width: int) -> int:
    """The shorter side to resize to before cropping ``height x width``: 256 for crops of 224..256,
    else the same 256/224 ratio."""
    crop = max(height, width)
    if 224 <= crop <= RESIZE_SHORTER:
        return RESIZE_SHORTER
    return int(round(crop * RESIZE_SHORTER / 224))


def max_image_pixels() -> int:
    """Largest image decoded: 1/64 of the size limit (64 Mpx, 8192 x 8192, at the default 4 GiB), since
    decoding, rotating, converting and resizing hold several copies of it."""
    from caffe2x.graph.checks import max_bytes

    return max_bytes() // 64


def load_image(path: PathLike, data: bytes | None = None) -> "Image.Image":
    """Decode an image file as RGB the way Caffe's reader (OpenCV ``imread(IMREAD_COLOR)``) sees it.

    ``data``: the file's bytes, already read (``path`` then only names it in messages). The pixel count
    comes from the header (``Image.open`` does not decode) and is checked against
    :func:`max_image_pixels` before any pixel is decoded. What OpenCV does with each kind of file, and so
    what this does (:func:`caffe_rgb`): the first frame of an animation; the EXIF orientation applied;
    greyscale, bilevel and palette images expanded to three channels; alpha dropped (not composited);
    16-bit samples reduced to their high byte; an Adobe CMYK JPEG through OpenCV's own CMYK formula.
    Anything else (float or 32-bit integer samples, CMYK outside JPEG, Lab, HSV) is refused by name.
    """
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise Caffe2xError("image inputs need Pillow: pip install 'caffe2x[validate]'") from None
    try:
        import io

        with Image.open(path if data is None else io.BytesIO(data)) as img:
            w, h = img.size
            limit = max_image_pixels()
            if w * h > limit:
                from caffe2x.graph.checks import MAX_BYTES_ENV, SizeLimitError

                raise SizeLimitError(f"{path}: image of {w}x{h} ({w * h:,} pixels) is over the {limit:,}-pixel "
                                     f"limit (raise it with {MAX_BYTES_ENV}=…)")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            fmt = img.format
            return caffe_rgb(ImageOps.exif_transpose(img), fmt, path)
    except Image.DecompressionBombError as exc:  # Pillow's own header check (past 2 x 89 Mpx) came first
        from caffe2x.graph.checks import SizeLimitError

        raise SizeLimitError(f"{path}: image is over the pixel limit: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise Caffe2xError(f"{path}: cannot decode image: {exc}") from None


#: Pillow modes OpenCV's ``IMREAD_COLOR`` turns into BGR exactly as Pillow's ``convert("RGB")`` does
_PLAIN_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "La", "P", "PA", "1")
#: Pillow modes of 16-bit samples (OpenCV keeps each sample's high byte: ``v >> 8``)
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def caffe_rgb(img: "Image.Image", fmt: str | None, path: PathLike) -> "Image.Image":
    """A decoded Pillow image as the 8-bit RGB OpenCV's ``imread(IMREAD_COLOR)`` gives (in RGB order).

    Measured against OpenCV 4.x on generated files: 8-bit RGB/RGBA/palette (with transparency)/grey/
    grey+alpha/bilevel PNGs and GIF first frames equal Pillow's ``convert("RGB")``; 16-bit PNG and TIFF
    samples become ``v >> 8``; a CMYK JPEG (stored Adobe-inverted, which Pillow undoes on reading)
    becomes ``k - ((255 - c) * k >> 8)`` per channel on the stored values, OpenCV's formula.
    """
    from PIL import Image

    mode = img.mode
    if mode in _PLAIN_MODES:
        return img.convert("RGB")
    if mode in _WIDE_MODES or (mode == "I" and fmt in ("PNG", "TIFF")):
        wide = np.asarray(img).astype(np.int64)
        if wide.min(initial=0) < 0 or wide.max(initial=0) > 0xFFFF:
            raise Caffe2xError(f"{path}: {mode} samples outside 0..65535 are not an image Caffe reads")
        grey = (wide >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    if mode == "CMYK" and fmt == "JPEG":
        raw = np.asarray(img).astype(np.int32)
        stored = 255 - raw if "adobe" in img.info else raw  # what libjpeg hands OpenCV
        k = stored[:, :, 3:4]
        rgb = k - (((255 - stored[:, :, :3]) * k) >> 8)
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    raise Caffe2xError(f"{path}: {fmt or 'image'} of mode {mode} is not read the way Caffe's reader (OpenCV) reads "
                       f"it; convert it to 8-bit RGB first")


def resized_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """``(height, width)`` after scaling so the shorter side is ``shorter``, keeping the aspect ratio."""
    if min(height, width) == shorter:
        return height, width
    if width <= height:
        return max(1, int(round(height * shorter / width))), shorter
    return shorter, max(1, int(round(width * shorter / height)))


def resize_shorter(img: "Image.Image", size: int) -> "Image.Image":
    """Scale a Pillow image so the shorter side is ``size`` (Pillow's bilinear, uint8 result).

    Kept for callers that want an image; the pipeline itself resizes in float with
    :func:`resample_matrix`, which is this same filter without the rounding to uint8.
    """
    from PIL import Image

    w, h = img.size
    new_h, new_w = resized_size(h, w, size)
    return img if (new_h, new_w) == (h, w) else img.resize((new_w, new_h), Image.BILINEAR)


def resample_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``(size_out, size_in)`` float32 weights of Pillow's bilinear resampling along one axis.

    Output pixel ``o`` is centred at ``(o + 0.5) * scale`` in input pixels (``scale = size_in /
    size_out``); input pixel ``i`` (centred at ``i + 0.5``) weighs ``max(0, 1 - |d| / support)`` with
    ``support = max(scale, 1)`` -- the triangle is widened when shrinking, which is what makes Pillow's
    downscaling antialiased where OpenCV's ``INTER_LINEAR`` is not -- and each row is normalised to sum
    to 1 (so rows at the border renormalise over the pixels that exist). Equal sizes give the identity.
    """
    if size_in == size_out:
        return np.eye(size_in, dtype=np.float32)
    scale = size_in / size_out
    support = max(scale, 1.0)
    centres = (np.arange(size_out, dtype=np.float64) + 0.5) * scale
    dist = np.arange(size_in, dtype=np.float64)[None, :] + 0.5 - centres[:, None]
    weights = np.maximum(0.0, 1.0 - np.abs(dist) / support)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def crop_offsets(height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """Caffe's centre-crop offsets ``(top, left) = ((H - h) // 2, (W - w) // 2)``."""
    return (height - crop_h) // 2, (width - crop_w) // 2


@dataclass(frozen=True)
class Geometry:
    """Resize + crop of one image size as matrices: ``rows`` (resized H, input H) and ``cols`` (resized W,
    input W). A crop at ``(top, left)`` is ``rows[top:top + crop[0]]`` and ``cols[left:left + crop[1]]``;
    a mirrored crop takes the column window in reverse."""

    rows: np.ndarray
    cols: np.ndarray
    crop: tuple[int, int]

    @property
    def resized(self) -> tuple[int, int]:
        return int(self.rows.shape[0]), int(self.cols.shape[0])

    @property
    def centre(self) -> tuple[int, int]:
        return crop_offsets(*self.resized, *self.crop)

    @property
    def max_offset(self) -> tuple[int, int]:
        """The largest ``(top, left)`` a random crop may take (Caffe draws 0..max inclusive)."""
        return self.resized[0] - self.crop[0], self.resized[1] - self.crop[1]


def geometry(in_h: int, in_w: int, height: int, width: int, resize: int | None = None) -> Geometry:
    """The :class:`Geometry` taking an ``in_h x in_w`` image to a ``height x width`` crop, after resizing
    the shorter side to ``resize`` (default :func:`resize_size`)."""
    rh, rw = resized_size(in_h, in_w, resize or resize_size(height, width))
    if rh < height or rw < width:
        raise Caffe2xError(f"image of {rw}x{rh} (after resizing) is smaller than the {width}x{height} crop")
    return Geometry(resample_matrix(in_h, rh), resample_matrix(in_w, rw), (height, width))


def transform_rgb(rgb: np.ndarray, height: int, width: int, mean: "Mean | None" = None,
                  resize: int | None = None) -> np.ndarray:
    """An RGB ``(H, W, 3)`` image (uint8 or float, 0..255) as Caffe's float32 ``(3, height, width)`` input:
    resize, centre crop, BGR, mean subtracted (the numbers every framework object reproduces)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise Caffe2xError(f"expected an RGB image of shape (H, W, 3), got {list(rgb.shape)}")
    g = geometry(rgb.shape[0], rgb.shape[1], height, width, resize)
    top, left = g.centre
    rows, cols = g.rows[top:top + height], g.cols[left:left + width]
    x = rgb.astype(np.float32).transpose(2, 0, 1)[::-1]            # BGR, (3, H, W)
    chw = np.matmul(np.matmul(rows, x), cols.T)                     # (3, height, width)
    return (mean or Mean.resolve()).subtract(np.ascontiguousarray(chw)).astype(np.float32, copy=False)


def center_crop(img: "Image.Image", height: int, width: int) -> "Image.Image":
    """The centre ``height x width`` window; offsets ``(size - crop) // 2`` as in Caffe."""
    w, h = img.size
    if h < height or w < width:
        raise Caffe2xError(f"image of {w}x{h} is smaller than the {width}x{height} crop")
    top, left = crop_offsets(h, w, height, width)
    return img.crop((left, top, left + width, top + height))


def to_bgr_chw(img: "Image.Image") -> np.ndarray:
    """RGB image -> float32 (3, H, W) in BGR order, values 0..255."""
    rgb = np.asarray(img, dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))


def crop_mean(mean: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (C, H', W') mean image centre-cropped to ``height x width`` (unchanged when already that size)."""
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim != 3:
        raise Caffe2xError(f"a mean image must be C x H x W, got shape {list(mean.shape)}")
    _, mh, mw = mean.shape
    if mh < height or mw < width:
        raise Caffe2xError(f"the mean image is {mh}x{mw}, smaller than the net's {height}x{width} input")
    top, left = (mh - height) // 2, (mw - width) // 2
    return mean[:, top:top + height, left:left + width]


@dataclass
class Mean:
    """What is subtracted: a mean image (C, H, W) or per-channel values (BGR order)."""

    values: tuple[float, ...] | None = None
    image: np.ndarray | None = None
    source: str | None = None  # the .binaryproto path, when read from one

    @classmethod
    def resolve(cls, mean: PathLike | np.ndarray | None = None,
                mean_values: Sequence[float] | None = None) -> "Mean":
        if mean is not None and mean_values is not None:
            raise Caffe2xError("give a mean image or mean values, not both")
        if mean is None:
            vals = DEFAULT_MEAN_BGR if mean_values is None else tuple(float(v) for v in mean_values)
            if not vals:
                raise Caffe2xError("mean values must not be empty")
            return cls(values=tuple(vals))
        if isinstance(mean, np.ndarray):
            arr = np.asarray(mean, dtype=np.float32)
            return cls(image=arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr)
        from caffe2x.caffe.reader import read_mean

        return cls(image=read_mean(mean), source=str(mean))

    def subtract(self, chw: np.ndarray) -> np.ndarray:
        c, h, w = chw.shape
        if self.image is not None:
            if self.image.shape[0] != c:
                raise Caffe2xError(f"the mean image has {self.image.shape[0]} channels, the input {c}")
            return chw - crop_mean(self.image, h, w)
        return chw - self.channel_values(c)

    def channel_values(self, channels: int) -> np.ndarray:
        """Per-channel means as a float32 ``(C, 1, 1)`` array (one value is used for every channel)."""
        vals = self.values or DEFAULT_MEAN_BGR
        if len(vals) == 1:
            vals = vals * channels
        if len(vals) != channels:
            raise Caffe2xError(f"{len(vals)} mean values for a {channels}-channel input")
        return np.asarray(vals, dtype=np.float32).reshape(channels, 1, 1)

    def for_crop(self, resized: tuple[int, int], crop: tuple[int, int]) -> tuple[np.ndarray, bool]:
        """What a crop of a ``resized`` image subtracts, and whether it moves with the crop window.

        Per-channel means: ``(C, 1, 1)``. A mean image as large as the resized image: all of it, indexed at
        the crop's own window (``True``), as Caffe's ``DataTransformer`` indexes the mean at the random
        crop offset and subtracts before mirroring. Any other mean image: its centre ``crop`` (``False``).
        """
        if self.image is None:
            return self.channel_values(3), False
        if tuple(self.image.shape[1:]) == tuple(resized):
            return np.asarray(self.image, dtype=np.float32), True
        return crop_mean(self.image, *crop), False

    def describe(self) -> dict[str, Any]:
        if self.image is not None:
            return {"kind": "image", "path": self.source, "shape": [int(d) for d in self.image.shape]}
        return {"kind": "values", "values": [float(v) for v in (self.values or DEFAULT_MEAN_BGR)]}


def preprocess_image(path: PathLike, height: int, width: int, mean: Mean | None = None,
                     resize: int | None = None) -> np.ndarray:
    """One photo as a float32 (3, height, width) BGR, mean-subtracted array (see the module docstring)."""
    return transform_rgb(np.asarray(load_image(path)), height, width, mean, resize)


def image_batch(paths: Sequence[PathLike], height: int, width: int, mean: Mean | None = None,
                resize: int | None = None) -> np.ndarray:
    """Photos preprocessed into one NCHW float32 batch."""
    return np.stack([preprocess_image(p, height, width, mean, resize) for p in paths]).astype(np.float32)


def gaussian_batch(shape: Sequence[int], n: int = GAUSSIAN_BATCH, seed: int = GAUSSIAN_SEED,
                   std: float = GAUSSIAN_STD) -> np.ndarray:
    """Seeded Gaussian input of per-sample shape ``shape[1:]`` and batch ``n``."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, *shape[1:])) * std).astype(np.float32)


@dataclass
class Inputs:
    """The batch every framework receives, and where it came from."""

    array: np.ndarray
    kind: str                                   # 'images' | 'gaussian'
    sources: list[str] = field(default_factory=list)
    mean: dict[str, Any] | None = None
    resize: int | None = None
    note: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": [int(d) for d in self.array.shape], "images": list(self.sources),
                "mean": self.mean, "resize_shorter": self.resize, "note": self.note}


def make_inputs(input_name: str, shape: Sequence[int], images: PathLike | Sequence[PathLike] | None = None,
                mean: PathLike | np.ndarray | None = None, mean_values: Sequence[float] | None = None,
                seed: int = GAUSSIAN_SEED) -> Inputs:
    """The validation batch for a net input of ``shape`` (N, C, H, W as declared).

    Photos (``images``, default: the packaged samples) when the input is a 3-channel 4-D blob; otherwise
    seeded Gaussian noise, with a note saying so (explicitly given images are then an error).
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) == 4 and shape[1] == 3:
        m = Mean.resolve(mean, mean_values)
        files = find_images(images)
        h, w = shape[2], shape[3]
        size = resize_size(h, w)
        return Inputs(image_batch(files, h, w, m, size), "images", [str(f) for f in files], m.describe(), size)
    if images is not None:
        raise Caffe2xError(f"photos need a 3-channel N x 3 x H x W input; the net's input {input_name!r} is "
                           f"{list(shape)} (drop {option('images')} to validate on seeded Gaussian input)")
    note = (f"input {input_name!r} is {list(shape)}, not 3-channel N x 3 x H x W: using seeded Gaussian input "
            f"(std {GAUSSIAN_STD:g}, seed {seed}) instead of photos")
    return Inputs(gaussian_batch(shape, seed=seed), "gaussian", [], None, None, note)
