"""The OCR fork's sequence layers (senlinuc/caffe_ocr): Lstm, Transpose, Reverse, ReverseTime.

OpenCV's importer knows none of them, so the numpy reference is checked against the fork's formulas
written out here (the Lstm against torch.nn.LSTM with the fork's blob order and gate order, Reverse
and Transpose against the fork's index loops, ReverseTime against its copy loop); every target (file
written, loaded back by the framework's own loader) must match the reference <= 1e-5."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers.layer_targets import RUNNERS, run_emitted_torch

import caffe2x
from caffe2x import fixtures
from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.reference import execute

TOL = 1e-5

#: CRNN in miniature, as the fork's examples/ocr deploy nets: conv features (N, C, 1, W) -> Transpose
#: (W, 1, N, C) -> Reshape (T, N, C) -> forward Lstm and a backward one between two Reverses -> Concat
#: -> per-step InnerProduct -> CTCGreedyDecoder (labels)
CRNN = """name: "crnn-mini"
input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 12 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: AVE kernel_h: 8 kernel_w: 1 stride: 1 } }
layer { name: "pool_transpose" type: "Transpose" bottom: "pool" top: "pool_transpose"
  transpose_param { dim: 3 dim: 2 dim: 0 dim: 1 } }
layer { name: "blstm_input" type: "Reshape" bottom: "pool_transpose" top: "blstm_input"
  reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 } }
