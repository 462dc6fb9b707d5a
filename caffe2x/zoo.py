"""Deploy nets of the classic Caffe model zoo, spelled out so caffe2x can synthesise them (nothing may be
downloaded): CaffeNet, GoogLeNet, SqueezeNet 1.1, MobileNet v1.

Each generator writes the published deploy prototxt's structure (layer names, types, parameters, blob
shapes), so ``inspect`` reports the published parameter counts (:data:`MODELS`) and every conversion
path a user's real file takes is exercised: CaffeNet is stored the way BVLC published it, in the V1
``layers`` format with legacy ``num/channels/height/width`` blob dims (:func:`to_v1_caffemodel`).
Weights come from :func:`caffe2x.fixtures.synthesize` (seeded, calibrated); the models pin structure and
numerics, not accuracy.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _layer(name: str, type_: str, bottoms: list[str] | str, top: str, body: str = "") -> str:
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    inner = "".join(f' bottom: "{b}"' for b in bottoms)
    return f'layer {{ name: "{name}" type: "{type_}"{inner} top: "{top}"{(" " + body) if body else ""} }}\n'


def _conv(name: str, bottom: str, out: int, kernel: int, stride: int = 1, pad: int = 0, group: int = 1,
          bias: bool = True) -> str:
    body = f"num_output: {out} kernel_size: {kernel}"
    body += f" stride: {stride}" if stride != 1 else ""
    body += f" pad: {pad}" if pad else ""
    body += f" group: {group}" if group != 1 else ""
    body += "" if bias else " bias_term: false"
    return _layer(name, "Convolution", bottom, name, f"convolution_param {{ {body} }}")


def _pool(name: str, bottom: str, method: str, kernel: int = 0, stride: int = 1, pad: int = 0,
          global_pooling: bool = False) -> str:
    body = f"pool: {method}" + (" global_pooling: true" if global_pooling else f" kernel_size: {kernel} stride: {stride}")
    body += f" pad: {pad}" if pad else ""
    return _layer(name, "Pooling", bottom, name, f"pooling_param {{ {body} }}")


def _lrn(name: str, bottom: str) -> str:
    return _layer(name, "LRN", bottom, name, "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }")


def _relu(name: str, blob: str) -> str:
    return _layer(name, "ReLU", blob, blob)


def _header(name: str, shape: tuple[int, int, int, int]) -> str:
    return f'name: "{name}"\ninput: "data"\ninput_shape {{ ' + " ".join(f"dim: {d}" for d in shape) + " }\n"


# --------------------------------------------------------------------------- CaffeNet (V1)
def caffenet_prototxt() -> str:
    """BVLC's ``bvlc_reference_caffenet`` deploy net (AlexNet with pooling before LRN): 60,965,224
    parameters. Written here in the current format; :func:`to_v1_caffemodel` stores it as V1."""
    t = _header("CaffeNet", (1, 3, 227, 227))
    t += _conv("conv1", "data", 96, 11, stride=4) + _relu("relu1", "conv1")
    t += _pool("pool1", "conv1", "MAX", 3, 2) + _lrn("norm1", "pool1")
    t += _conv("conv2", "norm1", 256, 5, pad=2, group=2) + _relu("relu2", "conv2")
    t += _pool("pool2", "conv2", "MAX", 3, 2) + _lrn("norm2", "pool2")
    t += _conv("conv3", "norm2", 384, 3, pad=1) + _relu("relu3", "conv3")
    t += _conv("conv4", "conv3", 384, 3, pad=1, group=2) + _relu("relu4", "conv4")
    t += _conv("conv5", "conv4", 256, 3, pad=1, group=2) + _relu("relu5", "conv5")
    t += _pool("pool5", "conv5", "MAX", 3, 2)
    bottom = "pool5"
    for i, width in ((6, 4096), (7, 4096), (8, 1000)):
        t += _layer(f"fc{i}", "InnerProduct", bottom, f"fc{i}", f"inner_product_param {{ num_output: {width} }}")
        bottom = f"fc{i}"
        if i < 8:
            t += _relu(f"relu{i}", bottom)
            t += _layer(f"drop{i}", "Dropout", bottom, bottom, "dropout_param { dropout_ratio: 0.5 }")
    return t + _layer("prob", "Softmax", "fc8", "prob")


# --------------------------------------------------------------------------- GoogLeNet
#: BVLC GoogLeNet inception modules: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection
_INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def _inception(tag: str, bottom: str) -> tuple[str, str]:
    c1, r3, c3, r5, c5, pp = _INCEPTION[tag]
    p = f"inception_{tag}"
    t = _conv(f"{p}/1x1", bottom, c1, 1) + _relu(f"{p}/relu_1x1", f"{p}/1x1")
    t += _conv(f"{p}/3x3_reduce", bottom, r3, 1) + _relu(f"{p}/relu_3x3_reduce", f"{p}/3x3_reduce")
    t += _conv(f"{p}/3x3", f"{p}/3x3_reduce", c3, 3, pad=1) + _relu(f"{p}/relu_3x3", f"{p}/3x3")
    t += _conv(f"{p}/5x5_reduce", bottom, r5, 1) + _relu(f"{p}/relu_5x5_reduce", f"{p}/5x5_reduce")
    t += _conv(f"{p}/5x5", f"{p}/5x5_reduce", c5, 5, pad=2) + _relu(f"{p}/relu_5x5", f"{p}/5x5")
    t += _pool(f"{p}/pool", bottom, "MAX", 3, 1, pad=1)
    t += _conv(f"{p}/pool_proj", f"{p}/pool", pp, 1) + _relu(f"{p}/relu_pool_proj", f"{p}/pool_proj")
    t += _layer(f"{p}/output", "Concat", [f"{p}/1x1", f"{p}/3x3", f"{p}/5x5", f"{p}/pool_proj"], f"{p}/output")
    return t, f"{p}/output"


def googlenet_prototxt() -> str:
    """BVLC GoogLeNet's deploy net (no auxiliary classifiers): 6,998,552 parameters."""
    t = _header("GoogleNet", (1, 3, 224, 224))
    t += _conv("conv1/7x7_s2", "data", 64, 7, stride=2, pad=3) + _relu("conv1/relu_7x7", "conv1/7x7_s2")
    t += _pool("pool1/3x3_s2", "conv1/7x7_s2", "MAX", 3, 2) + _lrn("pool1/norm1", "pool1/3x3_s2")
    t += _conv("conv2/3x3_reduce", "pool1/norm1", 64, 1) + _relu("conv2/relu_3x3_reduce", "conv2/3x3_reduce")
    t += _conv("conv2/3x3", "conv2/3x3_reduce", 192, 3, pad=1) + _relu("conv2/relu_3x3", "conv2/3x3")
    t += _lrn("conv2/norm2", "conv2/3x3") + _pool("pool2/3x3_s2", "conv2/norm2", "MAX", 3, 2)
    bottom = "pool2/3x3_s2"
    for tag in _INCEPTION:
        text, bottom = _inception(tag, bottom)
        t += text
        if tag in ("3b", "4e"):
            pool = f"pool{tag[0]}/3x3_s2"
            t += _pool(pool, bottom, "MAX", 3, 2)
            bottom = pool
    t += _pool("pool5/7x7_s1", bottom, "AVE", 7, 1)
    t += _layer("pool5/drop_7x7_s1", "Dropout", "pool5/7x7_s1", "pool5/7x7_s1", "dropout_param { dropout_ratio: 0.4 }")
    t += _layer("loss3/classifier", "InnerProduct", "pool5/7x7_s1", "loss3/classifier",
                "inner_product_param { num_output: 1000 }")
    return t + _layer("prob", "Softmax", "loss3/classifier", "prob")


