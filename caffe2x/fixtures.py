"""Models caffe2x makes itself, since nothing may download weights: a synthetic ResNet-50 and small nets.

``resnet_prototxt(50)`` spells out a deploy net structurally identical to KaimingHe's
``ResNet-50-deploy.prototxt`` (same 228 layer names, types, parameters and blob shapes); 101 and 152
follow the same scheme. :func:`synthesize` gives any deploy prototxt seeded, well-conditioned weights
and writes them as a real ``.caffemodel`` (modern ``layer`` format), so tests exercise the same reading
path a user's file takes.

Well-conditioned means: convolution and InnerProduct weights are He-scaled, and every BatchNorm's
statistics are *calibrated* on a seeded input (mean and variance of what actually reaches it, times
a random factor near 1), so activations neither explode nor vanish 50 layers deep and the logits
have a clear top-5, as a trained net's do. BatchNorm blobs are stored multiplied by a moving-average
factor of 999.982 (Caffe's value after long training with the default 0.999 fraction), never 1: the
real ResNet-50 stores factor 1, which hides a converter that forgets to divide.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import zoo

#: BatchNorm moving-average factor stored in synthetic caffemodels
BN_FACTOR = np.float32(999.982)

_RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


# --------------------------------------------------------------------------- ResNet deploy text
def _layer(name: str, type_: str, bottoms: list[str], top: str, body: str = "") -> str:
    lines = ["layer {"]
    lines += [f'\tbottom: "{b}"' for b in bottoms]
    lines += [f'\ttop: "{top}"', f'\tname: "{name}"', f'\ttype: "{type_}"']
    if body:
        lines.append(body)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _conv(name: str, bottom: str, num_output: int, kernel: int, pad: int, stride: int, bias: bool) -> str:
    body = (f"\tconvolution_param {{\n\t\tnum_output: {num_output}\n\t\tkernel_size: {kernel}\n"
            f"\t\tpad: {pad}\n\t\tstride: {stride}\n" + ("" if bias else "\t\tbias_term: false\n") + "\t}")
    return _layer(name, "Convolution", [bottom], name, body)


def _conv_bn_scale(conv: str, bn: str, scale: str, bottom: str, num_output: int, kernel: int, pad: int,
                   stride: int, bias: bool = False) -> str:
    return (_conv(conv, bottom, num_output, kernel, pad, stride, bias)
            + _layer(bn, "BatchNorm", [conv], conv, "\tbatch_norm_param {\n\t\tuse_global_stats: true\n\t}")
            + _layer(scale, "Scale", [conv], conv, "\tscale_param {\n\t\tbias_term: true\n\t}"))


def _block_names(count: int, numbered: bool) -> Iterator[str]:
    """KaimingHe's block suffixes: a, b, c, … (ResNet-50, and 3-block stages); a, b1, b2, … for the
    longer stages of ResNet-101/152."""
    if not numbered:
        yield from "abcdef"[:count]
    else:
        yield "a"
        yield from (f"b{i}" for i in range(1, count))


def resnet_prototxt(depth: int = 50, input_shape: tuple[int, int, int, int] = (1, 3, 224, 224)) -> str:
    """Deploy prototxt text of KaimingHe's ResNet-``depth`` (50, 101 or 152)."""
    blocks = _RESNET_BLOCKS[depth]
    parts = [f'name: "ResNet-{depth}"\ninput: "data"\n' + "".join(f"input_dim: {d}\n" for d in input_shape) + "\n"]
    # KaimingHe's ResNet-50 gives conv1 a bias; the 101 and 152 deploy files do not
    parts.append(_conv_bn_scale("conv1", "bn_conv1", "scale_conv1", "data", 64, 7, 3, 2, bias=depth == 50))
    parts.append(_layer("conv1_relu", "ReLU", ["conv1"], "conv1"))
    parts.append(_layer("pool1", "Pooling", ["conv1"], "pool1",
                        "\tpooling_param {\n\t\tkernel_size: 3\n\t\tstride: 2\n\t\tpool: MAX\n\t}"))
    bottom = "pool1"
    for stage, count in enumerate(blocks, start=2):
        width = 64 * 2 ** (stage - 2)
        for i, blk in enumerate(_block_names(count, numbered=depth > 50 and count > 3)):
            tag = f"{stage}{blk}"
            res = f"res{tag}"
            stride = 2 if (i == 0 and stage > 2) else 1
            if i == 0:
                parts.append(_conv_bn_scale(f"{res}_branch1", f"bn{tag}_branch1", f"scale{tag}_branch1",
                                            bottom, width * 4, 1, 0, stride))
                shortcut = f"{res}_branch1"
            else:
                shortcut = bottom
            for sub, (out, k, pad, s) in zip("abc", ((width, 1, 0, stride), (width, 3, 1, 1), (width * 4, 1, 0, 1))):
                conv = f"{res}_branch2{sub}"
                parts.append(_conv_bn_scale(conv, f"bn{tag}_branch2{sub}", f"scale{tag}_branch2{sub}",
                                            bottom if sub == "a" else f"{res}_branch2{chr(ord(sub) - 1)}",
                                            out, k, pad, s))
                if sub != "c":
                    parts.append(_layer(f"{conv}_relu", "ReLU", [conv], conv))
            parts.append(_layer(res, "Eltwise", [shortcut, f"{res}_branch2c"], res))
            parts.append(_layer(f"{res}_relu", "ReLU", [res], res))
            bottom = res
    parts.append(_layer("pool5", "Pooling", [bottom], "pool5",
                        "\tpooling_param {\n\t\tkernel_size: 7\n\t\tstride: 1\n\t\tpool: AVE\n\t}"))
    parts.append(_layer("fc1000", "InnerProduct", ["pool5"], "fc1000",
                        "\tinner_product_param {\n\t\tnum_output: 1000\n\t}"))
    parts.append(_layer("prob", "Softmax", ["fc1000"], "prob"))
    return "\n".join(parts)


