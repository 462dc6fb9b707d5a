"""Hostile and odd inputs of ``caffe2x evaluate``: image lists (a corpus of bad lines and a hypothesis
fuzz test), images Caffe's reader would decode one way (compared with OpenCV's ``imread``), and
decompression bombs refused before decoding."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caffe2x.errors import Caffe2xError
from caffe2x.validation.evaluate.inputs import (ListError, check_labels, image_set, parse_caffe_list,
                                                parse_path_list)

CORPUS = Path(__file__).parent / "corpus" / "evaluate_lists"


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("ok_*.txt")))
def test_good_lists_of_the_corpus_parse(name: str) -> None:
    entries = parse_caffe_list(CORPUS / name, Path("/root"))
    assert [(e.name, e.label, e.path) for e in entries] == [("a.png", 1, Path("/root/a.png")),
                                                            ("b c.png", 2, Path("/root/b c.png"))]


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("bad_*.txt")))
def test_bad_lists_of_the_corpus_are_one_line_naming_the_file(name: str) -> None:
    with pytest.raises(ListError) as info:
        parse_caffe_list(CORPUS / name, Path("/root"))
    message = str(info.value)
    assert "\n" not in message and str(CORPUS / name) in message
    if name != "bad_empty.txt":
        assert " line " in message


@pytest.mark.parametrize("text, expected", [
    ("a.png\n", "line 1: no label"),
    ("a.png 1\nb.png x\n", "line 2: label 'x' is not a non-negative integer"),
    ("a.png -3\n", "line 1: negative label -3"),
    ("../a.png 1\n", "leaves the image root"),
    ("/abs/a.png 1\n", "is absolute"),
    ("a\0.png 1\n", "line 1: contains a NUL byte"),
])
def test_each_bad_line_is_named(tmp_path: Path, text: str, expected: str) -> None:
    listing = tmp_path / "val.txt"
    listing.write_bytes(text.encode())
    with pytest.raises(ListError, match=expected):
        parse_caffe_list(listing, tmp_path)


def test_the_label_is_after_the_last_space_and_a_crlf_is_dropped(tmp_path: Path) -> None:
    listing = tmp_path / "val.txt"
    listing.write_bytes(b"my cat 2.jpg 7\r\n./x/../dog.jpg\t3\r\n")
    entries = parse_caffe_list(listing, tmp_path)
    assert [(e.name, e.label, e.line) for e in entries] == [("my cat 2.jpg", 7, 1), ("./x/../dog.jpg", 3, 2)]
    assert entries[1].path == tmp_path / "dog.jpg"


def test_a_label_past_the_nets_classes_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    listing = tmp_path / "val.txt"
    listing.write_text("a.png 3\na.png 10\n")
    images = image_set(tmp_path, listing)
    check_labels(images, 11)
    with pytest.raises(ListError, match=r"val.txt line 2: label 10 but the net has 10 classes"):
        check_labels(images, 10)


def test_a_file_of_paths_is_relative_to_its_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.png").write_bytes(b"")
    listing = tmp_path / "paths.txt"
    listing.write_text("d/a.png\n\n")
    images = image_set(listing)
    assert [e.path for e in images.entries] == [tmp_path / "d" / "a.png"] and not images.labelled
    listing.write_text("d/b.png\n")
    with pytest.raises(Caffe2xError, match=r"paths.txt line 1: image 'd/b.png' not found"):
        image_set(listing)


def test_a_folder_is_recursive_and_sorted_and_skips_other_files(tmp_path: Path) -> None:
    for name in ("b/z.jpg", "a.PNG", "b/a.jpeg", ".hidden/x.png", "notes.txt", "c/.x.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [e.name for e in image_set(tmp_path).entries] == ["a.PNG", "b/a.jpeg", "b/z.jpg"]
    with pytest.raises(Caffe2xError, match="no image files"):
        image_set(tmp_path / "c")


_LINE = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200),
                      st.lists(st.tuples(_LINE, st.one_of(st.integers(-5, 2**33).map(str), _LINE)), max_size=6)
                      .map(lambda rows: "".join(f"{p} {l}\n" for p, l in rows).encode("utf-8"))))
def test_fuzzed_lists_parse_or_fail_with_one_line(tmp_path: Path, data: bytes) -> None:
    listing = tmp_path / "fuzz.txt"
    listing.write_bytes(data)
    root = tmp_path / "root"
    try:
        entries = parse_caffe_list(listing, root)
    except ListError as exc:
        assert "\n" not in str(exc) and str(listing) in str(exc)
        return
    for e in entries:
        assert e.label is not None and 0 <= e.label < 2**31
        assert root in e.path.parents  # never outside the root
        assert "\0" not in e.name


# ---------------------------------------------------------------------------------------------- decoding
cv2 = pytest.importorskip("cv2")


def _same_as_opencv(path: Path) -> None:
    from caffe2x.validation.preprocess import load_image

    ours = np.asarray(load_image(path))[:, :, ::-1]
    theirs = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert theirs is not None
    np.testing.assert_array_equal(ours, theirs)


def _make(kind: str, path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(5)
    if kind == "grey16":
        cv2.imwrite(str(path), rng.integers(0, 65536, (9, 11), dtype=np.uint16))
    elif kind == "rgb16":
        cv2.imwrite(str(path), rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16))
    elif kind == "tiff16":
        cv2.imwrite(str(path), rng.integers(0, 65536, (9, 11), dtype=np.uint16))
    elif kind == "cmyk":
        Image.fromarray(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8), "CMYK").save(path, quality=100)
    elif kind == "grey":
        Image.fromarray(rng.integers(0, 256, (9, 11), dtype=np.uint8), "L").save(path)
    elif kind == "palette":
        img = Image.fromarray(rng.integers(0, 16, (9, 11), dtype=np.uint8), "P")
        img.putpalette([int(v) for v in rng.integers(0, 256, 768)])
        img.save(path, transparency=3)
    elif kind == "rgba":
        Image.fromarray(rng.integers(0, 256, (9, 11, 4), dtype=np.uint8), "RGBA").save(path)
    elif kind == "animated":
        frames = [Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)) for _ in range(3)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


@pytest.mark.parametrize("kind, suffix", [("grey16", ".png"), ("rgb16", ".png"), ("tiff16", ".tif"), ("cmyk", ".jpg"),
                                          ("grey", ".png"), ("palette", ".png"), ("rgba", ".png"),
                                          ("animated", ".gif")])
def test_images_decode_as_opencvs_imread_color(tmp_path: Path, kind: str, suffix: str) -> None:
    _same_as_opencv(_make(kind, tmp_path / f"{kind}{suffix}"))


def test_float_images_are_refused_by_mode(tmp_path: Path) -> None:
    from PIL import Image

    from caffe2x.validation.preprocess import load_image

    Image.fromarray(np.ones((4, 4), np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(Caffe2xError, match="mode F is not read"):
        load_image(tmp_path / "f.tif")


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [100_000, 9_000])
def test_a_decompression_bomb_is_refused_by_the_pixel_limit_before_decoding(tmp_path: Path, side: int) -> None:
    import tracemalloc

    from caffe2x.graph.checks import SizeLimitError
    from caffe2x.validation.preprocess import load_image

    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(side, side))
    assert path.stat().st_size < 200
    tracemalloc.start()
    try:
        with pytest.raises(SizeLimitError, match="pixel"):
            load_image(path)
        assert tracemalloc.get_traced_memory()[1] < 16 << 20  # nothing the size of the image was allocated
    finally:
        tracemalloc.stop()
