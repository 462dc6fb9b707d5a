"""Old Caffe net formats brought to the current ``layer`` format, the way Caffe's ``upgrade_proto.cpp`` does.

- **V1** (2014-2015): ``layers { type: CONVOLUTION ... }`` with an enum type and the per-layer
  parameter messages already in place. Upgrading turns the enum into the type string and moves
  everything else across unchanged.
- **V0** (before 2014): ``layers { layer { type: "conv" num_output: 96 kernelsize: 11 ... }
  bottom: "data" top: "conv1" }``. One flat ``V0LayerParameter`` holds every layer type's settings,
  and the wrapper carries the connections. Caffe first folds V0 ``padding`` layers into the
  convolution or pooling that reads them (``UpgradeV0PaddingLayers``). It then maps each V0 field
  into its V1 parameter message (``UpgradeV0LayerParameter``). A V0 setting that does not belong to
  its layer's type is refused, as Caffe refuses it ("Unknown parameter ... for layer type").
  caffe2x does the same and then runs the V1 upgrade. The blobs travel with each layer, so a V0
  ``.caffemodel`` and a V0 prototxt both read.
"""
from __future__ import annotations

from typing import Any

from caffe2x.errors import Caffe2xError


def _pb2():  # type: ignore[no-untyped-def]
    from caffe2x.caffe.proto import caffe_pb2

    return caffe_pb2


#: V1 enum layer type -> modern type string (upgrade_proto.cpp's UpgradeV1LayerType)
V1_TYPES: dict[str, str] = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

#: V0 type string -> V1 enum name (upgrade_proto.cpp's UpgradeV0LayerType)
V0_TYPES: dict[str, str] = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION", "data": "DATA",
    "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS", "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT", "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN", "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING", "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

#: V0 field -> {V0 type: (V1 parameter message, field there)}. Fields with no entry for a layer's type
#: are refused for that type. ``repeated`` targets (ConvolutionParameter's pad/kernel_size/stride) are
#: appended to.
_V0_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "num_output": {"conv": ("convolution_param", "num_output"), "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"), "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler"),
                      "innerproduct": ("inner_product_param", "weight_filler")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler"), "innerproduct": ("inner_product_param", "bias_filler")},
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"), "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"), "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "scale": {"data": ("transform_param", "scale"), "images": ("transform_param", "scale"),
              "window_data": ("transform_param", "scale")},
    "meanfile": {"data": ("transform_param", "mean_file"), "images": ("transform_param", "mean_file"),
                 "window_data": ("transform_param", "mean_file")},
    "batchsize": {"data": ("data_param", "batch_size"), "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"), "window_data": ("window_data_param", "batch_size")},
    "cropsize": {"data": ("transform_param", "crop_size"), "images": ("transform_param", "crop_size"),
                 "window_data": ("transform_param", "crop_size")},
    "mirror": {"data": ("transform_param", "mirror"), "images": ("transform_param", "mirror"),
               "window_data": ("transform_param", "mirror")},
    "rand_skip": {"data": ("data_param", "rand_skip"), "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", "")},
}
#: copied onto the V1 layer itself whatever the type
_V0_COMMON = {"name", "type", "blobs", "blobs_lr", "weight_decay"}


def upgrade(net: Any, source: str) -> Any:
    """Bring a V0 or V1 (``layers``) net to the ``layer`` format; a current net is returned as it is."""
    if not net.layers:
        return net
    if net.layer:
        raise Caffe2xError(f"{source} mixes the 'layer' and the old 'layers' formats")
    if any(old.HasField("layer") for old in net.layers):
        net = upgrade_v0(net, source)
    return upgrade_v1(net, source)


