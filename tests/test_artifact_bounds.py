"""Bounded reading of artifacts: a .pt archive, an .h5 file or an image is judged by what it declares
before any loader allocates it; an ONNX artifact onnxruntime refuses is an artifact failure."""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from caffe2x import bounds
from caffe2x.checks import SizeLimitError
from caffe2x.errors import Caffe2xError


def test_zip_entries_that_inflate_far_beyond_their_size_are_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb/data/0", b"\0" * (16 << 20))  # 16 MiB of zeros deflate to ~16 KiB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(SizeLimitError, match=r"bomb.pt: archive entry 'bomb/data/0' inflates [0-9,]+ bytes to 16,777,216 \(more than 100x\)"):
        bounds.check_zip_archive(bomb)


def test_zip_archives_declaring_more_than_the_net_needs_are_refused(tmp_path: Path, monkeypatch) -> None:
    big = tmp_path / "big.pt"
    with zipfile.ZipFile(big, "w") as z:
        z.writestr("big/data/0", np.zeros(3 << 20, np.float32).tobytes())  # 12 MiB stored
    bounds.check_zip_archive(big, expected_bytes=8 << 20)  # a net of 8 MiB may bring 12 MiB
    with pytest.raises(SizeLimitError, match=r"big.pt: archive \(1 entries\) declares 12.0 MiB"):
        monkeypatch.setattr(bounds, "SLACK", 0)
        bounds.check_zip_archive(big, expected_bytes=1 << 20)  # 4 x 1 MiB


def test_sparse_h5_datasets_are_refused_by_declared_size_and_strings_by_type(tmp_path: Path) -> None:
    import h5py

    sparse = tmp_path / "sparse.h5"
    with h5py.File(sparse, "w") as f:
        f.create_dataset("layer/layer/kernel", shape=(30000, 30000), dtype="f4")  # nothing written
    assert sparse.stat().st_size < 200_000
    with pytest.raises(SizeLimitError, match=r"sparse.h5: HDF5 datasets declares 3.4 GiB"):
        bounds.check_h5(sparse, expected_bytes=1 << 20)
    strings = tmp_path / "strings.h5"
    with h5py.File(strings, "w") as f:
        f.create_dataset("layer/layer/kernel", data=np.array([b"not", b"numbers"]))
    with pytest.raises(Caffe2xError, match=r"strings.h5: dataset 'layer/layer/kernel' holds \|S7 data, not numbers"):
        bounds.check_h5(strings)
    (tmp_path / "junk.h5").write_bytes(b"junk" * 100)
    with pytest.raises(Caffe2xError, match="junk.h5 is not a readable HDF5 file"):
        bounds.check_h5(tmp_path / "junk.h5")
