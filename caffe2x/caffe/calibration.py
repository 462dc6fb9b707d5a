"""Seeded statistics for a weightless net: every BatchNorm is set from what reaches it.

A prototxt without a caffemodel gets random weights (:class:`caffe2x.caffe.reader.BlobSource`); random
BatchNorm statistics would make a deep net's activations explode or vanish, so the net is run once
on a seeded, image-like input and each BatchNorm takes the mean and variance it actually sees. The
result behaves like a trained net, which is what the synthetic fixtures and tests rely on.
"""
from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph, Shape


def _calibration_input(shape: Shape, rng: np.random.Generator, block: int = 16) -> np.ndarray:
    """Unit-scale calibration input: white noise, plus a smooth image-like sample for 4-D inputs."""
    if len(shape) != 4 or min(shape[2:]) < 2 * block:
        return rng.standard_normal(shape)
    _, c, h, w = shape
    white = rng.standard_normal((1, c, h, w))
    coarse = rng.standard_normal((1, c, -(-h // block), -(-w // block)))
    smooth = np.kron(coarse, np.ones((1, 1, block, block)))[:, :, :h, :w] + 0.2 * rng.standard_normal((1, c, h, w))
    return np.concatenate([white, smooth])


def calibrate(graph: Graph, seed: int = 0, input_scale: float = 50.0, *, progress: bool = False) -> None:
    """Set every BatchNorm's statistics from what reaches it on a seeded input (see :mod:`fixtures`).

    The input has standard deviation ``input_scale`` (50: about what a mean-subtracted BGR image in
    [0, 255] looks like, which is what Caffe zoo nets are fed). For image-shaped inputs it is a batch
    of two: white noise, and a blocky smooth field with a little noise on top, since photos are mostly
    smooth and a net calibrated on white noise alone would see photos as far out of range.

    Runs the net node by node with the reference executor, so each BatchNorm sees activations
    already normalised upstream: a weightless net behaves like a trained one, 50 layers deep.
    """
    from caffe2x.graph.reference import OPS

    # Residual branches end in a Scale feeding an Eltwise after the shortcut; trained ResNets keep
    # those gammas small, and without that a random net amplifies float rounding block after block.
    residual_ends = {v for n in graph.nodes if n.op == "Eltwise" for v in n.inputs[1:]}
    for node in graph.nodes:
        if node.op == "Scale" and node.outputs[0] in residual_ends:
            key = node.params["weight"]
            graph.tensors[key] = (graph.tensors[key] * np.float32(0.25)).astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    values = {name: (_calibration_input(shape, rng) * input_scale).astype(np.float32)
              for name, shape in graph.inputs.items()}
    nodes: Any = graph.nodes
    if progress:
        from tqdm import tqdm

        nodes = tqdm(nodes, desc="calibrating BatchNorm", unit="layer", leave=False)
    for node in nodes:
        ins = [values[v] for v in node.inputs]
        if node.op == "BatchNorm":
            x = ins[0]
            axes = tuple(i for i in range(x.ndim) if i != 1)
            mean = x.mean(axis=axes)
            # floor near-dead channels: a variance of ~0 would make the BatchNorm amplify float
            # rounding by up to 1/sqrt(eps), which trained nets do not do
            var = np.maximum(x.var(axis=axes), 0.05 * float(np.median(x.var(axis=axes))) + 1e-3)
            jitter = np.random.default_rng([seed, zlib.crc32(node.name.encode())])
            graph.tensors[node.params["running_mean"]] = (mean + 0.05 * np.sqrt(var) * jitter.standard_normal(mean.shape)).astype(np.float32)
            graph.tensors[node.params["running_var"]] = (var * jitter.uniform(0.8, 1.25, var.shape)).astype(np.float32)
        try:
            outs = OPS[node.op](node, ins, graph)
        except Caffe2xError:
            # noise is not a valid input everywhere (region rows naming images, unpooling masks):
            # BatchNorms from here on keep their seeded statistics
            break
        for name, val in zip(node.outputs, outs):
            values[name] = val