# --------------------------------------------------------------------------- SqueezeNet 1.1
_FIRES = {2: (16, 64), 3: (16, 64), 4: (32, 128), 5: (32, 128), 6: (48, 192), 7: (48, 192), 8: (64, 256), 9: (64, 256)}


def squeezenet_prototxt() -> str:
    """DeepScale's SqueezeNet v1.1 deploy net: 1,235,496 parameters."""
    t = _header("SqueezeNet_v1.1", (1, 3, 227, 227))
    t += _conv("conv1", "data", 64, 3, stride=2) + _relu("relu_conv1", "conv1") + _pool("pool1", "conv1", "MAX", 3, 2)
    bottom = "pool1"
    for i, (squeeze, expand) in _FIRES.items():
        f = f"fire{i}"
        t += _conv(f"{f}/squeeze1x1", bottom, squeeze, 1) + _relu(f"{f}/relu_squeeze1x1", f"{f}/squeeze1x1")
        t += _conv(f"{f}/expand1x1", f"{f}/squeeze1x1", expand, 1) + _relu(f"{f}/relu_expand1x1", f"{f}/expand1x1")
        t += _conv(f"{f}/expand3x3", f"{f}/squeeze1x1", expand, 3, pad=1) + _relu(f"{f}/relu_expand3x3", f"{f}/expand3x3")
        t += _layer(f"{f}/concat", "Concat", [f"{f}/expand1x1", f"{f}/expand3x3"], f"{f}/concat")
        bottom = f"{f}/concat"
        if i in (3, 5):
            t += _pool(f"pool{i}", bottom, "MAX", 3, 2)
            bottom = f"pool{i}"
    t += _layer("drop9", "Dropout", bottom, bottom, "dropout_param { dropout_ratio: 0.5 }")
    t += _conv("conv10", bottom, 1000, 1) + _relu("relu_conv10", "conv10")
    t += _pool("pool10", "conv10", "AVE", global_pooling=True)
    return t + _layer("prob", "Softmax", "pool10", "prob")


