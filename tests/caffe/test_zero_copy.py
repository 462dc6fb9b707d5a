"""One copy of the weights: targets write from the graph's (mapped) arrays instead of copying them."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def mapped_graph(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    model, deploy = fixtures.write_model("googlenet_style_names", tmp_path_factory.mktemp("zc"))
    return caffe2x.load(model, deploy)


def test_pt_state_dict_shares_the_graph_memory(mapped_graph) -> None:  # type: ignore[no-untyped-def]
    from caffe2x.targets.torch import node_module_names, state_dict

    state = state_dict(mapped_graph)
    modules = dict(zip((n.name for n in mapped_graph.nodes), node_module_names(mapped_graph)))
    shared = 0
    for key, arr in mapped_graph.tensors.items():
        layer, role = key.rsplit(".", 1)
        tensor = state[f"{modules[layer]}.{role}"]
        assert tensor.data_ptr() == arr.ctypes.data and np.array_equal(tensor.numpy(), arr)
        shared += 1
    assert shared == len(mapped_graph.tensors) > 0


def test_to_torch_owns_its_weights_so_training_leaves_the_graph_alone(mapped_graph) -> None:  # type: ignore[no-untyped-def]
    before = {k: v.copy() for k, v in mapped_graph.tensors.items()}
    module = caffe2x.to_torch(mapped_graph)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    assert all(np.array_equal(mapped_graph.tensors[k], v) for k, v in before.items())
    shared = caffe2x.to_torch(mapped_graph.copy(before), share_memory=True)
    with torch.no_grad():
        next(iter(shared.parameters())).mul_(0.0)
    assert any(not v.any() for v in before.values())  # shared: the update shows in the arrays


def test_read_only_arrays_are_copied_not_shared_and_do_not_warn() -> None:
    from caffe2x.targets.torch.ops import as_tensor

    arr = np.frombuffer(np.arange(6, dtype=np.float32).tobytes(), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = as_tensor(arr, share=True)
    assert t.data_ptr() != arr.ctypes.data and t.tolist() == arr.tolist()
    writable = np.arange(6, dtype=np.float32)
    assert as_tensor(writable, share=True).data_ptr() == writable.ctypes.data
    assert as_tensor(writable, share=False).data_ptr() != writable.ctypes.data


def test_written_pt_holds_exactly_the_caffemodel_values(mapped_graph, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from caffe2x.targets.torch import state_dict

    out = tmp_path / "net.pt"
    caffe2x.save(mapped_graph, out)
    loaded = torch.load(out, weights_only=True)
    expected = state_dict(mapped_graph)
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_streamed_safetensors_hold_what_the_library_writes(mapped_graph, tmp_path: Path, dtype: str) -> None:  # type: ignore[no-untyped-def]
    from safetensors import deserialize
    from safetensors.numpy import save_file

    from caffe2x.targets.safetensors import _cast

    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "lib.safetensors"
    caffe2x.save(mapped_graph, ours, dtype=dtype)
    save_file({k: _cast(v, dtype) for k, v in mapped_graph.tensors.items()}, theirs)
    a, b = dict(deserialize(ours.read_bytes())), dict(deserialize(theirs.read_bytes()))
    assert a.keys() == b.keys() == mapped_graph.tensors.keys()
    assert all(a[k] == b[k] for k in a)  # dtype tag, shape and bytes
    assert caffe2x.load(ours).structure() == mapped_graph.structure()


def test_convert_to_safetensors_imports_no_framework_and_no_validator(tmp_path: Path) -> None:
    import subprocess
    import sys

    model, deploy = fixtures.write_model("tiny", tmp_path)
    probe = ("import sys; from caffe2x.cli import main; "
             f"rc = main(['convert', {str(model)!r}, '--prototxt', {str(deploy)!r}, '--to', 'safetensors', '-q']); "
             "print(rc, sorted(m for m in ('torch', 'tensorflow', 'keras', 'onnx', 'caffe2x.validation.validator') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[-2] == "0 []" and model.with_suffix(".safetensors").is_file()


def test_pt_writer_hands_torch_save_the_graph_memory_itself(mapped_graph, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """What reaches ``torch.save`` (after the dtype cast, which is a no-op for float32) is the
    mapped arrays, not a copy of them."""
    from caffe2x.targets.torch import files

    saved = {}
    real_save = torch.save
    monkeypatch.setattr(files.torch, "save", lambda obj, f: (saved.update(obj), real_save(obj, f)))
    caffe2x.save(mapped_graph, tmp_path / "net.pt")
    pointers = {t.untyped_storage().data_ptr() + t.storage_offset() * t.element_size() for t in saved.values()}
    arrays = {a.__array_interface__["data"][0] for a in mapped_graph.tensors.values()}
    assert len(saved) == len(mapped_graph.tensors) and pointers == arrays


def test_identical_pt_rerun_is_compared_in_chunks_not_whole_members(tmp_path: Path) -> None:
    """Two torch archives differ only by their random serialization id; telling they are the same
    output must not read both into memory (it doubled the peak RSS of a rerun of convert --to torch)."""
    import tracemalloc

    from caffe2x.fileio import same_content

    big = torch.arange(1 << 22, dtype=torch.float32)  # 16 MB member
    a, b, c = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    torch.save({"w": big}, a)
    torch.save({"w": big}, b)
    changed = big.clone()
    changed[-1] = -1.0
    torch.save({"w": changed}, c)
    assert a.read_bytes() != b.read_bytes()  # the serialization ids differ
    tracemalloc.start()
    try:
        assert same_content(a, b)
        peak = tracemalloc.get_traced_memory()[1]
        assert not same_content(a, c)
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # chunks, not the 2 x 16 MB members


def test_torch_runner_computes_with_the_files_tensors_only(tmp_path: Path) -> None:
    """validate's torch runner builds the module without weights of its own (graph views moved to the
    meta device, nothing copied) and assigns the file's (mapped) tensors: a value changed in the file
    shows in the output, the parameters are the loaded tensors, and the graph is untouched."""
    from caffe2x.targets import get

    graph = fixtures.graph("tiny")
    before = {k: v.copy() for k, v in graph.tensors.items()}
    path = tmp_path / "tiny.pt"
    caffe2x.save(graph, path)
    state = torch.load(path, weights_only=True)
    state["fc10.bias"] += 1.0  # the file now says something else
    torch.save(state, path)
    runner = get("torch").load(path, graph)
    x = np.random.default_rng(0).standard_normal(graph.inputs["data"]).astype(np.float32)
    got = runner.run(x, ["fc10"])["fc10"]
    changed = graph.copy({**graph.tensors, "fc10.bias": graph.tensors["fc10.bias"] + 1.0})
    assert np.abs(got - caffe2x.run(changed, x, outputs="fc10")).max() <= 1e-5 * np.abs(got).max()
    module = runner.module(["fc10"])
    assert module.conv1.weight.data_ptr() == runner.state["conv1.weight"].data_ptr()
    assert all(np.array_equal(graph.tensors[k], v) for k, v in before.items())
    del state["conv1.bias"]
    torch.save(state, path)
    with pytest.raises(caffe2x.Caffe2xError, match=r"load_state_dict\(strict=True\) failed"):
        get("torch").load(path, graph).run(x, ["fc10"])
