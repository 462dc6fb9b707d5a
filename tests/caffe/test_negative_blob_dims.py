"""Blob dims that multiply to the right count but cannot be a shape (negative, or wrapping numpy's
int64 product) are one error naming the layer, the blob and the dims, on the zero-copy path and the
plain one alike, in both shape spellings (``shape { dim }`` and legacy ``num/channels/height/width``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe import reader, wire
from caffe2x.caffe.proto import caffe_pb2

TEXT = fixtures.prototxt_for("tiny")
MODEL = fixtures.synthesize(TEXT, 0)
LAYER = "res2a_branch1"  # a 1x1 convolution: weight 16 x 8 x 1 x 1 (128 floats, a zero-copy view)


def with_dims(dims: list[int], legacy: bool = False, layer: str = LAYER, blob: int = 0) -> bytes:
    net = caffe_pb2.NetParameter.FromString(MODEL)
    (l,) = [l for l in net.layer if l.name == layer]
    b = l.blobs[blob]
    b.ClearField("shape")
    if legacy:
        b.num, b.channels, b.height, b.width = dims
    else:
        b.shape.dim.extend(dims)
    return net.SerializeToString()


CASES = {
    "modern": ([-16, -8, 1, 1], False, r"blob shape \[-16, -8, 1, 1\] has a negative dimension"),
    "legacy": ([-16, -8, 1, 1], True, r"\[-16, -8, 1, 1\] \(legacy num, channels, height, width\) has a negative"),
    "one negative": ([16, -8, 1, -1], False, r"\[16, -8, 1, -1\] has a negative dimension"),
    # 128 * (2**57 + 1) = 2**64 + 128: numpy's int64 product wraps around to the payload's 128 floats
    "wrapping product": ([128, 2**57 + 1], False, r"shape \[128, 144115188075855873\] holds 128 values"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("prototxt", [True, False], ids=["with prototxt", "caffemodel alone"])
def test_impossible_blob_dims_name_the_layer_blob_and_dims(case: str, prototxt: bool, tmp_path: Path) -> None:
    dims, legacy, message = CASES[case]
    data = with_dims(dims, legacy)
    assert wire.plan(data) is not None  # the zero-copy walker sees the payload (the path that crashed)
    model = tmp_path / "neg.caffemodel"
    model.write_bytes(data)
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(TEXT)
    kwargs = {"prototxt": deploy} if prototxt else {"input_shape": (1, 3, 32, 32)}
    with pytest.raises(caffe2x.Caffe2xError, match=rf"layer '{LAYER}' blob 0 \(weight\) in the caffemodel: .*{message}"):
        caffe2x.load(model, **kwargs)


def test_a_small_blob_left_to_the_plain_path_is_refused_the_same_way(tmp_path: Path) -> None:
    """conv1's bias (8 floats) is below the view threshold: parsed by the compiled schema instead."""
    net = caffe_pb2.NetParameter.FromString(MODEL)
    (conv1,) = [l for l in net.layer if l.name == "conv1"]
    assert 4 * len(conv1.blobs[1].data) < wire.MIN_VIEW_BYTES
    data = with_dims([-2, -4], layer="conv1", blob=1)
    with pytest.raises(caffe2x.Caffe2xError, match=r"layer 'conv1' blob 1 \(bias\) in the caffemodel: blob shape \[-2, -4\]"):
        reader.read_bytes(data, TEXT)


def test_cli_prints_one_line_and_exits_2_with_no_output(tmp_path: Path) -> None:
    model = tmp_path / "neg.caffemodel"
    model.write_bytes(with_dims([-16, -8, 1, 1], legacy=True))
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(TEXT)
    out = tmp_path / "out.safetensors"
    proc = subprocess.run([sys.executable, "-m", "caffe2x", "convert", str(model), "--prototxt", str(deploy),
                           "-o", str(out), "-q"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert f"layer '{LAYER}' blob 0 (weight)" in proc.stderr and "[-16, -8, 1, 1]" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.prototxt", "neg.caffemodel"]