#: A ResNet in miniature for fast tests: conv1+BN+Scale+ReLU, ceil-mode pool1, one projection
#: bottleneck block and one identity block, global AVE pool, fc, softmax. Same layer kinds and naming
#: scheme as ResNet-50.
TINY_PROTOTXT = """name: "ResNet-tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
""" + "".join([
    _conv_bn_scale("conv1", "bn_conv1", "scale_conv1", "data", 8, 7, 3, 2, bias=True),
    _layer("conv1_relu", "ReLU", ["conv1"], "conv1"),
    _layer("pool1", "Pooling", ["conv1"], "pool1", "\tpooling_param {\n\t\tkernel_size: 3\n\t\tstride: 2\n\t\tpool: MAX\n\t}"),
    _conv_bn_scale("res2a_branch1", "bn2a_branch1", "scale2a_branch1", "pool1", 16, 1, 0, 1),
    _conv_bn_scale("res2a_branch2a", "bn2a_branch2a", "scale2a_branch2a", "pool1", 4, 1, 0, 1),
    _layer("res2a_branch2a_relu", "ReLU", ["res2a_branch2a"], "res2a_branch2a"),
    _conv_bn_scale("res2a_branch2b", "bn2a_branch2b", "scale2a_branch2b", "res2a_branch2a", 4, 3, 1, 1),
    _layer("res2a_branch2b_relu", "ReLU", ["res2a_branch2b"], "res2a_branch2b"),
    _conv_bn_scale("res2a_branch2c", "bn2a_branch2c", "scale2a_branch2c", "res2a_branch2b", 16, 1, 0, 1),
    _layer("res2a", "Eltwise", ["res2a_branch1", "res2a_branch2c"], "res2a"),
    _layer("res2a_relu", "ReLU", ["res2a"], "res2a"),
    _conv_bn_scale("res3a_branch1", "bn3a_branch1", "scale3a_branch1", "res2a", 32, 1, 0, 2),
    _conv_bn_scale("res3a_branch2a", "bn3a_branch2a", "scale3a_branch2a", "res2a", 8, 1, 0, 2),
    _layer("res3a_branch2a_relu", "ReLU", ["res3a_branch2a"], "res3a_branch2a"),
    _conv_bn_scale("res3a_branch2b", "bn3a_branch2b", "scale3a_branch2b", "res3a_branch2a", 8, 3, 1, 1),
    _layer("res3a_branch2b_relu", "ReLU", ["res3a_branch2b"], "res3a_branch2b"),
    _conv_bn_scale("res3a_branch2c", "bn3a_branch2c", "scale3a_branch2c", "res3a_branch2b", 32, 1, 0, 1),
    _layer("res3a", "Eltwise", ["res3a_branch1", "res3a_branch2c"], "res3a"),
    _layer("res3a_relu", "ReLU", ["res3a"], "res3a"),
    _layer("pool5", "Pooling", ["res3a"], "pool5", "\tpooling_param {\n\t\tpool: AVE\n\t\tglobal_pooling: true\n\t}"),
    _layer("fc10", "InnerProduct", ["pool5"], "fc10", "\tinner_product_param {\n\t\tnum_output: 10\n\t}"),
    _layer("prob", "Softmax", ["fc10"], "prob"),
])


