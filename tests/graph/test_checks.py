"""One validation pass for every graph: hostile prototxts, graph metadata and library arguments give a
Caffe2xError naming the file and layer, never a bare Python error; sizes are refused before allocating."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x.errors import Caffe2xError
from caffe2x.graph import checks
from caffe2x.graph.checks import GraphError, SizeLimitError

HEAD = 'name: "n"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'


def conv(params: str, bottom: str = "data") -> str:
    return f'layer {{ name: "c" type: "Convolution" bottom: "{bottom}" top: "c" convolution_param {{ {params} }} }}\n'


def load_text(tmp_path: Path, text: str, **kw):  # type: ignore[no-untyped-def]
    p = tmp_path / "net.prototxt"
    p.write_text(text)
    return caffe2x.load(None, p, **kw)


@pytest.mark.parametrize("body,pattern", [
    (conv("num_output: 4 kernel_size: 3 stride: 0"), r"'c' \(Convolution\): stride must be in 1\.\."),
    (conv("num_output: 4 kernel_size: 0"), r"'c' weight would have the empty shape"),
    (conv("num_output: 4 kernel_size: 3 dilation: 0"), r"dilation must be in 1\.\."),
    (conv("num_output: 4 kernel_size: 3 group: 2"), r"divisible by group 2"),
    (conv("num_output: 0 kernel_size: 3"), r"empty shape|num_output"),
    ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { kernel_size: 2 stride: 0 } }',
     r"'p' \(Pooling\): stride must be in 1\.\."),
    ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { kernel_size: 0 } }',
     r"'p' \(Pooling\): .*kernel \[0, 0\]"),
    ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { kernel_size: 2 pad: 2 } }',
     r"pad \[2, 2\] must be smaller than kernel"),
    ('layer { name: "k" type: "Concat" top: "k" }', r"'k' \(Concat\) has no bottom"),
    ('layer { name: "s" type: "Split" top: "s" }', r"'s' \(Split\) has no bottom"),
    ('layer { name: "s" type: "Split" bottom: "ghost" top: "s" }', r"'s' reads blob 'ghost'"),
    ('layer { name: "r" type: "ReLU" bottom: "ghost" top: "r" }', r"'r' reads blob 'ghost'"),
    ('layer { name: "r" type: "ReLU" bottom: "data" }', r"'r' \(ReLU\) has no top"),
    ('layer { name: "f" type: "Flatten" bottom: "data" top: "f" flatten_param { axis: 7 } }', r"axis 7 is out of range"),
    ('layer { name: "s" type: "Softmax" bottom: "data" top: "s" softmax_param { axis: -9 } }', r"axis -9 is out of range"),
    ('layer { name: "l" type: "LRN" bottom: "data" top: "l" lrn_param { local_size: 4 } }', r"local_size must be odd"),
])
def test_bad_prototxt_attributes_are_graph_errors_naming_file_and_layer(tmp_path: Path, body: str, pattern: str) -> None:
    with pytest.raises(Caffe2xError, match=pattern) as info:
        load_text(tmp_path, HEAD + body)
    assert "net.prototxt" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("shape,pattern", [
    ("dim: 1000000000 dim: 3 dim: 224 dim: 224", r"input 'data' of shape \[1000000000, 3, 224, 224\] needs 547\.6 TiB"),
    ("dim: -1 dim: 3 dim: 8 dim: 8", r"invalid shape \[-1, 3, 8, 8\]"),
    ("dim: 1 dim: 3 dim: 4294967296 dim: 1", r"outside 1\.\.2147483647"),
])
def test_impossible_input_shapes_are_refused_before_allocating(tmp_path: Path, shape: str, pattern: str) -> None:
    text = f'input: "data"\ninput_shape {{ {shape} }}\nlayer {{ name: "r" type: "ReLU" bottom: "data" top: "r" }}\n'
    with pytest.raises(Caffe2xError, match=pattern):
        load_text(tmp_path, text)


def test_huge_weightless_layers_are_refused_before_allocating(tmp_path: Path) -> None:
    text = ('input: "data"\ninput_shape { dim: 1 dim: 65536 }\nlayer { name: "fc" type: "InnerProduct" '
            'bottom: "data" top: "fc" inner_product_param { num_output: 2097152 } }\n')
    with pytest.raises(SizeLimitError, match=r"layer 'fc' weight tensor \[2097152, 65536\].*512\.0 GiB.*CAFFE2X_MAX_BYTES"):
        load_text(tmp_path, text)
    text = HEAD + conv("num_output: 16777216 kernel_size: 7")
    with pytest.raises(SizeLimitError, match=r"layer 'c' weight tensor \[16777216, 3, 7, 7\] .*9\.2 GiB"):
        load_text(tmp_path, text)


def test_the_limit_is_raised_and_lowered_by_env_var_and_argument(tmp_path: Path, tiny_files, monkeypatch) -> None:
    with pytest.raises(SizeLimitError, match=r"over the 1000 B limit"):
        caffe2x.load(*tiny_files, max_bytes=1000)
    monkeypatch.setenv("CAFFE2X_MAX_BYTES", "2K")
    with pytest.raises(SizeLimitError, match=r"over the 2\.0 KiB limit"):
        caffe2x.load(*tiny_files)
    graph = caffe2x.load(*tiny_files, max_bytes=1 << 30)  # the argument wins over the environment
    monkeypatch.setenv("CAFFE2X_MAX_BYTES", "1G")
    x = np.zeros((1, *graph.inputs["data"][1:]), np.float32)
    caffe2x.run(graph, x)
    with pytest.raises(SizeLimitError, match=r"forward pass .* at batch 100000 needs"):
        caffe2x.run(graph, np.broadcast_to(np.float32(0), (100000, *x.shape[1:])))
    monkeypatch.setenv("CAFFE2X_MAX_BYTES", "lots")
    with pytest.raises(Caffe2xError, match=r"CAFFE2X_MAX_BYTES='lots' is not a size"):
        caffe2x.load(*tiny_files)


# --------------------------------------------------------------------------- graph metadata
@pytest.fixture(scope="module")
def tiny_structure(tiny_files) -> tuple[dict, dict]:  # type: ignore[type-arg]
    graph = caffe2x.load(*tiny_files)
    return graph.structure(), dict(graph.tensors)


def _with_metadata(tmp_path: Path, tensors: dict, text: str) -> Path:  # type: ignore[type-arg]
    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    save_file(tensors, path, metadata={"caffe2x.graph": text})
    return path


def _mutate(structure: dict, how: str) -> str:  # type: ignore[type-arg]
    d = json.loads(json.dumps(structure))
    conv = d["nodes"][0]
    if how == "list":
        return "[]"
    if how == "deep":
        return "[" * 10000 + "]" * 10000
    if how == "not json":
        return '{"format": '
    if how.startswith("lacks "):
        del d[how[6:]]
    elif how == "node lacks attrs":
        del conv["attrs"]
    elif how == "node is a number":
        d["nodes"][0] = 5
    elif how == "param of wrong shape":
        conv["params"]["weight"] = d["nodes"][1]["params"]["running_mean"]
    elif how == "param missing":
        conv["params"]["weight"] = "nowhere.weight"
    elif how == "dangling input":
        d["nodes"][1]["inputs"] = ["ghost"]
    elif how == "stride 0":
        conv["attrs"]["stride"] = [0, 0]
    elif how == "kernel a string":
        conv["attrs"]["kernel"] = "3"
    elif how == "attr missing":
        del conv["attrs"]["pad"]
    elif how == "unknown op":
        conv["op"] = "Bogus"
    elif how == "huge input":
        d["inputs"]["data"] = [10**9, 3, 224, 224]
    elif how == "shape lie":
        d["shapes"][conv["outputs"][0]] = [1, 2, 3, 4]
    elif how == "dangling output":
        d["outputs"] = ["ghost"]
    elif how == "axis out of range":
        scale = next(n for n in d["nodes"] if n["op"] == "Scale")
        scale["attrs"]["axis"] = 7
    elif how == "value written twice":
        d["nodes"][1]["outputs"] = list(conv["outputs"])
    elif how == "nan attribute":
        bn = next(n for n in d["nodes"] if n["op"] == "BatchNorm")
        bn["attrs"]["eps"] = float("nan")
    elif how == "tensor shape lie":
        first = next(iter(d["tensors"]))
        d["tensors"][first]["shape"] = [7]
    else:  # pragma: no cover
        raise ValueError(how)
    return json.dumps(d)


@pytest.mark.parametrize("how,pattern", [
    ("list", "graph metadata should be an object, got a list"),
    ("deep", "nested 10000 deep"),
    ("not json", "not valid JSON"),
    ("lacks nodes", "lacks the key 'nodes'"),
    ("lacks shapes", "lacks the key 'shapes'"),
    ("lacks tensors", "lacks the key 'tensors'"),
    ("node lacks attrs", "node 0 ('conv1') lacks 'attrs'"),
    ("node is a number", "node 0 should be an object, got an integer"),
    ("param of wrong shape", "layer 'conv1' (Convolution) weight has shape"),
    ("param missing", "names tensor 'nowhere.weight'"),
    ("dangling input", "reads 'ghost', which nothing produces"),
    ("stride 0", "'conv1' (Convolution): stride must be in 1.."),
    ("kernel a string", "kernel must be integers, got '3'"),
    ("attr missing", "lacks the attribute 'pad'"),
    ("unknown op", "unsupported op 'Bogus' in layer 'conv1'"),
    ("huge input", "needs 547.6 TiB"),
    ("shape lie", "is stored with shape [1, 2, 3, 4]"),
    ("dangling output", "output 'ghost' is not produced"),
    ("axis out of range", "axis 7 is out of range"),
    ("value written twice", "which is already produced"),
    ("nan attribute", "eps must be a finite number"),
    ("tensor shape lie", "the graph records [7]"),
])
def test_graph_metadata_mutations_are_refused(tmp_path: Path, tiny_structure, how: str, pattern: str) -> None:
    structure, tensors = tiny_structure
    path = _with_metadata(tmp_path, tensors, _mutate(structure, how))
    with pytest.raises(Caffe2xError) as info:
        caffe2x.load(path)
    assert pattern in str(info.value), str(info.value)
    assert str(path) in str(info.value)


def test_unmutated_metadata_loads_and_converts(tmp_path: Path, tiny_structure) -> None:
    structure, tensors = tiny_structure
    graph = caffe2x.load(_with_metadata(tmp_path, tensors, json.dumps(structure)))
    assert len(graph.nodes) == len(structure["nodes"])


def test_bad_metadata_gives_one_line_error_and_no_onnx_file(tmp_path: Path, tiny_structure) -> None:
    structure, tensors = tiny_structure
    path = _with_metadata(tmp_path, tensors, _mutate(structure, "param of wrong shape"))
    out = tmp_path / "m.onnx"
    proc = subprocess.run([sys.executable, "-m", "caffe2x", "convert", str(path), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- library arguments
@pytest.fixture(scope="module")
def tiny_graph(tiny_files):  # type: ignore[no-untyped-def]
    return caffe2x.load(*tiny_files)


@pytest.mark.parametrize("call,pattern", [
    (lambda g, f, d: caffe2x.run(g, np.zeros((0, 3, 32, 32))), "empty batch"),
    (lambda g, f, d: caffe2x.run(g, "abc"), "must hold numbers"),
    (lambda g, f, d: caffe2x.run(g, [[1, 2], [3]]), "not an array of numbers"),
    (lambda g, f, d: caffe2x.run(g, np.zeros((3, 32, 32))), "the net takes a 4-D input (read as [1, 3, 32, 32])"),
    (lambda g, f, d: caffe2x.run(g, np.zeros((1, 3, 32, 32)), outputs=5), "outputs must be a blob name"),
    (lambda g, f, d: caffe2x.run(g, np.zeros((1, 3, 32, 32)), outputs=[]), "outputs is an empty list"),
    (lambda g, f, d: caffe2x.run(g, {"data": np.zeros((1, 3, 32, 32)), "x": 1}), "'x' is not an input"),
    (lambda g, f, d: caffe2x.run("graph", np.zeros((1, 3, 32, 32))), "expected a caffe2x Graph"),
    (lambda g, f, d: caffe2x.load(os.fsencode(str(f[0]))), "model must be a path"),
    (lambda g, f, d: caffe2x.load(5), "model must be a path"),
    (lambda g, f, d: caffe2x.load(f[0], input_shape="1,3,32,32"), "input_shape must be a sequence"),
    (lambda g, f, d: caffe2x.load(f[0], input_shape=["1", "3", "32", "32"]), "input_shape must be a sequence"),
    (lambda g, f, d: caffe2x.load(f[0], input_shape=[1, 0, 3, 3]), "input_shape must be positive"),
    (lambda g, f, d: caffe2x.load(f[0], f[1], max_bytes=-1), "max_bytes must be a positive integer"),
    (lambda g, f, d: caffe2x.save(g, os.fsencode(str(d / "x.pt"))), "output path must be a path"),
    (lambda g, f, d: caffe2x.save(g, None), "output path must be a path"),
    (lambda g, f, d: caffe2x.save("graph", d / "x.safetensors"), "expected a caffe2x Graph"),
    (lambda g, f, d: caffe2x.save(g, d / "x.safetensors", dtype=5), "unknown dtype 5"),
    (lambda g, f, d: caffe2x.save(g, d / "x.safetensors", to=5), "to must be a target name"),
])
def test_bad_library_arguments_are_caffe2x_errors(tiny_graph, tiny_files, tmp_path: Path, call, pattern: str) -> None:
    with pytest.raises(Caffe2xError) as info:
        call(tiny_graph, tiny_files, tmp_path)
    assert pattern in str(info.value), str(info.value)
    assert not list(tmp_path.iterdir())


def test_new_ops_get_generic_rules_and_may_register_their_own() -> None:
    from caffe2x.graph.ir import Node

    node = Node("x", "FutureOp", ["a"], ["b"], {"kernel": [0, 3]})
    with pytest.raises(GraphError, match=r"'x' \(FutureOp\): kernel must be in 1\.\."):
        checks.check_node(node, [(1, 3, 8, 8)])
    checks.op_schema("FutureOp", inputs=(2, 2), attrs={"axis": checks.AXIS})
    try:
        with pytest.raises(GraphError, match=r"takes 2 input"):
            checks.check_node(Node("x", "FutureOp", ["a"], ["b"], {"axis": 1}), [(1, 3)])
        with pytest.raises(GraphError, match=r"lacks the attribute 'axis'"):
            checks.check_node(Node("x", "FutureOp", ["a", "c"], ["b"], {}), [(1, 3), (1, 3)])
    finally:
        del checks.OP_SCHEMAS["FutureOp"]


def test_json_depth_is_measured_without_recursion() -> None:
    assert checks.json_depth('{"a": [1, {"b": "[[[["}]}') == 3
    assert checks.json_depth("[" * 100000) == 100000
