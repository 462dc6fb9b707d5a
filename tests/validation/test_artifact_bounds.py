"""Bounded reading of artifacts: a .pt archive, an .h5 file or an image is judged by what it declares
before any loader allocates it; an ONNX artifact onnxruntime refuses is an artifact failure."""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from caffe2x.errors import Caffe2xError
from caffe2x.graph import bounds
from caffe2x.graph.checks import SizeLimitError


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


# --------------------------------------------------------------------------- through `validate --against`
import subprocess  # noqa: E402
import sys  # noqa: E402


def against(tiny_files, *artifacts: Path) -> subprocess.CompletedProcess[str]:
    """``validate --against`` in a child limited to 2 GiB of address space (torch alone maps ~0.7 GB):
    reading any of the hostile artifacts below would need more."""
    import os
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    flags = [a for p in artifacts for a in ("--against", str(p))]
    return subprocess.run([sys.executable, "-m", "caffe2x", "validate", str(tiny_files[0]), "-p", str(tiny_files[1]),
                           "--frameworks", "numpy", *flags], capture_output=True, text=True,
                          timeout=300, preexec_fn=cap, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


def test_hostile_artifacts_are_artifact_failures_within_an_address_space_limit(tiny_files, tmp_path: Path) -> None:
    """One run checks them all (each is reported on its own): a .pt bomb, .h5 files with a sparse
    3.4 GiB dataset, a dangling weight name or strings, and an ONNX model with an unknown op."""
    import h5py
    import onnx

    import caffe2x

    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("bomb/data/0", b"\0" * (16 << 20))
    sparse = tmp_path / "sparse.h5"
    with h5py.File(sparse, "w") as f:
        f.attrs["layer_names"] = np.array([b"conv1"])
        f.create_group("conv1").create_dataset("conv1/kernel", shape=(30000, 30000), dtype="f4")
    dangling = tmp_path / "dangling.h5"
    with h5py.File(dangling, "w") as f:
        f.attrs["layer_names"] = np.array([b"conv1"])
        f.create_group("conv1").attrs["weight_names"] = np.array([b"conv1/kernel"])
    text = tmp_path / "text.h5"
    with h5py.File(text, "w") as f:
        f.attrs["layer_names"] = np.array([b"conv1"])
        f.create_group("conv1").create_dataset("conv1/kernel", data=np.array([b"text"]))
    unknown_op = tmp_path / "unknown_op.onnx"
    caffe2x.save(caffe2x.load(*tiny_files), unknown_op)
    model = onnx.load(str(unknown_op))
    model.graph.node[0].op_type = "Bogus"
    onnx.save(model, str(unknown_op))

    proc = against(tiny_files, bomb, sparse, dangling, text, unknown_op)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in proc.stderr and "internal error" not in out
    for pattern in ("bomb.pt: archive entry 'bomb/data/0' inflates",
                    "sparse.h5: HDF5 datasets declares 3.4 GiB",
                    "dangling.h5: layer 'conv1' lists weight 'conv1/kernel', which the file does not hold",
                    "text.h5: dataset 'conv1/conv1/kernel' holds |S4 data, not numbers",
                    "onnxruntime refuses the model"):
        assert pattern in out, (pattern, out)


def test_a_sparse_hdf5_caffemodel_is_refused_before_reading(tiny_files, tmp_path: Path, monkeypatch) -> None:
    import h5py

    import caffe2x

    model = tmp_path / "sparse.caffemodel.h5"
    with h5py.File(model, "w") as f:
        f.create_group("data").create_group("conv1").create_dataset("0", shape=(30000, 30000), dtype="f4")
    monkeypatch.setenv("CAFFE2X_MAX_BYTES", "1G")
    with pytest.raises(SizeLimitError, match=r"sparse.caffemodel.h5: HDF5 datasets declares 3.4 GiB"):
        caffe2x.load(model, tiny_files[1])
