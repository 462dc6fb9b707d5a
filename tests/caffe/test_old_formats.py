"""Old and alternative Caffe formats read into the same graph and tensors as the current form.

- V0 nets (before 2014: ``layers { layer { type: "conv" kernelsize: 3 ... } bottom: ... }``, separate
  ``padding`` layers), prototxt and binary, upgraded V0 -> V1 -> current as Caffe's upgrade_proto.cpp.
- Caffe's HDF5 weights (``snapshot_format: HDF5``: ``data/<layer>/<i>`` datasets).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

import caffe2x
from caffe2x.caffe.proto import caffe_pb2
from caffe2x.fixtures import caffe_blobs

V0_PROTOTXT = """
name: "v0net"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 12
input_dim: 12
layers { layer { name: "pad1" type: "padding" pad: 1 } bottom: "data" top: "pad1" }
layers {
  layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 1 group: 1 biasterm: true
          weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" }
          blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 } bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.0001 beta: 0.75 } bottom: "pool1" top: "norm1" }
layers { layer { name: "conv2" type: "conv" num_output: 4 kernelsize: 3 pad: 1 group: 2 } bottom: "norm1" top: "conv2" }
layers { layer { name: "fc" type: "innerproduct" num_output: 5 } bottom: "conv2" top: "fc" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.5 } bottom: "fc" top: "fc" }
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
"""

CURRENT_PROTOTXT = """
name: "v0net"
input: "data"
input_shape { dim: 1 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def _structure(graph) -> list:  # type: ignore[no-untyped-def]
    return [(n.name, n.op, n.inputs, n.outputs, n.attrs, sorted(n.params)) for n in graph.nodes]


def _assert_same(a, b) -> None:  # type: ignore[no-untyped-def]
    assert _structure(a) == _structure(b)
    assert a.inputs == b.inputs and a.outputs == b.outputs and a.shapes == b.shapes
    assert sorted(a.tensors) == sorted(b.tensors)
    for key in a.tensors:
        np.testing.assert_array_equal(a.tensors[key], b.tensors[key], err_msg=key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The current-format net with seeded weights, written as a protobuf caffemodel."""
    d = tmp_path_factory.mktemp("old")
    (d / "current.prototxt").write_text(CURRENT_PROTOTXT)
    from caffe2x.fixtures import synthesize

    (d / "current.caffemodel").write_bytes(synthesize(CURRENT_PROTOTXT, seed=3))
    graph = caffe2x.load(d / "current.caffemodel", d / "current.prototxt")
    return {"dir": d, "graph": graph}


def test_v0_prototxt_upgrades_to_the_current_net(reference: dict, tmp_path: Path) -> None:
    v0 = tmp_path / "v0.prototxt"
    v0.write_text(V0_PROTOTXT)
    # same seeded weights (they are drawn per layer name), so graphs and tensors match exactly
    _assert_same(caffe2x.load(None, v0), caffe2x.load(None, reference["dir"] / "current.prototxt"))


def _v0_caffemodel(graph) -> bytes:  # type: ignore[no-untyped-def]
    net = text_format.Parse(V0_PROTOTXT, caffe_pb2.NetParameter())
    for wrapper in net.layers:
        for arr in caffe_blobs(graph, wrapper.layer.name):
            blob = wrapper.layer.blobs.add()
            blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - arr.ndim) + arr.shape  # 2013: 4-D dims
            blob.data.extend(arr.ravel().tolist())
    return net.SerializeToString()


def test_v0_caffemodel_reads_alone_and_with_prototxts(reference: dict, tmp_path: Path) -> None:
    model = tmp_path / "v0.caffemodel"
    model.write_bytes(_v0_caffemodel(reference["graph"]))
    v0 = tmp_path / "v0.prototxt"
    v0.write_text(V0_PROTOTXT)
    _assert_same(caffe2x.load(model, v0), reference["graph"])
    _assert_same(caffe2x.load(model, reference["dir"] / "current.prototxt"), reference["graph"])
    alone = caffe2x.load(model)  # the V0 caffemodel's own net, inputs from its input_dim
    _assert_same(alone, reference["graph"])
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32) * 50
    # same tensors (above); the executor's GEMM may sum in another order for views vs copies
    np.testing.assert_allclose(caffe2x.run(alone, x), caffe2x.run(reference["graph"], x), rtol=1e-4, atol=1e-30)


def test_v0_setting_foreign_to_the_layer_type_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.prototxt"
    bad.write_text(V0_PROTOTXT.replace('type: "relu" }', 'type: "relu" kernelsize: 3 }'))
    with pytest.raises(caffe2x.Caffe2xError, match=r"'relu1' of type 'relu' sets kernelsize"):
        caffe2x.load(None, bad)
    unknown = tmp_path / "unknown.prototxt"
    unknown.write_text(V0_PROTOTXT.replace('type: "relu"', 'type: "frobnicate"'))
    with pytest.raises(caffe2x.Caffe2xError, match="unknown type 'frobnicate'"):
        caffe2x.load(None, unknown)


# --------------------------------------------------------------------------- HDF5 weights

def _write_h5(path: Path, graph, names: dict[str, str] | None = None) -> None:  # type: ignore[no-untyped-def]
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        f.create_group("diff")  # training snapshots carry gradients too; they are not weights
        for node in graph.nodes:
            blobs = caffe_blobs(graph, node.name)
            if not blobs:
                continue
            group = data.create_group((names or {}).get(node.name, node.name))
            for i, arr in enumerate(blobs):
                group.create_dataset(str(i), data=arr)


def test_hdf5_caffemodel_gives_the_same_graph_and_tensors(reference: dict, tmp_path: Path) -> None:
    model = tmp_path / "net.caffemodel.h5"
    _write_h5(model, reference["graph"])
    _assert_same(caffe2x.load(model, reference["dir"] / "current.prototxt"), reference["graph"])


def test_hdf5_layer_names_with_slashes(tmp_path: Path) -> None:
    text = CURRENT_PROTOTXT.replace('"conv1"', '"block/conv1"')
    prototxt = tmp_path / "slash.prototxt"
    prototxt.write_text(text)
    from caffe2x.fixtures import synthesize

    pb = tmp_path / "slash.caffemodel"
    pb.write_bytes(synthesize(text, seed=5))
    graph = caffe2x.load(pb, prototxt)
    h5 = tmp_path / "slash.caffemodel.h5"
    _write_h5(h5, graph)  # h5py makes "block" a group with "conv1" in it
    _assert_same(caffe2x.load(h5, prototxt), graph)


def test_hdf5_needs_the_prototxt_and_checks_shapes(reference: dict, tmp_path: Path) -> None:
    model = tmp_path / "net.caffemodel.h5"
    _write_h5(model, reference["graph"])
    with pytest.raises(caffe2x.Caffe2xError, match="HDF5 caffemodel.*give the deploy prototxt"):
        caffe2x.load(model)
    wrong = tmp_path / "wrong.prototxt"
    wrong.write_text(CURRENT_PROTOTXT.replace("num_output: 5", "num_output: 6"))
    with pytest.raises(caffe2x.Caffe2xError, match=r"layer 'fc' blob 0 .*shape \[5, 144\].*needs \[6, 144\]"):
        caffe2x.load(model, wrong)
    h5py = pytest.importorskip("h5py")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(caffe2x.Caffe2xError, match="not Caffe weights"):
        caffe2x.load(other, reference["dir"] / "current.prototxt")


def test_cli_converts_an_hdf5_caffemodel(reference: dict, tmp_path: Path) -> None:
    import subprocess
    import sys

    model = tmp_path / "net.caffemodel.h5"
    _write_h5(model, reference["graph"])
    out = tmp_path / "net.safetensors"
    result = subprocess.run([sys.executable, "-m", "caffe2x", "convert", str(model), "-p",
                             str(reference["dir"] / "current.prototxt"), "-o", str(out), "-q"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    _assert_same(caffe2x.load(out), reference["graph"])
