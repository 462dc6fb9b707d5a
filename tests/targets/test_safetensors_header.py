"""caffe2x streams its safetensors files itself; the bytes are exactly what the library's ``save_file`` writes."""
from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import caffe2x
from caffe2x import fixtures
from caffe2x.errors import Caffe2xError
from caffe2x.targets import safetensors as st

#: names the library orders by UTF-8 bytes and JSON-escapes (quotes, control characters, non-ASCII)
ARRAYS = {
    "b": np.arange(6, dtype=np.float32).reshape(2, 3),
    "a": np.ones(5, dtype=np.float16),
    "Z": np.zeros(0, dtype=np.float32),
    "é\"\\\n\x01/\x7f\u2028名": np.arange(3, dtype=np.float32),
    "c": np.full(2, 1.5, dtype=ml_dtypes.bfloat16),
    "aa": np.zeros((1,), dtype=np.float32),
    "B": np.zeros((0, 3), dtype=np.float16),
    "big": np.random.default_rng(0).standard_normal(70_001).astype(np.float32),
}
METADATA = {"caffe2x.graph": '{"x": "é\\u00e9\\n\t\x00\u2028"}'}


def test_streamed_file_is_byte_for_byte_what_save_file_writes(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(st, "CHUNK", 4096)  # several chunks per big tensor, the header's padding too
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "lib.safetensors"
    st.stream(ours, ARRAYS, METADATA)
    save_file(ARRAYS, str(theirs), metadata=METADATA)
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_a_converted_caffemodel_is_byte_for_byte_what_save_file_writes(tmp_path: Path, monkeypatch, dtype: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(st, "CHUNK", 8192)  # releases the mapped pages many times on a small model
    model, deploy = fixtures.write_model("googlenet_style_names", tmp_path)
    graph = caffe2x.load(model, deploy)
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "lib.safetensors"
    caffe2x.save(graph, ours, dtype=dtype)
    save_file({k: st._cast(v, dtype) for k, v in graph.tensors.items()}, str(theirs),
              metadata={"caffe2x.graph": graph.to_json()})
    assert ours.read_bytes() == theirs.read_bytes()
    before = {k: v.copy() for k, v in graph.tensors.items()}
    caffe2x.save(graph, tmp_path / "again.safetensors")  # the released views still read the file's values
    assert all(np.array_equal(graph.tensors[k], before[k]) for k in before)


def test_a_longer_existing_file_is_cut_to_the_new_one(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "lib.safetensors"
    ours.write_bytes(b"x" * 1_000_000)
    small = {"w": np.arange(4, dtype=np.float32)}
    st.stream(ours, small, METADATA)
    save_file(small, str(theirs), metadata=METADATA)
    assert ours.read_bytes() == theirs.read_bytes()


def test_a_name_that_is_not_unicode_text_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Caffe2xError, match="not valid Unicode text"):
        st.stream(tmp_path / "x.safetensors", {"bad\ud800": np.zeros(2, dtype=np.float32)}, {})
