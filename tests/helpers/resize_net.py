"""A net whose every size follows the input through the layers that compute with sizes beyond pooling
and Crop, for the any-input-size tests of the ONNX and Keras targets (helper, not a test).

Interp by each of Caffe's rules (zoom, shrink with a crop by ``pad_beg``/``pad_end``, the size of a
second input, and an explicit height/width whose output stays fixed while its input varies), LRN
within a channel (Caffe's padded AVE pooling of the squares), a Reshape with 0 and -1 dims, and
PriorBox without img_size (its image size and steps from the data input), one with a given step and
TextBoxes-style repeated offsets. Declared at 1x3x20x18; takes every H, W from 3 on.
"""
from __future__ import annotations

RESIZE_PROTOTXT = """name: "resize_rules"
input: "data" input_shape { dim: 1 dim: 3 dim: 20 dim: 18 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "norm" type: "LRN" bottom: "conv1" top: "norm" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }
layer { name: "pool" type: "Pooling" bottom: "norm" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "zoom" type: "Interp" bottom: "pool" top: "zoom" interp_param { zoom_factor: 3 } }
layer { name: "shrink" type: "Interp" bottom: "conv1" top: "shrink" interp_param { shrink_factor: 2 pad_beg: -1 pad_end: -1 } }
layer { name: "like" type: "Interp" bottom: "shrink" bottom: "norm" top: "like" }
layer { name: "fixed" type: "Interp" bottom: "pool" top: "fixed" interp_param { height: 7 width: 9 } }
layer { name: "flat" type: "Reshape" bottom: "zoom" top: "flat" reshape_param { shape { dim: 0 dim: 0 dim: -1 } } }
layer { name: "prior" type: "PriorBox" bottom: "pool" bottom: "data" top: "prior"
  prior_box_param { min_size: 4 max_size: 9 aspect_ratio: 2 flip: true clip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
layer { name: "prior_step" type: "PriorBox" bottom: "conv1" bottom: "data" top: "prior_step"
  prior_box_param { min_size: 3 aspect_ratio: 3 flip: false clip: false step: 1.5 variance: 0.1 offset: 0.3 } }
"""

#: the blobs the tests compare
RESIZE_OUTPUTS = ["norm", "zoom", "shrink", "like", "fixed", "flat", "prior", "prior_step"]
#: (N, C, H, W) the tests run at: the declared size, odd and even, batch 2, smaller and larger
RESIZE_SIZES = [(1, 3, 20, 18), (2, 3, 17, 23), (1, 3, 9, 11), (1, 3, 32, 31)]

#: Reshapes to 4-D by Caffe's rule (0 copies, -1 inferred, ``axis``/``num_axes``) whose outputs vary
#: with H and W, one followed by a Convolution: the Keras target's NCHW round trip at run-time sizes
RESHAPE_PROTOTXT = """name: "reshape_rules"
input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 7 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "split" type: "Reshape" bottom: "conv" top: "split" reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 0 } } }
layer { name: "rows" type: "Reshape" bottom: "conv" top: "rows" reshape_param { axis: 2 num_axes: 2 shape { dim: -1 dim: 1 } } }
layer { name: "mix" type: "Convolution" bottom: "split" top: "mix" convolution_param { num_output: 2 kernel_size: 1 } }
"""
RESHAPE_OUTPUTS = ["mix", "rows"]
