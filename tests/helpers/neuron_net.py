"""A fully convolutional net of Caffe's element-wise layers and the YOLO ports' nearest Upsample, for the
any-input-size tests of the Keras target (helper, not a test). Declared at 1x2x10x9."""
from __future__ import annotations

NEURON_PROTOTXT = """name: "neurons"
input: "data" input_shape { dim: 1 dim: 2 dim: 10 dim: 9 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 3 kernel_size: 3 stride: 2 } }
layer { name: "abs" type: "AbsVal" bottom: "conv" top: "abs" }
layer { name: "power" type: "Power" bottom: "abs" top: "power" power_param { power: 1.5 scale: 0.5 shift: 1 } }
layer { name: "log" type: "Log" bottom: "power" top: "log" }
layer { name: "exp" type: "Exp" bottom: "conv" top: "exp" exp_param { scale: 0.25 } }
layer { name: "bnll" type: "BNLL" bottom: "conv" top: "bnll" }
layer { name: "swish" type: "Swish" bottom: "conv" top: "swish" }
layer { name: "clip" type: "Clip" bottom: "conv" top: "clip" clip_param { min: -0.5 max: 0.5 } }
layer { name: "threshold" type: "Threshold" bottom: "conv" top: "threshold" threshold_param { threshold: 0.1 } }
layer { name: "sum" type: "Eltwise" bottom: "log" bottom: "exp" bottom: "bnll" bottom: "swish" bottom: "clip" bottom: "threshold" top: "sum" }
layer { name: "up" type: "Upsample" bottom: "sum" top: "up" upsample_param { scale: 2 } }
"""
NEURON_OUTPUTS = ["sum", "up"]