def upgrade_v1(net: Any, source: str) -> Any:
    """V1 ``layers`` -> current ``layer``: enum types become type strings, per-layer params carry over."""
    pb2 = _pb2()
    new = pb2.NetParameter()
    new.CopyFrom(net)
    new.ClearField("layers")
    layer_fields = set(pb2.LayerParameter.DESCRIPTOR.fields_by_name)
    for old in net.layers:
        layer = new.layer.add()
        layer.name = old.name
        enum_name = pb2.V1LayerParameter.LayerType.Name(old.type)
        layer.type = V1_TYPES.get(enum_name, enum_name)
        layer.bottom.extend(old.bottom)
        layer.top.extend(old.top)
        layer.blobs.extend(old.blobs)
        layer.include.extend(old.include)
        layer.exclude.extend(old.exclude)
        layer.loss_weight.extend(old.loss_weight)
        for fd, value in old.ListFields():
            if fd.name.endswith("_param") and fd.name in layer_fields:
                getattr(layer, fd.name).CopyFrom(value)
    return new


def upgrade_v0(net: Any, source: str) -> Any:
    """V0 ``layers { layer { ... } }`` -> V1 ``layers``, padding layers folded in (see the module docstring)."""
    pb2 = _pb2()
    new = pb2.NetParameter()
    new.CopyFrom(net)
    new.ClearField("layers")
    for old in _fold_padding(list(net.layers), source):
        if not old.HasField("layer"):
            raise Caffe2xError(f"{source} mixes V0 layers (layers {{ layer {{ ... }} }}) with V1 layers "
                               f"(layer {old.name!r})")
        v0 = old.layer
        v1 = new.layers.add()
        v1.bottom.extend(old.bottom)
        v1.top.extend(old.top)
        v1.name = v0.name
        kind = v0.type
        if kind not in V0_TYPES:
            raise Caffe2xError(f"{source}: V0 layer {v0.name!r} has the unknown type {kind!r}")
        v1.type = pb2.V1LayerParameter.LayerType.Value(V0_TYPES[kind])
        v1.blobs.extend(v0.blobs)
        v1.blobs_lr.extend(v0.blobs_lr)
        v1.weight_decay.extend(v0.weight_decay)
        for fd, value in v0.ListFields():
            if fd.name in _V0_COMMON:
                continue
            target = _V0_FIELDS.get(fd.name, {}).get(kind)
            if target is None:
                raise Caffe2xError(f"{source}: V0 layer {v0.name!r} of type {kind!r} sets {fd.name}, which "
                                   f"that type has no use for (Caffe's upgrade refuses it too)")
            message, field = target
            params = getattr(v1, message)
            if not field:  # the whole message moves
                params.CopyFrom(value)
                continue
            if field == "pool":
                value = pb2.PoolingParameter.PoolMethod.Value(pb2.V0LayerParameter.PoolMethod.Name(value))
            holder = getattr(params, field)
            if fd.message_type is not None:
                holder.CopyFrom(value)
            elif isinstance(holder, (int, float, str, bool)):
                setattr(params, field, value)
            else:  # a repeated field of the current ConvolutionParameter
                holder.append(value)
    return new


def _fold_padding(layers: list[Any], source: str) -> list[Any]:
    """Caffe's UpgradeV0PaddingLayers: a V0 ``padding`` layer becomes the ``pad`` of the convolution or
    pooling layer that reads its output, which then reads the padding layer's input instead."""
    pads = {old.top[0]: old for old in layers if old.HasField("layer") and old.layer.type == "padding"}
    if not pads:
        return layers
    kept = []
    for old in layers:
        if old.HasField("layer") and old.layer.type == "padding":
            if len(old.bottom) != 1 or len(old.top) != 1:
                raise Caffe2xError(f"{source}: V0 padding layer {old.layer.name!r} needs one bottom and one top")
            continue
        for i, bottom in enumerate(old.bottom):
            pad = pads.get(bottom)
            if pad is None:
                continue
            if old.layer.type not in ("conv", "pool"):
                raise Caffe2xError(f"{source}: V0 padding layer {pad.layer.name!r} feeds {old.layer.name!r} "
                                   f"of type {old.layer.type!r}; only convolution and pooling take padding")
            copy = type(old)()
            copy.CopyFrom(old)
            copy.bottom[i] = pad.bottom[0]
            copy.layer.pad = pad.layer.pad
            old = copy
        kept.append(old)
    return kept
