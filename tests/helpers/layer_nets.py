"""Small nets, one per layer family and tricky parameter, shared by the layer conformance tests.

``opencv`` says whether OpenCV's Caffe importer computes what Caffe computes for every layer of the
net (then the reference is compared with it); where it does not, ``why`` names the deviation and the
net is checked against Caffe's formula in test_layers_reference.py instead.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Inputs = Callable[[dict[str, tuple[int, ...]]], dict[str, np.ndarray]]


def gaussian(shapes: dict[str, tuple[int, ...]], seed: int = 7, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in shapes.items()}


def positive(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Inputs in [0.1, 3): fractional powers and logs stay real."""
    rng = np.random.default_rng(11)
    return {k: rng.uniform(0.1, 3.0, s).astype(np.float32) for k, s in shapes.items()}


def small_integers(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Inputs in {0, 1, 2}: equal values everywhere, for the order of ties."""
    rng = np.random.default_rng(13)
    return {k: rng.integers(0, 3, s).astype(np.float32) for k, s in shapes.items()}


@dataclass(frozen=True)
class Net:
    text: str
    opencv: bool = True
    why: str = ""
    inputs: Inputs = field(default=gaussian)


def _net(shape: tuple[int, ...], *layers: str, inputs: str = "") -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'input: "data" input_shape {{ {dims} }}\n{inputs}' + "\n".join(layers) + "\n"


def _layer(name: str, type_: str, bottoms: str | list[str], body: str = "", tops: str | list[str] | None = None) -> str:
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = [name] if tops is None else ([tops] if isinstance(tops, str) else tops)
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {body} }}'


S4 = (2, 3, 4, 5)

NETS: dict[str, Net] = {
    # ------------------------------------------------------------------ elementwise
    "power": Net(_net(S4, _layer("sq", "Power", "data", "power_param { power: 2 scale: 0.5 shift: 3 }"),
                      _layer("lin", "Power", "data", "power_param { scale: -1.5 shift: 0.25 }"))),
    "power_fractional": Net(_net(S4, _layer("sqrt", "Power", "data", "power_param { power: 0.5 }"),
                                 _layer("inv", "Power", "data", "power_param { power: -1 scale: 2 shift: 0.5 }")),
                            inputs=positive),
    "power_constant": Net(_net(S4, _layer("one", "Power", "data", "power_param { power: 0 scale: 3 shift: 2 }"),
                               _layer("const", "Power", "data", "power_param { power: 3 scale: 0 shift: 2 }"))),
    "absval_bnll": Net(_net(S4, _layer("abs", "AbsVal", "data"), _layer("bnll", "BNLL", "data")), inputs=lambda s: gaussian(s, scale=4.0)),
    "exp": Net(_net(S4, _layer("e", "Exp", "data"),
                    _layer("e2", "Exp", "data", "exp_param { base: 2 scale: 0.5 shift: 1 }"),
                    _layer("e3", "Exp", "data", "exp_param { scale: -1 shift: 0.5 }"))),
    "log": Net(_net(S4, _layer("ln", "Log", "data")), inputs=positive),
    "log_base_scale_shift": Net(_net(S4, _layer("log10", "Log", "data", "log_param { base: 10 scale: 2 shift: 6 }"),
                                     _layer("ln_shift", "Log", "data", "log_param { shift: 5 }")),
                                opencv=False, why="OpenCV's Log ignores base, scale and shift (natural log of x)"),
    "threshold": Net(_net(S4, _layer("th", "Threshold", "data", "threshold_param { threshold: 0.2 }"),
                          _layer("th0", "Threshold", "data")),
                     opencv=False, why="OpenCV has no Threshold layer"),
    "clip": Net(_net(S4, _layer("clip", "Clip", "data", "clip_param { min: -0.5 max: 0.7 }")),
                opencv=False, why="OpenCV has no Caffe Clip layer"),
    "swish": Net(_net(S4, _layer("swish", "Swish", "data"))),
    "swish_beta": Net(_net(S4, _layer("swish_b", "Swish", "data", "swish_param { beta: 1.7 }")),
                      opencv=False, why="OpenCV's Swish ignores beta (x * sigmoid(x))"),
    # ------------------------------------------------------------------ broadcast
    "bias_learned": Net(_net(S4, _layer("b", "Bias", "data"),
                             _layer("b2", "Bias", "b", "bias_param { axis: 1 num_axes: 2 }"),
                             _layer("b3", "Bias", "b2", "bias_param { axis: -2 num_axes: -1 }"),
                             _layer("b0", "Bias", "b3", "bias_param { num_axes: 0 }")),
                        opencv=False, why="OpenCV has no Bias layer"),
    "bias_two_inputs": Net(_net(S4, _layer("bb", "Bias", ["data", "b"]),
                                inputs='input: "b" input_shape { dim: 3 dim: 4 }\n'),
                           opencv=False, why="OpenCV has no Bias layer"),
    "scale_two_inputs": Net(_net(S4, _layer("pool", "Pooling", "data", "pooling_param { pool: AVE global_pooling: true }"),
                                 _layer("sig", "Sigmoid", "pool"),
                                 _layer("flat", "Flatten", "sig"),
                                 _layer("se", "Scale", ["data", "flat"], "scale_param { axis: 0 }"),
                                 _layer("per_c", "Scale", ["se", "s"]),
                                 inputs='input: "s" input_shape { dim: 3 }\n')),
    "scale_two_inputs_bias": Net(_net(S4, _layer("sb", "Scale", ["data", "s"], "scale_param { bias_term: true }"),
                                      inputs='input: "s" input_shape { dim: 3 dim: 4 }\n'),
                                 opencv=False, why="OpenCV misapplies the bias of a two-input Scale"),
    "axpy": Net(_net(S4, _layer("pool", "Pooling", "data", "pooling_param { pool: AVE global_pooling: true }"),
                     _layer("sig", "Sigmoid", "pool"),
                     _layer("conv", "Convolution", "data", "convolution_param { num_output: 3 kernel_size: 1 }"),
                     _layer("axpy", "Axpy", ["sig", "conv", "data"])),
                opencv=False, why="OpenCV's Axpy takes the two blob bottoms in the other order "
                                  "(tests/validation/test_oracle_opencv.py feeds them swapped)"),
    # ------------------------------------------------------------------ shape
    "reshape": Net(_net(S4, _layer("r1", "Reshape", "data", "reshape_param { shape { dim: 0 dim: -1 dim: 10 } }"),
                        _layer("r2", "Reshape", "r1", "reshape_param { shape { dim: 2 dim: 3 } axis: 1 num_axes: 1 }"))),
    "reshape_negative_axis": Net(_net(S4, _layer("r3", "Reshape", "data", "reshape_param { shape { dim: -1 } axis: -3 }"),
                                      _layer("r4", "Reshape", "r3", "reshape_param { shape { dim: 1 dim: 1 } axis: -1 num_axes: 0 }")),
                                 opencv=False, why="OpenCV's Reshape rejects negative axes"),
    "tile": Net(_net(S4, _layer("t1", "Tile", "data", "tile_param { tiles: 2 }"),
                     _layer("t2", "Tile", "data", "tile_param { axis: -1 tiles: 3 }")),
                opencv=False, why="OpenCV's Caffe importer has no Tile layer (its Tile is ONNX's)"),
    "crop": Net(_net((2, 3, 9, 11), _layer("c1", "Crop", ["data", "ref"], "crop_param { offset: 2 }"),
                     _layer("c2", "Crop", ["data", "ref"], "crop_param { axis: 2 offset: 1 offset: 3 }"),
                     _layer("c3", "Crop", ["data", "ref2"], "crop_param { axis: 1 offset: 1 offset: 0 offset: 2 }"),
                     inputs='input: "ref" input_shape { dim: 1 dim: 1 dim: 5 dim: 6 }\n'
                            'input: "ref2" input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n')),
    "slice": Net(_net((2, 6, 4, 5), _layer("s1", "Slice", "data", "slice_param { slice_point: 1 slice_point: 4 }",
                                            ["a", "b", "c"]),
                      _layer("s4", "Slice", "data", "slice_param { axis: -1 slice_point: 3 }", ["h", "i"]))),
    "slice_equal_and_slice_dim": Net(_net((2, 6, 4, 5), _layer("s2", "Slice", "data", "slice_param { axis: 2 }", ["d", "e"]),
                                          _layer("s3", "Slice", "data", "slice_param { slice_dim: 3 slice_point: 2 }",
                                                 ["f", "g"])),
                                     opencv=False, why="OpenCV fails on Slice without slice_point and ignores slice_dim"),
    # ------------------------------------------------------------------ reductions
    "reduction": Net(_net(S4, _layer("sum", "Reduction", "data", "reduction_param { axis: 1 }"),
                          _layer("asum", "Reduction", "data", "reduction_param { operation: ASUM axis: 2 coeff: 0.5 }"),
                          _layer("sumsq", "Reduction", "data", "reduction_param { operation: SUMSQ axis: -1 }"),
                          _layer("mean", "Reduction", "data", "reduction_param { operation: MEAN axis: 1 coeff: 2 }")),
                     opencv=False, why="OpenCV's Caffe importer has no Reduction layer"),
    "reduction_all": Net(_net(S4, _layer("total", "Reduction", "data", "reduction_param { operation: MEAN }")),
                         opencv=False, why="OpenCV's Caffe importer has no Reduction layer"),
    "argmax": Net(_net(S4, _layer("am", "ArgMax", "data", "argmax_param { axis: 1 }"),
                       _layer("am_val", "ArgMax", "data", "argmax_param { axis: 3 top_k: 2 out_max_val: true }")),
                  opencv=False, why="OpenCV's Caffe importer has no ArgMax layer"),
    "argmax_ties": Net(_net(S4, _layer("am_ties", "ArgMax", "data", "argmax_param { axis: 1 top_k: 2 }"),
                            _layer("flat_ties", "ArgMax", "data", "argmax_param { top_k: 4 out_max_val: true }")),
                       opencv=False, why="OpenCV's Caffe importer has no ArgMax layer", inputs=small_integers),
    "batch_axis_argmax_reduction": Net(_net(S4, _layer("am0", "ArgMax", "data", "argmax_param { axis: 0 top_k: 2 }"),
                                            _layer("red0", "Reduction", "data",
                                                   "reduction_param { operation: SUMSQ axis: 0 coeff: 0.5 }")),
                                       opencv=False, why="OpenCV's Caffe importer has no ArgMax or Reduction layer",
                                       inputs=small_integers),
    "argmax_flat": Net(_net(S4, _layer("top3", "ArgMax", "data", "argmax_param { top_k: 3 }"),
                            _layer("top2_val", "ArgMax", "data", "argmax_param { top_k: 2 out_max_val: true }")),
                       opencv=False, why="OpenCV's Caffe importer has no ArgMax layer"),
    # ------------------------------------------------------------------ normalization
    "mvn": Net(_net(S4, _layer("mvn", "MVN", "data"),
                    _layer("mvn_across", "MVN", "data", "mvn_param { across_channels: true }"),
                    _layer("mean_only", "MVN", "data", "mvn_param { normalize_variance: false }"))),
    "mvn_eps": Net(_net(S4, _layer("mvn_eps", "MVN", "data", "mvn_param { across_channels: true eps: 0.01 }")),
                   opencv=False, why="OpenCV's MVN adds eps to the variance, Caffe's to the standard deviation"),
    "batchnorm_batch_statistics": Net(_net(S4, _layer("bn", "BatchNorm", "data",
                                                      "batch_norm_param { use_global_stats: false eps: 0.001 }")),
                                      opencv=False, why="OpenCV's BatchNorm always uses the stored statistics"),
    # ------------------------------------------------------------------ channels, lookup
    "depthwise": Net(_net((2, 4, 7, 6), _layer("dw", "ConvolutionDepthwise", "data",
                                                "convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 }"),
                          _layer("dw2", "ConvolutionDepthwise", "dw",
                                 "convolution_param { num_output: 8 kernel_size: 3 bias_term: false }")),
                     opencv=False, why="OpenCV's Caffe importer has no ConvolutionDepthwise layer"),
    "embed": Net(_net((2, 3), _layer("th", "Threshold", "data"),
                      _layer("emb", "Embed", "th", "embed_param { input_dim: 2 num_output: 4 }"),
                      _layer("am", "ArgMax", "data", "argmax_param { axis: 1 }"),
                      _layer("emb2", "Embed", "am", "embed_param { input_dim: 3 num_output: 5 bias_term: false }")),
                 opencv=False, why="OpenCV's Caffe importer has no Embed layer"),
    # ------------------------------------------------------------------ fork layers (fork schema fields)
    "permute": Net(_net(S4, _layer("p1", "Permute", "data", "permute_param { order: 0 order: 2 order: 3 order: 1 }"),
                        _layer("p3", "Permute", "p1", "permute_param { order: 0 order: 3 order: 2 order: 1 }"))),
    "permute_partial_order": Net(_net(S4, _layer("p2", "Permute", "data", "permute_param { order: 0 order: 3 }")),
                                 opencv=False, why="OpenCV's Permute refuses an order that leaves axes out"),
    "shuffle_channel": Net(_net((2, 6, 3, 4), _layer("shuffle", "ShuffleChannel", "data", "shuffle_channel_param { group: 3 }"),
                                _layer("shuffle2", "ShuffleChannel", "shuffle", "shuffle_channel_param { group: 2 }"))),
    "bn_fork_segnet": Net(_net(S4, _layer("bn_inf", "BN", "data", "bn_param { bn_mode: INFERENCE }"),
                               _layer("bn_learn", "BN", "data")),
                          opencv=False, why="OpenCV has no fork BN layer"),
    "relu6": Net(_net(S4, _layer("r6", "ReLU6", "data")), inputs=lambda s: gaussian(s, scale=8.0)),
    "depthwise_convolution": Net(_net((2, 4, 7, 6), _layer("dw", "DepthwiseConvolution", "data",
                                                           "convolution_param { num_output: 4 kernel_size: 3 pad: 1 "
                                                           "stride: 2 group: 4 }")),
                                 opencv=False, why="OpenCV's Caffe importer cannot create a DepthwiseConvolution"),
    "spp": Net(_net((2, 3, 13, 11), _layer("spp", "SPP", "data", "spp_param { pyramid_height: 3 }"),
                    _layer("spp_ave", "SPP", "data", "spp_param { pyramid_height: 2 pool: AVE }"),
                    _layer("spp1", "SPP", "data", "spp_param { pyramid_height: 1 }")),
               opencv=False, why="OpenCV's Caffe importer cannot create an SPP layer"),
    "bn_fork_pspnet": Net(_net(S4, _layer("bn_psp", "BN", "data", "bn_param { frozen: true eps: 0.001 }")),
                          opencv=False, why="OpenCV has no fork BN layer"),
}
