"""The memory-efficient DenseNet's DenseBlock (Tongcheng/caffe, the DenseNet OCR fork senlinuc/caffe_ocr).

OpenCV's importer has no DenseBlock, so the reference is checked against the fork's cuDNN forward
written out here from the caffemodel's raw blobs in the fork's order (BN with the stored statistics and
epsilon 1e-5, ReLU, a true convolution -- the kernel flipped, as cuDNN's CUDNN_CONVOLUTION mode --
3x3 pad 1, the new channels appended); the caffemodel is written here in the fork's blob layout, not by
caffe2x. Every target (file written, loaded back by the framework's own loader) must match the
reference <= 1e-5."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers.layer_targets import RUNNERS, run_emitted_torch

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe.parse import parse_prototxt_text
from caffe2x.caffe.proto import caffe_pb2
from caffe2x.errors import Caffe2xError
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.reference import execute

TOL = 1e-5

#: the OCR fork's deploy nets in miniature: conv -> DenseBlock -> BN/Scale/ReLU/1x1 conv -> pooling ->
#: a bottleneck (use_BC) DenseBlock whose initChannel is not its bottom's channel count (the OCR fork
#: reads the bottom's, as its densenet deploy nets need: 128 channels into initChannel 64)
NET = """name: "densenet-mini"
input: "data" input_shape { dim: 2 dim: 3 dim: 10 dim: 14 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 5 kernel_size: 3 pad: 1 } }
layer { name: "DenseBlock1" type: "DenseBlock" bottom: "conv1" top: "DenseBlock1"
  denseblock_param { numTransition: 3 initChannel: 5 growthRate: 4
    Filter_Filler { type: "msra" } BN_Scaler_Filler { type: "constant" value: 1 }
    BN_Bias_Filler { type: "constant" value: 0 } use_dropout: true dropout_amount: 0.2 } }
layer { name: "BatchNorm1" type: "BatchNorm" bottom: "DenseBlock1" top: "BatchNorm1" }
layer { name: "Scale1" type: "Scale" bottom: "BatchNorm1" top: "BatchNorm1" scale_param { bias_term: true } }
layer { name: "ReLU1" type: "ReLU" bottom: "BatchNorm1" top: "BatchNorm1" }
layer { name: "Convolution2" type: "Convolution" bottom: "BatchNorm1" top: "Convolution2"
  convolution_param { num_output: 6 bias_term: false kernel_size: 1 } }
layer { name: "Pooling1" type: "Pooling" bottom: "Convolution2" top: "Pooling1"
  pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "DenseBlock2" type: "DenseBlock" bottom: "Pooling1" top: "DenseBlock2"
  denseblock_param { numTransition: 2 initChannel: 64 growthRate: 3 use_BC: true } }
"""


def fork_blobs(c: int, t_count: int, growth: int, bc: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """Seeded blobs in DenseBlockLayer::LayerSetUp's order and shapes, the factor 0 as the GPU leaves it."""
    def stat(ch: int, kind: str) -> np.ndarray:
        v = rng.uniform(0.5, 1.5, ch) if kind in ("var", "scaler") else rng.standard_normal(ch) * 0.3
        return v.astype(np.float32).reshape(1, ch, 1, 1)

    chans = [c + i * growth for i in range(t_count)]
    conv_in = [4 * growth if bc else ch for ch in chans]
    groups: list[list[np.ndarray]] = [
        [(rng.standard_normal((growth, ci, 3, 3)) * 0.4).astype(np.float32) for ci in conv_in],
        [stat(ch, "scaler") for ch in chans], [stat(ch, "bias") for ch in chans],
        [stat(ch, "mean") for ch in chans], [stat(ch, "var") for ch in chans]]
    if bc:
        groups += [[(rng.standard_normal((4 * growth, ch, 1, 1)) * 0.4).astype(np.float32) for ch in chans],
                   *([stat(4 * growth, kind) for _ in chans] for kind in ("scaler", "bias", "mean", "var"))]
    return [b for g in groups for b in g] + [np.zeros(1, np.float32)]