# --------------------------------------------------------------------------- small nets, one per feature
ZOO: dict[str, str] = {
    "conv_group_dilation": """
input: "data" input_shape { dim: 2 dim: 4 dim: 11 dim: 13 }
layer { name: "conv_a" type: "Convolution" bottom: "data" top: "conv_a"
  convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0
                      group: 2 dilation: 2 } }
layer { name: "conv_b" type: "Convolution" bottom: "conv_a" top: "conv_b"
  convolution_param { num_output: 3 kernel_size: 3 pad: 2 stride: 2 bias_term: false } }
""",
    "pooling_ceil_and_pads": """
input: "data" input_shape { dim: 1 dim: 3 dim: 13 dim: 12 }
layer { name: "max_ceil" type: "Pooling" bottom: "data" top: "max_ceil"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "max_pad" type: "Pooling" bottom: "data" top: "max_pad"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "ave_pad" type: "Pooling" bottom: "data" top: "ave_pad"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "ave_ceil" type: "Pooling" bottom: "data" top: "ave_ceil"
  pooling_param { pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 3 } }
layer { name: "ave_drop_last" type: "Pooling" bottom: "ave_ceil" top: "ave_drop_last"
  pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 } }
layer { name: "max_drop_last" type: "Pooling" bottom: "ave_ceil" top: "max_drop_last"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 } }
""",
    "maxpool_negative": """
input: "data" input_shape { dim: 1 dim: 2 dim: 9 dim: 9 }
layer { name: "sig" type: "Sigmoid" bottom: "data" top: "sig" }
layer { name: "neg" type: "Eltwise" bottom: "sig" bottom: "sig" top: "neg"
  eltwise_param { operation: SUM coeff: -1.5 coeff: -0.5 } }
layer { name: "pool" type: "Pooling" bottom: "neg" top: "pool"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
""",
    "global_pooling": """
input: "data" input_shape { dim: 2 dim: 5 dim: 7 dim: 6 }
layer { name: "gave" type: "Pooling" bottom: "data" top: "gave" pooling_param { pool: AVE global_pooling: true } }
layer { name: "gmax" type: "Pooling" bottom: "data" top: "gmax" pooling_param { pool: MAX global_pooling: true } }
""",
    "lrn": """
input: "data" input_shape { dim: 1 dim: 7 dim: 6 dim: 5 }
layer { name: "across" type: "LRN" bottom: "data" top: "across"
  lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 k: 2 } }
layer { name: "within" type: "LRN" bottom: "data" top: "within"
  lrn_param { local_size: 3 alpha: 0.2 beta: 0.6 norm_region: WITHIN_CHANNEL } }
""",
    "eltwise": """
input: "data" input_shape { dim: 2 dim: 3 dim: 5 dim: 5 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "c2" type: "Convolution" bottom: "data" top: "c2" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "c1" bottom: "c2" top: "sum" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 } }
layer { name: "prod" type: "Eltwise" bottom: "c1" bottom: "c2" bottom: "sum" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "c1" bottom: "prod" top: "max" eltwise_param { operation: MAX } }
""",
    "concat_flatten_softmax": """
input: "data" input_shape { dim: 2 dim: 3 dim: 6 dim: 6 }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "b" type: "Convolution" bottom: "data" top: "b" convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }
layer { name: "cat_h" type: "Concat" bottom: "a" bottom: "a" top: "cat_h" concat_param { axis: 2 } }
layer { name: "flat" type: "Flatten" bottom: "cat" top: "flat" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 7 } }
layer { name: "sm" type: "Softmax" bottom: "fc" top: "sm" }
layer { name: "sm_c" type: "Softmax" bottom: "cat_h" top: "sm_c" }
""",
    "conv_innerproduct": """
input: "data" input_shape { dim: 2 dim: 3 dim: 8 dim: 7 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 5 kernel_size: 3 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc1" type: "InnerProduct" bottom: "conv" top: "fc1" inner_product_param { num_output: 9 } }
layer { name: "drop" type: "Dropout" bottom: "fc1" top: "fc1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2" inner_product_param { num_output: 4 bias_term: false } }
layer { name: "prob" type: "Softmax" bottom: "fc2" top: "prob" }
""",
    "googlenet_style_names": """
input: "data" input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
layer { name: "conv1/7x7_s2" type: "Convolution" bottom: "data" top: "conv1/7x7_s2"
  convolution_param { num_output: 8 pad: 3 kernel_size: 7 stride: 2 } }
layer { name: "conv1/relu_7x7" type: "ReLU" bottom: "conv1/7x7_s2" top: "conv1/7x7_s2" }
layer { name: "pool1/3x3_s2" type: "Pooling" bottom: "conv1/7x7_s2" top: "pool1/3x3_s2"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "pool1/norm1" type: "LRN" bottom: "pool1/3x3_s2" top: "pool1/norm1"
  lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 } }
layer { name: "inception_3a/1x1" type: "Convolution" bottom: "pool1/norm1" top: "inception_3a/1x1"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "inception_3a/relu_1x1" type: "ReLU" bottom: "inception_3a/1x1" top: "inception_3a/1x1" }
layer { name: "inception_3a/3x3_reduce" type: "Convolution" bottom: "pool1/norm1" top: "inception_3a/3x3_reduce"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "inception_3a/relu_3x3_reduce" type: "ReLU" bottom: "inception_3a/3x3_reduce" top: "inception_3a/3x3_reduce" }
layer { name: "inception_3a/3x3" type: "Convolution" bottom: "inception_3a/3x3_reduce" top: "inception_3a/3x3"
  convolution_param { num_output: 4 pad: 1 kernel_size: 3 } }
layer { name: "inception_3a/pool" type: "Pooling" bottom: "pool1/norm1" top: "inception_3a/pool"
  pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "inception_3a/pool_proj" type: "Convolution" bottom: "inception_3a/pool" top: "inception_3a/pool_proj"
  convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "inception_3a/output" type: "Concat" bottom: "inception_3a/1x1" bottom: "inception_3a/3x3"
  bottom: "inception_3a/pool_proj" top: "inception_3a/output" }
layer { name: "pool5/7x7_s1" type: "Pooling" bottom: "inception_3a/output" top: "pool5/7x7_s1"
  pooling_param { pool: AVE kernel_size: 7 stride: 1 } }
layer { name: "pool5/drop_7x7_s1" type: "Dropout" bottom: "pool5/7x7_s1" top: "pool5/7x7_s1" dropout_param { dropout_ratio: 0.4 } }
layer { name: "loss3/classifier" type: "InnerProduct" bottom: "pool5/7x7_s1" top: "loss3/classifier"
  inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "loss3/classifier" top: "prob" }
""",
    "deconvolution": """
input: "data" input_shape { dim: 2 dim: 4 dim: 5 dim: 6 }
layer { name: "up" type: "Deconvolution" bottom: "data" top: "up"
  convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 } }
layer { name: "smooth" type: "Deconvolution" bottom: "up" top: "smooth"
  convolution_param { num_output: 2 kernel_size: 3 pad: 1 bias_term: false } }
""",
    # OpenCV's importer ignores a deconvolution's dilation and pad_h/pad_w (shapes differ from Caffe's),
    # so this one is checked against the adjoint of Caffe's convolution instead (test_reference.py)
    "deconvolution_dilated": """
input: "data" input_shape { dim: 1 dim: 3 dim: 5 dim: 4 }
layer { name: "dil" type: "Deconvolution" bottom: "data" top: "dil"
  convolution_param { num_output: 2 kernel_h: 3 kernel_w: 2 dilation: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 } }
""",
    "elu_prelu": """
input: "data" input_shape { dim: 2 dim: 3 dim: 6 dim: 5 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "prelu" type: "PReLU" bottom: "conv" top: "conv" }
layer { name: "elu" type: "ELU" bottom: "conv" top: "elu" elu_param { alpha: 0.7 } }
layer { name: "prelu_shared" type: "PReLU" bottom: "elu" top: "prelu_shared" prelu_param { channel_shared: true } }
layer { name: "fc" type: "InnerProduct" bottom: "prelu_shared" top: "fc" inner_product_param { num_output: 6 } }
layer { name: "prelu_fc" type: "PReLU" bottom: "fc" top: "fc" }
""",
    "bn_scale_activations": """
input: "data" input_shape { dim: 2 dim: 4 dim: 5 dim: 6 }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" batch_norm_param { eps: 0.001 } }
layer { name: "scale" type: "Scale" bottom: "data" top: "data" scale_param { bias_term: false } }
layer { name: "leaky" type: "ReLU" bottom: "data" top: "leaky" relu_param { negative_slope: 0.1 } }
layer { name: "sig" type: "Sigmoid" bottom: "leaky" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "leaky" top: "tanh" }
""",
    # FCN-32s in miniature: conv1's large pad (FCN's pad 100), ceil-mode pools, a 1x1 score layer, a learned
    # Deconvolution upsampling it, and Crop aligning the upsampled scores with the input (axis 2, offset)
    "fcn_style": """
input: "data" input_shape { dim: 1 dim: 3 dim: 20 dim: 20 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 pad: 10 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "score" type: "Convolution" bottom: "pool2" top: "score" convolution_param { num_output: 5 kernel_size: 1 } }
layer { name: "upscore" type: "Deconvolution" bottom: "score" top: "upscore"
  convolution_param { num_output: 5 kernel_size: 8 stride: 4 bias_term: false } }
layer { name: "score_crop" type: "Crop" bottom: "upscore" bottom: "data" top: "score_crop" crop_param { axis: 2 offset: 5 } }
layer { name: "prob" type: "Softmax" bottom: "score_crop" top: "prob" }
""",
    # MobileNet-SSD in miniature: depthwise separable backbone, two heads (Permute + Flatten + Concat),
    # Normalize, PriorBox per head, sigmoid scores, DetectionOutput (CENTER_SIZE, NMS, keep_top_k)
    "ssd_mobilenet_style": """
input: "data" input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
layer { name: "conv0" type: "Convolution" bottom: "data" top: "conv0"
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 bias_term: false } }
layer { name: "conv0/bn" type: "BatchNorm" bottom: "conv0" top: "conv0" }
layer { name: "conv0/scale" type: "Scale" bottom: "conv0" top: "conv0" scale_param { bias_term: true } }
layer { name: "conv0/relu" type: "ReLU" bottom: "conv0" top: "conv0" }
layer { name: "conv1/dw" type: "Convolution" bottom: "conv0" top: "conv1/dw"
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 group: 8 bias_term: false } }
layer { name: "conv1/dw/relu" type: "ReLU" bottom: "conv1/dw" top: "conv1/dw" }
layer { name: "conv1" type: "Convolution" bottom: "conv1/dw" top: "conv1" convolution_param { num_output: 16 kernel_size: 1 } }
layer { name: "conv1/relu" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 16 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "conv2/relu" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "conv1_mbox_loc" type: "Convolution" bottom: "conv1" top: "conv1_mbox_loc"
  convolution_param { num_output: 12 kernel_size: 3 pad: 1 } }
layer { name: "conv1_mbox_loc_perm" type: "Permute" bottom: "conv1_mbox_loc" top: "conv1_mbox_loc_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conv1_mbox_loc_flat" type: "Flatten" bottom: "conv1_mbox_loc_perm" top: "conv1_mbox_loc_flat" }
layer { name: "conv1_mbox_conf" type: "Convolution" bottom: "conv1" top: "conv1_mbox_conf"
  convolution_param { num_output: 9 kernel_size: 3 pad: 1 } }
layer { name: "conv1_mbox_conf_perm" type: "Permute" bottom: "conv1_mbox_conf" top: "conv1_mbox_conf_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conv1_mbox_conf_flat" type: "Flatten" bottom: "conv1_mbox_conf_perm" top: "conv1_mbox_conf_flat" }
layer { name: "conv1_mbox_priorbox" type: "PriorBox" bottom: "conv1" bottom: "data" top: "conv1_mbox_priorbox"
  prior_box_param { min_size: 6 aspect_ratio: 2 flip: true clip: false
    variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 offset: 0.5 } }
layer { name: "conv2_norm" type: "Normalize" bottom: "conv2" top: "conv2_norm"
  norm_param { across_spatial: false channel_shared: false scale_filler { type: "constant" value: 20 } } }
layer { name: "conv2_mbox_loc" type: "Convolution" bottom: "conv2_norm" top: "conv2_mbox_loc"
  convolution_param { num_output: 24 kernel_size: 3 pad: 1 } }
layer { name: "conv2_mbox_loc_perm" type: "Permute" bottom: "conv2_mbox_loc" top: "conv2_mbox_loc_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conv2_mbox_loc_flat" type: "Flatten" bottom: "conv2_mbox_loc_perm" top: "conv2_mbox_loc_flat" }
layer { name: "conv2_mbox_conf" type: "Convolution" bottom: "conv2_norm" top: "conv2_mbox_conf"
  convolution_param { num_output: 18 kernel_size: 3 pad: 1 } }
layer { name: "conv2_mbox_conf_perm" type: "Permute" bottom: "conv2_mbox_conf" top: "conv2_mbox_conf_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conv2_mbox_conf_flat" type: "Flatten" bottom: "conv2_mbox_conf_perm" top: "conv2_mbox_conf_flat" }
layer { name: "conv2_mbox_priorbox" type: "PriorBox" bottom: "conv2_norm" bottom: "data" top: "conv2_mbox_priorbox"
  prior_box_param { min_size: 12 max_size: 24 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: false
    variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 offset: 0.5 } }
layer { name: "mbox_loc" type: "Concat" bottom: "conv1_mbox_loc_flat" bottom: "conv2_mbox_loc_flat" top: "mbox_loc"
  concat_param { axis: 1 } }
layer { name: "mbox_conf" type: "Concat" bottom: "conv1_mbox_conf_flat" bottom: "conv2_mbox_conf_flat" top: "mbox_conf"
  concat_param { axis: 1 } }
layer { name: "mbox_priorbox" type: "Concat" bottom: "conv1_mbox_priorbox" bottom: "conv2_mbox_priorbox"
  top: "mbox_priorbox" concat_param { axis: 2 } }
layer { name: "mbox_conf_sigmoid" type: "Sigmoid" bottom: "mbox_conf" top: "mbox_conf_sigmoid" }
layer { name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc" bottom: "mbox_conf_sigmoid"
  bottom: "mbox_priorbox" top: "detection_out"
  detection_output_param { num_classes: 3 share_location: true background_label_id: 0
    nms_param { nms_threshold: 0.45 top_k: 100 } code_type: CENTER_SIZE keep_top_k: 40 confidence_threshold: 0.2 } }
""",
    # A CRNN text recogniser in miniature, as the OCR fork's (senlinuc/caffe_ocr) deploy nets: conv features
    # pooled to one row, Transpose + Reshape into a sequence (T, N, C), a forward Lstm and a backward one
    # between two Reverses, Concat, per-step InnerProduct, CTCGreedyDecoder (labels, -1 after the text)
    "crnn_style": """
input: "data" input_shape { dim: 1 dim: 3 dim: 16 dim: 48 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "conv1/scale" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: AVE kernel_h: 8 kernel_w: 1 stride_h: 1 stride_w: 1 } }
layer { name: "pool2_transpose" type: "Transpose" bottom: "pool2" top: "pool2_transpose"
  transpose_param { dim: 3 dim: 2 dim: 0 dim: 1 } }
layer { name: "blstm_input" type: "Reshape" bottom: "pool2_transpose" top: "blstm_input"
  reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 } }
layer { name: "lstm1" type: "Lstm" bottom: "blstm_input" top: "lstm1" lstm_param { num_output: 12 } }
layer { name: "lstm1-reverse1" type: "Reverse" bottom: "blstm_input" top: "rlstm1_input" reverse_param { axis: 0 } }
layer { name: "rlstm1" type: "Lstm" bottom: "rlstm1_input" top: "rlstm1-output" lstm_param { num_output: 12 } }
layer { name: "lstm1-reverse2" type: "Reverse" bottom: "rlstm1-output" top: "rlstm1" reverse_param { axis: 0 } }
layer { name: "blstm1" type: "Concat" bottom: "lstm1" bottom: "rlstm1" top: "blstm1" concat_param { axis: 2 } }
layer { name: "fc1x" type: "InnerProduct" bottom: "blstm1" top: "fc1x" inner_product_param { num_output: 11 axis: 2 } }
layer { name: "result" type: "CTCGreedyDecoder" bottom: "fc1x" top: "result" }
""",
}


