"""The numpy reference executor against Caffe's formulas, worked by hand on small inputs."""
from __future__ import annotations

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe import reader
from caffe2x.graph.ir import pool_output_size
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.transforms import fold_bn


@pytest.mark.parametrize("size,k,s,p,expected", [
    (112, 3, 2, 0, 56),   # ResNet pool1: ceil((112-3)/2)+1 = 56 (floor mode would give 55)
    (13, 3, 2, 0, 6),
    (5, 2, 2, 1, 3),      # ceil gives 4, but the last window would start at 6 >= 5+1: dropped
    (7, 7, 1, 0, 1),
])
def test_pool_output_size_follows_caffe(size, k, s, p, expected) -> None:
    assert pool_output_size(size, k, s, p) == expected


def _net(body: str, shape: str) -> caffe2x.Graph:
    return reader.graph_from_text(f'input: "x" input_shape {{ {shape} }}\n{body}')


def test_ave_pool_divisor_counts_padding_but_not_the_ceil_overhang() -> None:
    g = _net('layer { name: "p" type: "Pooling" bottom: "x" top: "p" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }',
             "dim: 1 dim: 1 dim: 4 dim: 4")
    x = np.ones((1, 1, 4, 4), dtype=np.float32)
    y = caffe2x.run(g, x)[0, 0]
    # rows/cols: window [-1,2) -> 2 real of divisor 3; [1,4) -> 3 of 3; [3,5)->clipped at H+p=5: 1 real of 2
    per_axis = np.array([2 / 3, 1.0, 1 / 2])
    np.testing.assert_allclose(y, np.outer(per_axis, per_axis), rtol=1e-6)


def test_max_pool_ignores_padding_even_over_negative_values() -> None:
    g = _net('layer { name: "p" type: "Pooling" bottom: "x" top: "p" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }',
             "dim: 1 dim: 1 dim: 3 dim: 3")
    x = -np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(caffe2x.run(g, x)[0, 0], [[-1, -2], [-4, -5]])  # zero padding would give 0s


def test_lrn_across_channels_uses_alpha_over_size_and_k() -> None:
    g = _net('layer { name: "l" type: "LRN" bottom: "x" top: "l" lrn_param { local_size: 3 alpha: 0.6 beta: 0.5 k: 2 } }',
             "dim: 1 dim: 3 dim: 1 dim: 1")
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32).reshape(1, 3, 1, 1)
    sums = np.array([1 + 4, 1 + 4 + 9, 4 + 9])
    expected = x.ravel() / (2 + 0.6 / 3 * sums) ** 0.5
    np.testing.assert_allclose(caffe2x.run(g, x).ravel(), expected, rtol=1e-6)


def test_eltwise_sum_applies_coefficients() -> None:
    g = reader.graph_from_text(fixtures.ZOO["maxpool_negative"])
    node = g.node("neg")
    assert node.attrs == {"operation": "sum", "coeff": [-1.5, -0.5]}
    x = np.zeros((1, 2, 9, 9), dtype=np.float32)
    out = caffe2x.run(g, x, outputs="neg")
    np.testing.assert_allclose(out, -1.0)  # sigmoid(0)=0.5: -1.5*0.5 - 0.5*0.5


def test_inner_product_flattens_in_c_h_w_order() -> None:
    g = reader.graph_from_text(fixtures.ZOO["conv_innerproduct"])
    x = np.random.default_rng(0).standard_normal(g.inputs["data"]).astype(np.float32)
    vals = caffe2x.graph.reference.execute(g, x)
    conv = vals[g.blobs["conv"]]
    expected = conv.reshape(2, -1) @ g.tensors["fc1.weight"].T + g.tensors["fc1.bias"]
    np.testing.assert_allclose(vals[g.node("fc1").outputs[0]], expected, rtol=1e-5, atol=1e-6)


def test_fold_bn_matches_the_unfolded_net(resnet50_graph, image_batch) -> None:
    folded = fold_bn(resnet50_graph)
    assert not [n for n in folded.nodes if n.op in ("BatchNorm", "Scale")]
    assert len(folded.tensors) < len(resnet50_graph.tensors)
    a = caffe2x.run(resnet50_graph, image_batch[:1], outputs=["fc1000", "res3a"])
    b = caffe2x.run(folded, image_batch[:1], outputs=["fc1000", "res3a"])
    for name in a:
        assert max_rel_error(b[name], a[name]) <= 1e-5, name


def test_batch_size_can_differ_from_the_declared_one(resnet50_graph, image_batch) -> None:
    both = caffe2x.run(resnet50_graph, image_batch, outputs="fc1000")
    one = caffe2x.run(resnet50_graph, image_batch[1:], outputs="fc1000")
    assert max_rel_error(one[0], both[1]) <= 1e-6


@pytest.mark.parametrize("params", [
    "kernel_h: 3 kernel_w: 2 dilation: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
    "kernel_size: 4 stride: 2 pad: 1 group: 2",
    "kernel_size: 3 stride: 3 dilation: 2 group: 2 pad: 2",
])
def test_deconvolution_is_the_adjoint_of_caffes_convolution(params: str) -> None:
    """Caffe computes Deconvolution as its Convolution's backward pass: for the same weights W,
    <conv(x), y> == <x, deconv(y)> for all x, y."""
    deconv = _net(f'layer {{ name: "d" type: "Deconvolution" bottom: "x" top: "d" '
                  f'convolution_param {{ num_output: 4 bias_term: false {params} }} }}', "dim: 1 dim: 6 dim: 5 dim: 4")
    out_shape = deconv.shapes["d"]
    conv = _net(f'layer {{ name: "c" type: "Convolution" bottom: "x" top: "c" '
                f'convolution_param {{ num_output: 6 bias_term: false {params} }} }}',
                "dim: 1 " + " ".join(f"dim: {d}" for d in out_shape[1:]))
    assert conv.shapes["c"] == (1, 6, 5, 4)  # the convolution maps the deconvolution's output back
    conv.tensors["c.weight"] = deconv.tensors["d.weight"]  # (6, 4/g, kh, kw): the same array both ways
    rng = np.random.default_rng(0)
    x = rng.standard_normal(out_shape).astype(np.float64)
    y = rng.standard_normal((1, 6, 5, 4)).astype(np.float64)
    lhs = float(np.sum(caffe2x.run(conv, x.astype(np.float32)) * y))
    rhs = float(np.sum(x * caffe2x.run(deconv, y.astype(np.float32))))
    assert lhs == pytest.approx(rhs, rel=1e-4)