layer { name: "lstm1" type: "Lstm" bottom: "blstm_input" top: "lstm1" lstm_param { num_output: 5 } }
layer { name: "reverse1" type: "Reverse" bottom: "blstm_input" top: "rlstm1_input" reverse_param { axis: 0 } }
layer { name: "rlstm1" type: "Lstm" bottom: "rlstm1_input" top: "rlstm1_output" lstm_param { num_output: 5 } }
layer { name: "reverse2" type: "Reverse" bottom: "rlstm1_output" top: "rlstm1" reverse_param { axis: 0 } }
layer { name: "blstm1" type: "Concat" bottom: "lstm1" bottom: "rlstm1" top: "blstm1" concat_param { axis: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "blstm1" top: "fc" inner_product_param { num_output: 7 axis: 2 } }
layer { name: "result" type: "CTCGreedyDecoder" bottom: "fc" top: "result" }
"""

#: sequences fed directly (T = 6, N = 3): the Lstm with a batch of sequences, Reverse on other axes,
#: ReverseTime with and without copy_remaining
SEQUENCES = """name: "sequences-mini"
input: "x" input_shape { dim: 6 dim: 3 dim: 4 }
input: "lengths" input_shape { dim: 3 }
layer { name: "lstm" type: "Lstm" bottom: "x" top: "lstm" lstm_param { num_output: 4 } }
layer { name: "rev_features" type: "Reverse" bottom: "lstm" top: "rev_features" reverse_param { axis: 2 } }
layer { name: "rev_batch" type: "Reverse" bottom: "rev_features" top: "rev_batch" reverse_param { axis: 1 } }
layer { name: "rt" type: "ReverseTime" bottom: "rev_batch" bottom: "lengths" top: "rt" }
layer { name: "rt_copy" type: "ReverseTime" bottom: "x" bottom: "lengths" top: "rt_copy"
  reverse_time_param { copy_remaining: true } }
"""
#: one sequence shorter than T, one of full length, one empty; 4.7 is read as 4 (Caffe's int())
LENGTHS = np.array([4.7, 6, 0], np.float32)

#: CTC decoding of scores with many ties (integers 0..2): the default blank 0 with merging, and the last
#: class as blank (blank_index -1) without merging
CTC = """name: "ctc-mini"
input: "scores" input_shape { dim: 9 dim: 4 dim: 5 }
layer { name: "decoded" type: "CTCGreedyDecoder" bottom: "scores" top: "decoded" }
layer { name: "decoded_raw" type: "CTCGreedyDecoder" bottom: "scores" top: "decoded_raw"
  ctc_decoder_param { blank_index: -1 ctc_merge_repeated: false } }
"""

NETS = {"crnn": CRNN, "sequences": SEQUENCES, "ctc": CTC}



def load(name: str, tmp_path: Path) -> Graph:
    text = NETS[name]
    deploy, model = tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
    deploy.write_text(text)
    model.write_bytes(fixtures.synthesize(text))
    return caffe2x.load(model, deploy)


def feeds_for(graph: Graph) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    fixed = {"lengths": LENGTHS, "scores": rng.integers(0, 3, (9, 4, 5)).astype(np.float32)}
    return {k: fixed[k] if k in fixed else rng.standard_normal(s).astype(np.float32) for k, s in graph.inputs.items()}


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def fork_lstm(x: np.ndarray, w_x: np.ndarray, w_h: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The fork's LstmLayer forward without a clip bottom, per sample, in float64 (cont = t > 0)."""
    steps, n, _ = x.shape
    hid = w_h.shape[1]
    out = np.zeros((steps, n, hid))
    for s in range(n):
        h, c = np.zeros(hid), np.zeros(hid)
        for t in range(steps):
            pre = w_x @ x[t, s] + b + (w_h @ h if t > 0 else 0.0)
            i, f, o, g = sigmoid(pre[:hid]), sigmoid(pre[hid:2 * hid]), sigmoid(pre[2 * hid:3 * hid]), np.tanh(pre[3 * hid:])
            c = (f if t > 0 else 0.0) * c + i * g
            h = o * np.tanh(c)
            out[t, s] = h
    return out


def test_crnn_net_reads_with_the_forks_shapes(tmp_path: Path) -> None:
    graph = load("crnn", tmp_path)
    shape = {n.name: graph.shapes[n.outputs[0]] for n in graph.nodes}
    assert shape["pool_transpose"] == (12, 1, 1, 6)
    assert shape["blstm_input"] == (12, 1, 6)
    assert shape["lstm1"] == shape["rlstm1"] == (12, 1, 5)
    assert shape["fc"] == (12, 1, 7)
    assert shape["result"] == (1, 12, 1, 1)
    assert [graph.node(n).op for n in ("pool_transpose", "lstm1", "reverse1")] == ["Permute", "LSTM", "Reverse"]


def test_lstm_blobs_are_read_in_the_forks_order_w_x_w_h_b(tmp_path: Path) -> None:
    """The caffemodel stores W_x (4H, I), W_h (4H, H), b (4H): a square W_h cannot be taken for W_x
    only when the shapes differ, so the values are checked against the stored blobs one by one."""
    from caffe2x.caffe.proto import caffe_pb2

    load("sequences", tmp_path)
    net = caffe_pb2.NetParameter()
    net.ParseFromString((tmp_path / "sequences.caffemodel").read_bytes())
    stored = next(layer for layer in net.layer if layer.name == "lstm")
    blobs = [np.asarray(b.data, np.float32).reshape(tuple(b.shape.dim)) for b in stored.blobs]
    assert [b.shape for b in blobs] == [(16, 4), (16, 4), (16,)]
    graph = caffe2x.load(tmp_path / "sequences.caffemodel", tmp_path / "sequences.prototxt")
    node = graph.node("lstm")
    for blob, role in zip(blobs, ("x_weight", "h_weight", "x_bias")):
        np.testing.assert_array_equal(graph.param(node, role), blob)


@pytest.mark.parametrize("name", list(NETS))
def test_lstm_reference_is_the_forks_formula(name: str, tmp_path: Path) -> None:
    graph = load(name, tmp_path)
    feeds = feeds_for(graph)
    values = execute(graph, feeds)
    for node in (n for n in graph.nodes if n.op == "LSTM"):
        w_x, w_h, b = (graph.param(node, r).astype(np.float64) for r in ("x_weight", "h_weight", "x_bias"))
        expected = fork_lstm(values[node.inputs[0]].astype(np.float64), w_x, w_h, b)
        np.testing.assert_allclose(values[node.outputs[0]], expected, rtol=1e-5, atol=1e-6)


def test_lstm_is_torchs_lstm_with_the_forks_gate_order(tmp_path: Path) -> None:
    """Independent check: torch.nn.LSTM (gates i, f, g, o) from a zero state on each sample."""
    import torch

    graph = load("sequences", tmp_path)
    feeds = feeds_for(graph)
    ours = execute(graph, feeds)["lstm"]
    node = graph.node("lstm")
    w_x, w_h, b = (graph.param(node, r) for r in ("x_weight", "h_weight", "x_bias"))
    reorder = np.concatenate([np.arange(0, 8), np.arange(12, 16), np.arange(8, 12)])  # i f o g -> i f g o
    lstm = torch.nn.LSTM(4, 4)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(w_x[reorder]))
        lstm.weight_hh_l0.copy_(torch.from_numpy(w_h[reorder]))
        lstm.bias_ih_l0.copy_(torch.from_numpy(b[reorder]))
        lstm.bias_hh_l0.zero_()
        expected, _ = lstm(torch.from_numpy(feeds["x"]))
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_reverse_and_transpose_follow_the_forks_index_loops(tmp_path: Path) -> None:
    graph = load("crnn", tmp_path)
    values = execute(graph, feeds_for(graph))
    pool = values["pool"]
    # TransposeLayer: top index sum_i from_inds[dim[i]] * top_count(i+1)
    dims = (3, 2, 0, 1)
    top = np.empty(tuple(pool.shape[d] for d in dims), np.float32)
    for idx in np.ndindex(pool.shape):
        top[tuple(idx[d] for d in dims)] = pool[idx]
    np.testing.assert_array_equal(values["pool_transpose"], top)
    # ReverseLayer axis 0: block i of the input lands at block T - 1 - i
    x = values["blstm_input"]
    np.testing.assert_array_equal(values["rlstm1_input"], np.stack([x[len(x) - 1 - i] for i in range(len(x))]))


