"""Test helper (not a test module): a small fully convolutional net with Caffe's hard cases, the sizes
it is checked at, and its numpy-reference outputs at those sizes."""
from __future__ import annotations

import numpy as np

import caffe2x
from caffe2x.caffe.reader import graph_from_text
from caffe2x.graph.ir import Graph

#: a fully convolutional net with Caffe's hard cases: ceil pooling with pad (MAX and AVE, pad within and
#: beyond torch's kernel/2 limit, stride > kernel - pad), PReLU, Deconvolution, Crop to the input,
#: Eltwise with coefficients across two branches
FCN = """
name: "hard_cases"
input: "data" input_shape { dim: 1 dim: 3 dim: 23 dim: 19 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "conv2a" type: "Convolution" bottom: "pool1" top: "conv2a" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "conv2b" type: "Convolution" bottom: "pool1" top: "conv2b" convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "sum2" type: "Eltwise" bottom: "conv2a" bottom: "conv2b" top: "sum2" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 } }
layer { name: "pool2" type: "Pooling" bottom: "sum2" top: "pool2" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "up" type: "Deconvolution" bottom: "pool2" top: "up" convolution_param { num_output: 4 kernel_size: 8 stride: 4 } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "data" top: "crop" crop_param { axis: 2 offset: 2 } }
layer { name: "pool3" type: "Pooling" bottom: "crop" top: "pool3" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 2 } }
layer { name: "pool4" type: "Pooling" bottom: "pool3" top: "pool4" pooling_param { pool: AVE kernel_size: 3 stride: 3 pad: 2 } }
"""
#: the declared size first, then others, odd ones included
SIZES = [(23, 19), (32, 32), (17, 29), (41, 37)]


def fcn_graph(h: int = 23, w: int = 19, n: int = 1) -> Graph:
    return graph_from_text(FCN, seed=5, input_shape=(n, 3, h, w))


def seeded(shape: tuple[int, ...], seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def reference_cases(graph: Graph) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input, reference output) at each size of :data:`SIZES`; the reference runs the same weights
    (the seeded graph read at that input size: checked equal) with Caffe's own shape rules."""
    out = []
    for i, (h, w) in enumerate(SIZES):
        at = fcn_graph(h, w)
        assert all(np.array_equal(at.tensors[k], graph.tensors[k]) for k in graph.tensors)
        x = seeded((1, 3, h, w), seed=i)
        out.append((x, caffe2x.run(at, x)))
    return out


def at_size(graph: Graph, output: str, shape: tuple[int, ...]) -> Graph:
    """``graph`` cut at ``output`` and read at input ``shape`` with Caffe's shape rules (same tensors)."""
    from caffe2x.caffe.netcut import prune_graph
    from caffe2x.graph.ir import infer_shapes

    cut = prune_graph(graph, [output])
    (name,) = cut.inputs
    cut.inputs = {name: tuple(shape)}
    infer_shapes(cut)
    return cut
