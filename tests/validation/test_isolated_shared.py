"""The inputs a validation's framework children share: written once, mapped by each child, not copied."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from caffe2x import fixtures
from caffe2x.graph import pages
from caffe2x.validation.isolated import read_shared, write_shared


def test_a_child_reads_the_same_inputs_as_views_of_the_mapped_file(tmp_path: Path) -> None:
    graph = fixtures.graph("tiny")
    graph.tensors = {k: np.array(v) for k, v in graph.tensors.items()}  # writable, as a caffemodel's views are
    x = np.random.default_rng(0).standard_normal((2, *graph.inputs["data"][1:])).astype(np.float32)
    logits = np.arange(20, dtype=np.float32).reshape(2, 10)
    path = write_shared(tmp_path / "shared.pkl", graph, x, logits)
    shared = read_shared(path)
    assert shared.graph.to_json() == graph.to_json()
    assert sorted(shared.graph.tensors) == sorted(graph.tensors)
    for key, value in graph.tensors.items():
        got = shared.graph.tensors[key]
        assert got.dtype == value.dtype and np.array_equal(got, value), key
        assert pages.mapping(got) is not None, key  # a view of the file, not a copy in the heap
    assert np.array_equal(shared.x, x) and np.array_equal(shared.ref_logits, logits)
    before = path.read_bytes()
    shared.graph.tensors["conv1.weight"][...] = 7.0  # a child's own pages (copy-on-write)
    assert path.read_bytes() == before
    assert np.array_equal(read_shared(path).graph.tensors["conv1.weight"], graph.tensors["conv1.weight"])
    graph.tensors["conv1.weight"].flags.writeable = False  # a read-only array stays read-only, as in the parent
    assert not read_shared(write_shared(tmp_path / "ro.pkl", graph, x, logits)).graph.tensors["conv1.weight"].flags.writeable