def write_model(tmp_path: Path, text: str = NET, seed: int = 3) -> tuple[Path, Path, dict[str, list[np.ndarray]]]:
    """The deploy net and a caffemodel: caffe2x's seeded weights for the plain layers, the fork's layout
    for each DenseBlock (its bottom's channels from the graph caffe2x reads weightless)."""
    rng = np.random.default_rng(seed)
    weightless = caffe2x.load(None, _write(tmp_path / "w.prototxt", text))
    net = parse_prototxt_text(text)
    dense: dict[str, list[np.ndarray]] = {}
    for layer in net.layer:
        if layer.type == "DenseBlock":
            p = layer.denseblock_param
            c = weightless.shapes[weightless.blobs[layer.bottom[0]]][1]
            dense[layer.name] = arrays = fork_blobs(c, p.numTransition, p.growthRate, p.use_BC, rng)
        else:
            arrays = fixtures.caffe_blobs(weightless, layer.name)
        for arr in arrays:
            blob = layer.blobs.add()
            blob.shape.dim.extend(arr.shape)
            blob.data.extend(np.asarray(arr, np.float32).ravel().tolist())
    deploy, model = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    deploy.write_text(text)
    model.write_bytes(net.SerializeToString())
    return deploy, model, dense


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def true_conv3x3(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The fork's convolution_Fwd (and cuDNN CUDNN_CONVOLUTION): out[h, w] += f[kh, kw] * in[h + 1 - kh,
    w + 1 - kw], zero outside, in float64."""
    n, _, height, width = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], height, width))
    for kh in range(w.shape[2]):
        for kw in range(w.shape[3]):
            dh, dw = 1 - kh + 1, 1 - kw + 1  # in[h + 1 - kh] is padded[h + 2 - kh]
            patch = padded[:, :, dh:dh + height, dw:dw + width]
            out += np.einsum("oc,nchw->nohw", w[:, :, kh, kw].astype(np.float64), patch)
    return out


def fork_bn_relu(x: np.ndarray, scaler: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """cudnnBatchNormalizationForwardInference (spatial, epsilon 1e-5) then ReLU, in float64."""
    r = lambda a: a.reshape(1, -1, 1, 1).astype(np.float64)  # noqa: E731
    return np.maximum(r(scaler) * (x - r(mean)) / np.sqrt(r(var) + 1e-5) + r(bias), 0.0)


def fork_dense_block(x: np.ndarray, blobs: list[np.ndarray], t_count: int, bc: bool) -> np.ndarray:
    """DenseBlockLayer::Forward_gpu at TEST phase from the raw blobs (dropout off, factor unread)."""
    merged = x.astype(np.float64)
    t = t_count
    for i in range(t):
        y = fork_bn_relu(merged, blobs[t + i], blobs[2 * t + i], blobs[3 * t + i], blobs[4 * t + i])
        if bc:
            w1 = blobs[5 * t + i][:, :, 0, 0].astype(np.float64)
            y = fork_bn_relu(np.einsum("oc,nchw->nohw", w1, y), blobs[6 * t + i], blobs[7 * t + i],
                             blobs[8 * t + i], blobs[9 * t + i])
        merged = np.concatenate([merged, true_conv3x3(y, blobs[i])], axis=1)
    return merged


@pytest.fixture(scope="module")
def dense_net(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("dense")
    deploy, model, blobs = write_model(tmp)
    graph = caffe2x.load(model, deploy)
    feeds = {"data": np.random.default_rng(1).standard_normal((2, 3, 10, 14)).astype(np.float32)}
    return graph, feeds, blobs


def test_dense_block_reads_as_plain_ops_with_the_forks_shapes(dense_net) -> None:  # type: ignore[no-untyped-def]
    graph, _, _ = dense_net
    assert graph.shapes[graph.blobs["DenseBlock1"]] == (2, 5 + 3 * 4, 10, 14)
    assert graph.shapes[graph.blobs["DenseBlock2"]] == (2, 6 + 2 * 3, 5, 7)
    ops = {n.op for n in graph.nodes if n.name.startswith("DenseBlock")}
    assert ops == {"BatchNorm", "Scale", "ReLU", "Convolution", "Concat"}
    bc_conv = graph.node("DenseBlock2/t1_bc_conv")
    assert graph.param(bc_conv, "weight").shape == (12, 9, 1, 1)
    assert graph.param(graph.node("DenseBlock2/t1_conv"), "weight").shape == (3, 12, 3, 3)


def test_dense_block_reference_is_the_forks_cudnn_forward(dense_net) -> None:  # type: ignore[no-untyped-def]
    graph, feeds, blobs = dense_net
    values = execute(graph, feeds)
    for name, t_count, bc in (("DenseBlock1", 3, False), ("DenseBlock2", 2, True)):
        node = graph.node(name)
        bottom = values[graph.blobs["conv1" if name == "DenseBlock1" else "Pooling1"]]
        expected = fork_dense_block(bottom, blobs[name], t_count, bc)
        np.testing.assert_allclose(values[node.outputs[0]], expected, rtol=1e-5, atol=1e-5)
    # the flip matters: the same filters read as Caffe's cross-correlation give another answer
    unflipped = [b[:, :, ::-1, ::-1] if b.ndim == 4 and b.shape[2] == 3 else b for b in blobs["DenseBlock1"]]
    wrong = fork_dense_block(values["conv1"], unflipped, 3, False)
    assert np.abs(values["DenseBlock1"] - wrong).max() > 1e-2


@pytest.mark.parametrize("framework", list(RUNNERS))
def test_dense_block_every_target_matches_the_reference(dense_net, framework: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    graph, feeds, _ = dense_net
    outputs = ["DenseBlock1", "DenseBlock2"]
    ref = execute(graph, feeds)
    got = RUNNERS[framework](graph, feeds, outputs, tmp_path)
    for name in outputs:
        assert max_rel_error(got[name], ref[graph.blobs[name]]) <= TOL, (framework, name)


def test_synthesized_dense_block_model_round_trips(tmp_path: Path) -> None:
    """``caffe2x fixture``'s synthesis writes a DenseBlock in the fork's layout (10T + 1 blobs with BC,
    the 3x3 filters as the fork stores them), and reading it back gives the same graph."""
    data = fixtures.synthesize(NET)
    net = caffe_pb2.NetParameter()
    net.ParseFromString(data)
    counts = {layer.name: len(layer.blobs) for layer in net.layer}
    assert counts["DenseBlock1"] == 5 * 3 + 1 and counts["DenseBlock2"] == 10 * 2 + 1
    deploy, model = tmp_path / "n.prototxt", tmp_path / "n.caffemodel"
    deploy.write_text(NET)
    model.write_bytes(data)
    seeded = caffe2x.load(None, deploy)
    read = caffe2x.load(model, deploy)
    assert sorted(read.tensors) == sorted(seeded.tensors)
    dense = [key for key in seeded.tensors if key.startswith("DenseBlock")]
    assert len(dense) == 3 * 5 + 2 * 10
    for key in dense:
        np.testing.assert_array_equal(read.tensors[key], seeded.tensors[key], err_msg=key)


def test_dense_block_missing_blob_names_the_layer(tmp_path: Path) -> None:
    deploy, model, _ = write_model(tmp_path)
    net = caffe_pb2.NetParameter()
    net.ParseFromString(model.read_bytes())
    layer = next(layer for layer in net.layer if layer.name == "DenseBlock2")
    del layer.blobs[-1]
    model.write_bytes(net.SerializeToString())
    with pytest.raises(Caffe2xError, match=r"'DenseBlock2' has 20 blob\(s\) in the caffemodel, needs blob 20"):
        caffe2x.load(model, deploy)


def test_dense_block_through_emitted_torch_code(dense_net, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The standalone ``--emit-code`` module: the composite's parts are ordinary torch layers."""
    graph, feeds, _ = dense_net
    assert graph.outputs == [graph.blobs["DenseBlock2"]]
    out = run_emitted_torch(graph, feeds, tmp_path, monkeypatch)
    ref = execute(graph, feeds)[graph.blobs["DenseBlock2"]]
    assert max_rel_error(out.numpy(), ref) <= TOL


def test_dense_block_with_folded_batch_norm_matches(dense_net) -> None:  # type: ignore[no-untyped-def]
    """``--fold-bn``: the bottleneck's BN and Scale fold into the 1x1 convolution before them; the
    transitions' first BN reads a Concat and stays."""
    from caffe2x.graph.transforms import fold_bn

    graph, feeds, _ = dense_net
    folded = fold_bn(graph)
    names = {n.name for n in folded.nodes}
    assert "DenseBlock2/t0_bc_bn" not in names and "DenseBlock2/t0_bc_scale" not in names
    assert "DenseBlock2/t0_bn" in names
    ref = execute(graph, feeds)
    got = execute(folded, feeds)
    for name in ("DenseBlock1", "DenseBlock2"):
        assert max_rel_error(got[folded.blobs[name]], ref[graph.blobs[name]]) <= TOL
