"""safetensors target: one file, keys by Caffe layer name, and the graph itself in the metadata."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

import caffe2x
from caffe2x import Caffe2xError


def test_round_trip_is_bit_exact_and_graph_equal(resnet50_graph, tmp_path: Path) -> None:
    out = tmp_path / "r50.safetensors"
    assert caffe2x.save(resnet50_graph, out) == []
    back = caffe2x.load(out)
    assert back.equals(resnet50_graph)
    assert back.structure() == resnet50_graph.structure()
    for key, arr in resnet50_graph.tensors.items():
        assert back.tensors[key].tobytes() == arr.tobytes()


def test_keys_are_layer_name_dot_role_and_load_with_safe_open(resnet50_graph, tmp_path: Path) -> None:
    out = tmp_path / "r50.safetensors"
    caffe2x.save(resnet50_graph, out)
    with safe_open(str(out), framework="np") as f:
        keys = set(f.keys())
        assert {"conv1.weight", "conv1.bias", "bn_conv1.running_mean", "bn_conv1.running_var",
                "scale_conv1.weight", "scale_conv1.bias", "fc1000.weight", "fc1000.bias"} <= keys
        assert "res2a_branch1.bias" not in keys
        assert f.get_tensor("fc1000.weight").shape == (1000, 2048)
        assert list(f.metadata()) == ["caffe2x.graph"]
    assert keys == set(resnet50_graph.tensors)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_the_same_conversion_writes_the_same_bytes(tiny_files, tmp_path: Path, dtype: str) -> None:
    """Reproducible files (checksums in CI): saves of one graph are byte-identical (safetensors writes
    its metadata in hash order, so this holds only with a single metadata key)."""
    graph = caffe2x.load(*tiny_files)
    files = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for f in files:
        caffe2x.save(graph, f, dtype=dtype)
    assert len({f.read_bytes() for f in files}) == 1


@pytest.mark.parametrize("dtype,tol", [("float16", 1e-3), ("bfloat16", 8e-3)])
def test_reduced_precision_is_stored_and_its_logit_error_reported(resnet50_graph, tmp_path: Path, dtype, tol) -> None:
    out = tmp_path / f"r50-{dtype}.safetensors"
    notes = caffe2x.save(resnet50_graph, out, dtype=dtype)
    assert len(notes) == 1 and dtype in notes[0] and "fc1000" in notes[0]
    with safe_open(str(out), framework="np") if dtype == "float16" else open(out, "rb") as f:
        if dtype == "float16":
            assert f.get_tensor("conv1.weight").dtype == np.float16
    back = caffe2x.load(out)
    w, w0 = back.tensors["conv1.weight"], resnet50_graph.tensors["conv1.weight"]
    assert w.dtype == np.float32
    assert np.abs(w - w0).max() <= tol * np.abs(w0).max()
    assert not np.array_equal(w, w0)


def test_plain_safetensors_without_graph_is_refused(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, dtype=np.float32)}, path)
    with pytest.raises(Caffe2xError, match="no caffe2x graph"):
        caffe2x.load(path)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(Caffe2xError, match="not a valid safetensors"):
        caffe2x.load(path)


def test_graph_equality_is_bit_identity_across_chunks(tiny_files) -> None:  # type: ignore[no-untyped-def]
    """Graph.equals (the numpy target's 'same graph as the reference' check) compares bits without copying
    whole tensors: -0.0 differs from 0.0, a NaN equals the same NaN, a difference past the first chunk
    counts."""
    from caffe2x.graph.ir import _same_bytes

    graph = caffe2x.load(*tiny_files)
    key = next(iter(graph.tensors))
    for change in ("negative zero", "nan"):
        t = graph.tensors[key].copy()
        if change == "negative zero":
            t.reshape(-1)[0] = 0.0
            other = t.copy()
            other.reshape(-1)[0] = -0.0
            assert not graph.copy({**graph.tensors, key: t}).equals(graph.copy({**graph.tensors, key: other}))
        elif change == "nan":
            t.reshape(-1)[0] = np.nan
            assert graph.copy({**graph.tensors, key: t}).equals(graph.copy({**graph.tensors, key: t.copy()}))
    big = np.zeros(3 << 20, np.float32)
    late = big.copy()
    late[-1] = 1.0
    assert _same_bytes(big, big.copy(), chunk=1 << 20) and not _same_bytes(big, late, chunk=1 << 20)