def fork_reverse_time(x: np.ndarray, lengths: np.ndarray, copy_remaining: bool) -> np.ndarray:
    """ReverseTimeLayer's copy loop; the top starts as Caffe's zero-filled fresh blob."""
    out = np.zeros_like(x)
    for n in range(x.shape[1]):
        length = int(lengths[n])
        for t in range(length):
            out[length - 1 - t, n] = x[t, n]
        if copy_remaining:
            out[length:, n] = x[length:, n]
    return out


def test_reverse_time_is_the_forks_copy_loop(tmp_path: Path) -> None:
    graph = load("sequences", tmp_path)
    feeds = feeds_for(graph)
    values = execute(graph, feeds)
    np.testing.assert_array_equal(values["rt"], fork_reverse_time(values["rev_batch"], LENGTHS, False))
    np.testing.assert_array_equal(values["rt_copy"], fork_reverse_time(feeds["x"], LENGTHS, True))


def fork_ctc_greedy(scores: np.ndarray, blank: int, merge: bool) -> np.ndarray:
    """CTCGreedyDecoderLayer's loops (one bottom): strict > keeps the first maximum; -1 fills the rest."""
    steps, n, classes = scores.shape
    out = np.full((n, steps), -1.0, np.float32)
    for s in range(n):
        previous, labels = -1, []
        for t in range(steps):
            best, top = 0, scores[t, s, 0]
            for c in range(1, classes):
                if scores[t, s, c] > top:
                    best, top = c, scores[t, s, c]
            if best != blank and not (merge and best == previous):
                labels.append(best)
            previous = best
        out[s, :len(labels)] = labels
    return out.reshape(n, steps, 1, 1)


def test_ctc_greedy_decoder_is_the_forks_loop(tmp_path: Path) -> None:
    graph = load("ctc", tmp_path)
    feeds = feeds_for(graph)
    values = execute(graph, feeds)
    np.testing.assert_array_equal(values["decoded"], fork_ctc_greedy(feeds["scores"], 0, True))
    np.testing.assert_array_equal(values["decoded_raw"], fork_ctc_greedy(feeds["scores"], 4, False))
    assert (values["decoded"] == -1).any() and (values["decoded_raw"] != values["decoded"]).any()
    crnn = load("crnn", tmp_path)
    values = execute(crnn, feeds_for(crnn))
    np.testing.assert_array_equal(values["result"], fork_ctc_greedy(values["fc"], 0, True))


def test_reverse_time_refuses_a_length_past_the_sequence(tmp_path: Path) -> None:
    graph = load("sequences", tmp_path)
    feeds = {**feeds_for(graph), "lengths": np.array([7, 1, 1], np.float32)}
    with pytest.raises(Caffe2xError, match="sequence length"):
        execute(graph, feeds)


@pytest.mark.parametrize("framework", list(RUNNERS))
@pytest.mark.parametrize("name", list(NETS))
def test_every_target_matches_the_reference(framework: str, name: str, tmp_path: Path) -> None:
    graph = load(name, tmp_path)
    feeds = feeds_for(graph)
    outputs = [v for n in graph.nodes for v in n.outputs if n.op not in ("ReLU", "Convolution", "Pooling")]
    ref = execute(graph, feeds)
    got = RUNNERS[framework](graph, feeds, outputs, tmp_path)
    for v in outputs:
        assert got[v].shape == ref[v].shape, f"{framework} {name}: {v}"
        assert max_rel_error(got[v], ref[v]) <= TOL, f"{framework} {name}: {v}"


def test_emitted_torch_code_runs_the_crnn_standalone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = load("crnn", tmp_path)
    feeds = feeds_for(graph)
    out = run_emitted_torch(graph, feeds, tmp_path, monkeypatch)
    assert max_rel_error(out.numpy(), execute(graph, feeds)["result"]) <= TOL