# --------------------------------------------------------------------------- MobileNet v1
#: (depthwise stride, pointwise output channels) of each depthwise-separable block, in order
_MOBILENET = [("2_1", 1, 64), ("2_2", 2, 128), ("3_1", 1, 128), ("3_2", 2, 256), ("4_1", 1, 256),
              ("4_2", 2, 512), ("5_1", 1, 512), ("5_2", 1, 512), ("5_3", 1, 512), ("5_4", 1, 512),
              ("5_5", 1, 512), ("5_6", 2, 1024), ("6", 1, 1024)]


def _conv_bn(name: str, bottom: str, out: int, kernel: int, stride: int = 1, pad: int = 0, group: int = 1) -> str:
    t = _conv(name, bottom, out, kernel, stride, pad, group, bias=False)
    t += _layer(f"{name}/bn", "BatchNorm", name, name, "batch_norm_param { use_global_stats: true eps: 1e-5 }")
    t += _layer(f"{name}/scale", "Scale", name, name, "scale_param { bias_term: true }")
    return t + _relu(f"relu{name[4:]}", name)


def mobilenet_prototxt() -> str:
    """The widely used Caffe port of MobileNet v1 (1.0, 224): depthwise 3x3 convolutions as grouped
    convolutions (group = channels), BatchNorm + Scale after every convolution; 4,231,976 learned
    parameters (Keras' trainable count), plus the BatchNorm statistics Caffe stores beside them."""
    t = _header("MobileNet", (1, 3, 224, 224))
    t += _conv_bn("conv1", "data", 32, 3, stride=2, pad=1)
    bottom, channels = "conv1", 32
    for tag, stride, out in _MOBILENET:
        t += _conv_bn(f"conv{tag}/dw", bottom, channels, 3, stride, pad=1, group=channels)
        t += _conv_bn(f"conv{tag}/sep", f"conv{tag}/dw", out, 1)
        bottom, channels = f"conv{tag}/sep", out
    t += _pool("pool6", bottom, "AVE", global_pooling=True)
    t += _conv("fc7", "pool6", 1000, 1)
    return t + _layer("prob", "Softmax", "fc7", "prob")


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ZooModel:
    """A built-in zoo net: its deploy text, how it is stored, and its published parameter count
    (learned parameters: weights, biases and Scale's gamma and beta; BatchNorm statistics excluded)."""

    prototxt: Callable[[], str]
    v1: bool
    weights: int


MODELS: dict[str, ZooModel] = {
    "caffenet": ZooModel(caffenet_prototxt, v1=True, weights=60_965_224),
    "googlenet": ZooModel(googlenet_prototxt, v1=False, weights=6_998_552),
    "squeezenet": ZooModel(squeezenet_prototxt, v1=False, weights=1_235_496),
    "mobilenet": ZooModel(mobilenet_prototxt, v1=False, weights=4_231_976),  # Scale gamma/beta counted
}


def to_v1_caffemodel(data: bytes) -> bytes:
    """A current-format caffemodel re-stored as Caffe stored it before 2015: ``layers`` (V1) with enum
    types and legacy ``num/channels/height/width`` blob dims (InnerProduct weights ``1 x 1 x out x in``)."""
    from .proto import caffe_pb2
    from .reader import V1_TYPES

    enum_of = {v: k for k, v in V1_TYPES.items() if v}
    net = caffe_pb2.NetParameter.FromString(data)
    old = caffe_pb2.NetParameter()
    old.name = net.name
    v1_fields = set(caffe_pb2.V1LayerParameter.DESCRIPTOR.fields_by_name)
    for layer in net.layer:
        v1 = old.layers.add()
        v1.name = layer.name
        v1.type = caffe_pb2.V1LayerParameter.LayerType.Value(enum_of[layer.type])
        v1.bottom.extend(layer.bottom)
        v1.top.extend(layer.top)
        for fd, value in layer.ListFields():
            if fd.name.endswith("_param") and fd.name in v1_fields:
                getattr(v1, fd.name).CopyFrom(value)
        for blob in layer.blobs:
            dims = [1] * (4 - len(blob.shape.dim)) + list(blob.shape.dim)
            legacy = v1.blobs.add()
            legacy.num, legacy.channels, legacy.height, legacy.width = dims
            legacy.data.extend(blob.data)
    return old.SerializeToString()