# --------------------------------------------------------------------------- weights
def synthesize(prototxt_text: str, seed: int = 0, *, progress: bool = False) -> bytes:
    """Seeded, calibrated weights for a deploy net, serialised as a ``.caffemodel`` (``layer`` format).

    ``progress`` shows tqdm bars on stderr for each stage (a ResNet-152 takes a while)."""
    from .proto import caffe_pb2
    from .reader import graph_from_text, parse_prototxt_text

    graph = graph_from_text(prototxt_text, seed=seed, progress=progress)
    net = parse_prototxt_text(prototxt_text)
    out = caffe_pb2.NetParameter()
    out.name = net.name
    layers: Any = net.layer
    if progress:
        from tqdm import tqdm

        layers = tqdm(layers, desc="serialising blobs", unit="layer", leave=False)
    for layer in layers:
        if layer.type == "Input":
            continue
        dst = out.layer.add()
        dst.CopyFrom(layer)
        for arr in caffe_blobs(graph, layer.name):
            blob = dst.blobs.add()
            blob.shape.dim.extend(arr.shape)
            blob.data.extend(arr.ravel().tolist())
    return out.SerializeToString()


def caffe_blobs(graph, layer_name: str) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """A node's tensors in Caffe's stored form (BatchNorm: statistics times the factor, then the factor)."""
    try:
        node = graph.node(layer_name)
    except KeyError:
        return []
    if node.op == "BatchNorm":
        mean, var = graph.param(node, "running_mean"), graph.param(node, "running_var")
        return [mean * BN_FACTOR, var * BN_FACTOR, np.array([BN_FACTOR], dtype=np.float32)]
    return [graph.tensors[key] for key in node.params.values()]


