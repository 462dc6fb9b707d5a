"""A fully convolutional net with Caffe's hard cases, for the any-input-size tests (helper, not a test).

FCN-16s in miniature: PReLU, ceil-mode MAX pooling with a pad (Caffe drops a last window that would
start in the padding), ceil-mode AVE pooling with a pad (Caffe's clipped divisor), a two-branch Eltwise
SUM with coefficients, learned Deconvolutions (one with a pad), a Crop of the coarse scores to the
skip branch and a Crop of the final scores to the input, both at an offset. Declared at 1x3x21x23; the
Crops fit at every input size from 3x3 up.
"""
from __future__ import annotations

from pathlib import Path

import caffe2x
from caffe2x.fixtures import synthesize

FCN_PROTOTXT = """name: "fcn_hard_cases"
input: "data" input_shape { dim: 1 dim: 3 dim: 21 dim: 23 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 } }
layer { name: "branch_a" type: "Convolution" bottom: "pool1" top: "branch_a" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "branch_b" type: "Convolution" bottom: "pool1" top: "branch_b" convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "fuse" type: "Eltwise" bottom: "branch_a" bottom: "branch_b" top: "fuse" eltwise_param { operation: SUM coeff: 0.5 coeff: -1.5 } }
layer { name: "relu_fuse" type: "ReLU" bottom: "fuse" top: "fuse" }
layer { name: "pool2" type: "Pooling" bottom: "fuse" top: "pool2" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "score2" type: "Convolution" bottom: "pool2" top: "score2" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "up2" type: "Deconvolution" bottom: "score2" top: "up2" convolution_param { num_output: 4 kernel_size: 4 stride: 2 bias_term: false } }
layer { name: "score1" type: "Convolution" bottom: "fuse" top: "score1" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "up2_crop" type: "Crop" bottom: "up2" bottom: "score1" top: "up2_crop" crop_param { axis: 2 offset: 1 } }
layer { name: "skip" type: "Eltwise" bottom: "up2_crop" bottom: "score1" top: "skip" }
layer { name: "up1" type: "Deconvolution" bottom: "skip" top: "up1" convolution_param { num_output: 4 kernel_size: 5 stride: 2 pad: 1 } }
layer { name: "score" type: "Crop" bottom: "up1" bottom: "data" top: "score" crop_param { axis: 2 offset: 1 offset: 2 } }
"""

#: (N, C, H, W) the tests run the net at: the declared size, odd and even, batch 2, smaller and larger
FCN_SIZES = [(1, 3, 21, 23), (2, 3, 16, 16), (1, 3, 33, 29), (1, 3, 9, 7), (1, 3, 40, 51)]


def write_fcn(directory: Path) -> tuple[Path, Path]:
    """(caffemodel, prototxt) of the net with seeded weights."""
    model, deploy = directory / "fcn_hard_cases.caffemodel", directory / "fcn_hard_cases.prototxt"
    model.write_bytes(synthesize(FCN_PROTOTXT, seed=3))
    deploy.write_text(FCN_PROTOTXT)
    return model, deploy


def load_fcn(directory: Path) -> caffe2x.graph.ir.Graph:
    return caffe2x.load(*write_fcn(directory))
