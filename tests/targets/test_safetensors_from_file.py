"""safetensors writes a mapped caffemodel's untouched tensors by reading the model file itself: the same
bytes as writing them from memory, a tensor changed in place keeps its change, and a model file that
changes on disk after the read is either ignored (replaced) or an error (cut short)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x.graph import pages
from caffe2x.targets import safetensors as st

pytestmark = pytest.mark.skipif(not (os.path.exists("/proc/self/pagemap") and hasattr(os, "preadv")),
                                reason="reading from the mapped file needs Linux /proc/self/pagemap and preadv")


def _copy(tiny_files, tmp_path: Path) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    model, deploy = (Path(shutil.copy(p, tmp_path / Path(p).name)) for p in tiny_files)
    return model, deploy


def _mapped_keys(graph) -> list[str]:  # type: ignore[no-untyped-def]
    return [k for k, v in graph.tensors.items() if pages.mapping(v) is not None]


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bytes ``os.preadv`` reads (the copy from the model file)."""
    seen: list[int] = []
    real = os.preadv

    def spy(fd, buffers, offset, *rest):  # type: ignore[no-untyped-def]
        n = real(fd, buffers, offset, *rest)
        seen.append(n)
        return n

    monkeypatch.setattr(os, "preadv", spy)
    return seen


def test_tensors_read_from_the_model_file_are_the_bytes_a_write_from_memory_gives(
        tiny_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    graph = caffe2x.load(*_copy(tiny_files, tmp_path))
    mapped = _mapped_keys(graph)
    assert mapped, "the tiny net's weights should be views of the mapped caffemodel"
    reads = _reads(monkeypatch)
    caffe2x.save(graph, tmp_path / "from-file.safetensors")
    assert sum(reads) == sum(graph.tensors[k].nbytes for k in mapped)  # every view went by the file
    heap = {k: np.array(v) for k, v in graph.tensors.items()}  # copies: nothing mapped
    st.stream(tmp_path / "from-memory.safetensors", heap, {"caffe2x.graph": graph.to_json()})
    assert (tmp_path / "from-file.safetensors").read_bytes() == (tmp_path / "from-memory.safetensors").read_bytes()


def test_a_tensor_changed_in_place_is_saved_with_its_new_values(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The map is copy-on-write: a changed view no longer shows the file, so it must not be read from it."""
    graph = caffe2x.load(*_copy(tiny_files, tmp_path))
    key = _mapped_keys(graph)[0]
    graph.tensors[key].reshape(-1)[0] = 1234.5
    assert not pages.unwritten(pages.mapping(graph.tensors[key]))
    caffe2x.save(graph, tmp_path / "changed.safetensors")
    back = caffe2x.load(tmp_path / "changed.safetensors")
    assert back.tensors[key].reshape(-1)[0] == np.float32(1234.5)
    assert all(np.array_equal(back.tensors[k], v) for k, v in graph.tensors.items())


def test_a_model_file_replaced_after_the_read_still_gives_what_was_read(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, deploy = _copy(tiny_files, tmp_path)
    graph = caffe2x.load(model, deploy)
    before = {k: np.array(v) for k, v in graph.tensors.items()}
    other = tmp_path / "other.caffemodel"
    other.write_bytes(b"\xff" * model.stat().st_size)
    os.replace(other, model)  # as an editor or a download would: a new file under the old name
    caffe2x.save(graph, tmp_path / "out.safetensors")
    back = caffe2x.load(tmp_path / "out.safetensors")
    assert all(np.array_equal(back.tensors[k], v) for k, v in before.items())


CUT_SHORT = r"""
import os, sys
import caffe2x
from caffe2x import Caffe2xError
model, deploy, out = sys.argv[1:4]
graph = caffe2x.load(model, deploy)
os.truncate(model, os.path.getsize(model) // 2)
try:
    caffe2x.save(graph, out)
except Caffe2xError as exc:
    print("refused:", exc)
    sys.stdout.flush()
    os._exit(0)  # the graph's views of the cut file must never be read (SIGBUS), not even by its collection
os._exit(3)
"""


def test_a_model_file_cut_short_after_the_read_is_an_error_and_no_file(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, deploy = _copy(tiny_files, tmp_path)
    out = tmp_path / "out.safetensors"
    proc = subprocess.run([sys.executable, "-c", CUT_SHORT, str(model), str(deploy), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "got shorter" in proc.stdout and not out.exists()
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".out*"))