def write_model(name: str, directory: str | Path, seed: int = 0, *, progress: bool = False,
                overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<name>.caffemodel`` and ``<name>-deploy.prototxt`` (``name``: resnet50/101/152, tiny,
    or a :data:`ZOO` entry) into ``directory``; return both paths.

    The output is deterministic, so files already holding exactly these bytes are left as they are;
    different existing files are kept (and this fails) unless ``overwrite``."""
    from .fileio import atomic_output

    text = prototxt_for(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / f"{name}.caffemodel"
    deploy = directory / f"{name}-deploy.prototxt"
    with atomic_output(model, overwrite=overwrite) as tmp:
        if name == "vgg16":  # 528 MB: streamed layer by layer, never held as one message
            write_vgg(tmp, seed=seed)
        else:
            data = synthesize(text, seed, progress=progress)
            tmp.write_bytes(zoo.to_v1_caffemodel(data) if name in zoo.MODELS and zoo.MODELS[name].v1 else data)
    with atomic_output(deploy, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return model, deploy


def prototxt_for(name: str) -> str:
    """Deploy text of a built-in model by name."""
    from .errors import Caffe2xError

    if name.startswith("resnet") and name[6:].isdigit() and int(name[6:]) in _RESNET_BLOCKS:
        return resnet_prototxt(int(name[6:]))
    if name == "tiny":
        return TINY_PROTOTXT
    if name == "vgg16":
        return vgg_prototxt()
    if name in zoo.MODELS:
        return zoo.MODELS[name].prototxt()
    if name in ZOO:
        return ZOO[name]
    raise Caffe2xError(f"unknown built-in model {name!r}; choose resnet50, resnet101, resnet152, vgg16, tiny, "
                       f"{', '.join(zoo.MODELS)} or one of {', '.join(ZOO)}")


@functools.lru_cache(maxsize=None)
def _graph_cached(name: str, seed: int):  # type: ignore[no-untyped-def]
    from .reader import read_bytes

    text = prototxt_for(name)
    return read_bytes(synthesize(text, seed), text)


def graph(name: str, seed: int = 0):  # type: ignore[no-untyped-def]
    """A built-in model read back from its synthesised caffemodel (cached per process; a fresh copy of
    the structure is returned each call, tensors shared read-only)."""
    return _graph_cached(name, seed).copy()


# --------------------------------------------------------------------------- VGG-16, V1 format
#: VGG-16 (configuration D): output channels of the 3x3 convolutions, stage by stage (a 2x2 max pool
#: after each stage), then the fully connected layers
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_FC: tuple[int, ...] = (4096, 4096, 1000)


def vgg_prototxt(stages: tuple[tuple[int, ...], ...] = VGG16_STAGES, fc: tuple[int, ...] = VGG16_FC,
                 input_shape: tuple[int, int, int, int] = (1, 3, 224, 224)) -> str:
    """Deploy text of a VGG net in the V1 ``layers`` format the VGG team published VGG-16 in (enum
    types, ``input_dim``); the defaults are VGG-16, 138,357,544 parameters."""
    out = ['name: "VGG_ILSVRC_16_layers"', 'input: "data"', *(f"input_dim: {d}" for d in input_shape)]

    def layer(name: str, type_: str, bottom: str, top: str, body: str = "") -> None:
        out.append(f'layers {{\n  bottom: "{bottom}"\n  top: "{top}"\n  name: "{name}"\n  type: {type_}'
                   + (f"\n  {body}" if body else "") + "\n}")

    bottom = "data"
    for s, widths in enumerate(stages, start=1):
        for i, width in enumerate(widths, start=1):
            name = f"conv{s}_{i}"
            layer(name, "CONVOLUTION", bottom, name, f"convolution_param {{ num_output: {width} pad: 1 kernel_size: 3 }}")
            layer(f"relu{s}_{i}", "RELU", name, name)
            bottom = name
        layer(f"pool{s}", "POOLING", bottom, f"pool{s}", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
        bottom = f"pool{s}"
    for i, width in enumerate(fc, start=6):
        layer(f"fc{i}", "INNER_PRODUCT", bottom, f"fc{i}", f"inner_product_param {{ num_output: {width} }}")
        bottom = f"fc{i}"
        if i < 5 + len(fc):
            layer(f"relu{i}", "RELU", bottom, bottom)
            layer(f"drop{i}", "DROPOUT", bottom, bottom, "dropout_param { dropout_ratio: 0.5 }")
    layer("prob", "SOFTMAX", bottom, "prob")
    return "\n".join(out) + "\n"


def vgg_blob_shapes(stages: tuple[tuple[int, ...], ...] = VGG16_STAGES, fc: tuple[int, ...] = VGG16_FC,
                    input_shape: tuple[int, int, int, int] = (1, 3, 224, 224)) -> dict[str, list[tuple[int, ...]]]:
    """Layer name -> its blobs' shapes (weight, bias) as Caffe stores them for :func:`vgg_prototxt`."""
    shapes: dict[str, list[tuple[int, ...]]] = {}
    _, c, h, w = input_shape
    for s, widths in enumerate(stages, start=1):
        for i, width in enumerate(widths, start=1):
            shapes[f"conv{s}_{i}"] = [(width, c, 3, 3), (width,)]
            c = width
        h, w = -(-(h - 2) // 2) + 1, -(-(w - 2) // 2) + 1  # Caffe's ceil-mode 2x2/2 pooling
    features = c * h * w
    for i, width in enumerate(fc, start=6):
        shapes[f"fc{i}"] = [(width, features), (width,)]
        features = width
    return shapes


def write_vgg(path: str | Path, seed: int = 0, stages: tuple[tuple[int, ...], ...] = VGG16_STAGES,
              fc: tuple[int, ...] = VGG16_FC, input_shape: tuple[int, int, int, int] = (1, 3, 224, 224)) -> int:
    """Write :func:`vgg_prototxt`'s net with seeded He-scaled weights as a V1-format caffemodel with
    legacy 4-D blob dims (``num/channels/height/width``, InnerProduct ``1 x 1 x out x in``), as the
    published VGG-16 file is stored. Streamed layer by layer, so a 528 MB model needs one layer's
    weights in memory. Returns the number of parameters written."""
    from google.protobuf import text_format

    from .proto import caffe_pb2
    from .wire import _encode_varint as varint

    def field(number: int, wire_type: int) -> bytes:
        return varint(number << 3 | wire_type)

    net = text_format.Parse(vgg_prototxt(stages, fc, input_shape), caffe_pb2.NetParameter())
    shapes = vgg_blob_shapes(stages, fc, input_shape)
    rng = np.random.default_rng(seed)
    count = 0
    with open(path, "wb") as f:
        head = caffe_pb2.NetParameter()
        head.CopyFrom(net)
        head.ClearField("layers")
        f.write(head.SerializeToString())
        for layer in net.layers:
            arrays = []
            for shape in shapes.get(layer.name, []):
                if len(shape) > 1:
                    arr = rng.standard_normal(shape, dtype=np.float32)
                    arr *= np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
                else:
                    arr = rng.standard_normal(shape, dtype=np.float32)
                    arr *= np.float32(0.1)
                arrays.append(arr)
            blobs = []
            for arr in arrays:
                dims = [1] * (4 - arr.ndim) + list(arr.shape)
                legacy = b"".join(field(n, 0) + varint(d) for n, d in zip((1, 2, 3, 4), dims))
                blobs.append((legacy + field(5, 2) + varint(arr.nbytes), arr))
            structure = layer.SerializeToString()
            size = len(structure) + sum(len(field(6, 2)) + len(varint(len(h) + a.nbytes)) + len(h) + a.nbytes
                                        for h, a in blobs)
            f.write(field(2, 2) + varint(size) + structure)
            for h, a in blobs:
                f.write(field(6, 2) + varint(len(h) + a.nbytes) + h)
                f.write(memoryview(np.ascontiguousarray(a, dtype="<f4")))
                count += a.size
    return count