@pytest.mark.parametrize("layer, message", [
    ('layer { name: "l" type: "Lstm" bottom: "x" bottom: "c" top: "l" lstm_param { num_output: 2 } }', "clip bottom"),
    ('layer { name: "l" type: "Lstm" bottom: "x" top: "l" }', "num_output"),
    ('layer { name: "l" type: "Lstm" bottom: "x4" top: "l" lstm_param { num_output: 2 } }', r"\(T, N, I\)"),
    ('layer { name: "t" type: "Transpose" bottom: "x" top: "t" transpose_param { dim: 0 dim: 0 dim: 1 } }', "once"),
    ('layer { name: "t" type: "Transpose" bottom: "x" top: "t" transpose_param { dim: 1 dim: 0 } }', "once"),
    ('layer { name: "r" type: "Reverse" bottom: "x" top: "r" reverse_param { axis: 3 } }', "out of range"),
    ('layer { name: "r" type: "Reverse" bottom: "x" top: "r" reverse_param { axis: -1 } }', "out of range"),
    ('layer { name: "r" type: "ReverseTime" bottom: "x" bottom: "x" top: "r" }', "lengths"),
    ('layer { name: "d" type: "CTCGreedyDecoder" bottom: "x" bottom: "c" top: "d" }', "label bottom"),
    ('layer { name: "d" type: "CTCGreedyDecoder" bottom: "x4" top: "d" }', r"\(T, N, C\)"),
])
def test_malformed_layers_are_named(layer: str, message: str) -> None:
    text = ('input: "x" input_shape { dim: 3 dim: 2 dim: 4 }\ninput: "c" input_shape { dim: 3 dim: 2 }\n'
            'input: "x4" input_shape { dim: 3 dim: 2 dim: 4 dim: 2 }\n' + layer + "\n")
    with pytest.raises(Caffe2xError, match=message):
        caffe2x.caffe.reader.graph_from_text(text)


def test_crnn_keras_file_alone_runs_the_sequence_layers(tmp_path: Path) -> None:
    """keras.models.load_model of the .keras file (the transpose that moves the batch axis, the
    unrolled Lstm, Reverse, the CTC decoder are registered caffe2x layers) decodes the reference's labels."""
    import keras

    import caffe2x.targets.keras  # noqa: F401  (registers the caffe2x layers for load_model)

    graph = load("crnn", tmp_path)
    feeds = feeds_for(graph)
    caffe2x.save(graph, tmp_path / "crnn.keras")
    model = keras.models.load_model(tmp_path / "crnn.keras")
    out = np.asarray(model(feeds["data"].transpose(0, 2, 3, 1), training=False))   # NHWC (N, 1, 1, T)
    assert max_rel_error(out.transpose(0, 3, 1, 2), execute(graph, feeds)["result"]) <= TOL


def test_crnn_at_another_batch_size_decodes_each_image_as_alone(tmp_path: Path) -> None:
    """After the Transpose the batch is axis 2, then axis 1: the Reshape applies the prototxt's rule to
    the shape it gets (as Caffe does), so a batch of 3 decodes each image as a batch of 1 would, in
    the reference, torch, ONNX and Keras."""
    import torch

    graph = load("crnn", tmp_path)
    rng = np.random.default_rng(9)
    images = rng.standard_normal((3, 3, 8, 12)).astype(np.float32)
    together = execute(graph, {"data": images})
    alone = [execute(graph, {"data": images[i:i + 1]}) for i in range(3)]
    # BLAS promises no bit-equality across batch sizes (GEMM blocking follows the matrix size): the
    # scores agree to float rounding, the decoded labels exactly.
    fc_alone = np.concatenate([a["fc"] for a in alone], axis=1)
    assert max_rel_error(together["fc"], fc_alone) <= TOL
    np.testing.assert_array_equal(together["result"], np.concatenate([a["result"] for a in alone], axis=0))
    with torch.no_grad():
        out = caffe2x.to_torch(graph)(torch.from_numpy(images))
    assert max_rel_error(out.numpy(), together["result"]) <= TOL
    ort = pytest.importorskip("onnxruntime")
    caffe2x.save(graph, tmp_path / "crnn.onnx")
    session = ort.InferenceSession(str(tmp_path / "crnn.onnx"), providers=["CPUExecutionProvider"])
    (decoded,) = session.run(None, {"data": images})
    assert max_rel_error(decoded, together["result"]) <= TOL
    import keras

    caffe2x.save(graph, tmp_path / "crnn.keras")
    decoded = np.asarray(keras.models.load_model(tmp_path / "crnn.keras")(images.transpose(0, 2, 3, 1)))
    assert max_rel_error(decoded.transpose(0, 3, 1, 2), together["result"]) <= TOL


def test_validate_passes_the_crnn_fixture_on_its_time_first_scores(tmp_path: Path) -> None:
    """The zoo's crnn_style with --outputs fc1x: the logits (T, N, C) have time, not the batch, first;
    the four photos run as one batch and every framework (numpy included) matches the reference."""
    model, deploy = fixtures.write_model("crnn_style", tmp_path)
    report = caffe2x.validate(str(model), str(deploy), frameworks=["numpy", "torch", "onnx"], outputs=["fc1x"])
    assert report.passed, report.table()
