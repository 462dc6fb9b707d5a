"""The fork fields of the compiled schema (docs/forks.md): numbers, text parsing, binary collisions.

Field numbers are each fork's own (checked against the forks' caffe.proto files named in
docs/forks.md) except where they collide; the collisions are read back from bytes laid out exactly as
the fork writes them, built here by hand so no fork schema is needed.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest
from google.protobuf import text_format

import caffe2x
from caffe2x.caffe.proto import caffe_pb2
from caffe2x.caffe.parse import parse_caffemodel_bytes, parse_prototxt_text


@pytest.mark.parametrize(("field", "number"), [
    ("annotated_data_param", 200), ("multibox_loss_param", 201), ("permute_param", 202),
    ("prior_box_param", 203), ("detection_output_param", 204), ("detection_evaluate_param", 205),
    ("norm_param", 206), ("video_data_param", 207),                       # SSD
    ("bn_param", 45), ("dense_image_data_param", 46),                     # ENet / SegNet
    ("upsample_param", 149),                                              # YOLO v3 ports
    ("pspnet_bn_param", 152),                                             # PSPNet
    ("shuffle_channel_param", 164),                                       # ShuffleNet
    ("roi_pooling_param", 8266711), ("smooth_l1_loss_param", 8266712),    # Faster R-CNN
    ("box_annotator_ohem_param", 10000), ("psroi_pooling_param", 10001),  # R-FCN
    ("ctc_decoder_param", 158), ("ctc_loss_param", 159), ("reverse_param", 160),
    ("reverse_time_param", 161), ("transpose_param", 8266710),           # OCR fork
    ("denseblock_param", 1000147),                                        # DenseBlock (147 in the fork)
    # upstream keeps its numbers where forks collide
    ("input_param", 143), ("swish_param", 147), ("embed_param", 137), ("tile_param", 138),
])
def test_layer_parameter_fork_numbers(field: str, number: int) -> None:
    assert caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name[field].number == number


def test_fork_messages_numbers_and_defaults() -> None:
    pb = caffe_pb2
    assert pb.PoolingParameter.DESCRIPTOR.fields_by_name["round_mode"].number == 13
    assert pb.PoolingParameter().ceil_mode is True
    assert pb.NormalizeParameter().eps == pytest.approx(1e-10)
    assert pb.NormalizeParameter().across_spatial and pb.NormalizeParameter().channel_shared
    prior = pb.PriorBoxParameter()
    assert prior.flip is True and prior.clip is False and prior.offset == pytest.approx(0.5)
    assert pb.PriorBoxParameter.DESCRIPTOR.fields_by_name["offset"].number == 13
    out = pb.DetectionOutputParameter()
    assert out.keep_top_k == -1 and out.share_location and out.code_type == pb.PriorBoxParameter.CORNER
    assert pb.DetectionOutputParameter.DESCRIPTOR.fields_by_name["confidence_threshold"].number == 9
    assert pb.NonMaximumSuppressionParameter().nms_threshold == pytest.approx(0.3)
    assert pb.NonMaximumSuppressionParameter().eta == pytest.approx(1.0)
    assert pb.PriorBoxParameter.CENTER_SIZE == 2
    assert pb.BNParameter.DESCRIPTOR.fields_by_name["bn_mode"].number == 3
    assert pb.PSPNetBNParameter.DESCRIPTOR.fields_by_name["momentum"].number == 3
    assert pb.UpsampleParameter().scale == 2
    assert pb.InterpParameter().zoom_factor == 1 and pb.InterpParameter().shrink_factor == 1
    assert pb.ShuffleChannelParameter().group == 1
    assert pb.ROIPoolingParameter().spatial_scale == pytest.approx(1.0)


FORK_PROTOTXT = """
name: "forks"
input: "data"
input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: false } }
layer { name: "norm" type: "Normalize" bottom: "pool" top: "norm"
        norm_param { across_spatial: false channel_shared: false scale_filler { type: "constant" value: 20 } } }
layer { name: "perm" type: "Permute" bottom: "norm" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "prior" type: "PriorBox" bottom: "norm" bottom: "data" top: "prior"
        prior_box_param { min_size: 30 max_size: 60 aspect_ratio: 2 flip: true clip: false
                          variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 8 offset: 0.5 } }
layer { name: "det" type: "DetectionOutput" bottom: "a" bottom: "b" bottom: "prior" top: "det"
        include { phase: TEST }
        detection_output_param { num_classes: 21 share_location: true background_label_id: 0
          nms_param { nms_threshold: 0.45 top_k: 400 eta: 1 } code_type: CENTER_SIZE keep_top_k: 200
          confidence_threshold: 0.01
          save_output_param { output_directory: "out" resize_param { resize_mode: WARP height: 300 width: 300
                                                                      interp_mode: LINEAR } } } }
layer { name: "bn_enet" type: "BN" bottom: "x" top: "x" bn_param { bn_mode: INFERENCE scale_filler { type: "constant" value: 1 } } }
layer { name: "bn_psp" type: "BN" bottom: "x" top: "x" bn_param { slope_filler { value: 1 } momentum: 0.95 eps: 1e-5 frozen: true } }
layer { name: "up_enet" type: "Upsample" bottom: "x" bottom: "mask" top: "u" upsample_param { scale: 2 pad_out_h: true } }
layer { name: "up_yolo" type: "Upsample" bottom: "x" top: "u2" upsample_param { scale: 2 } }
layer { name: "interp" type: "Interp" bottom: "x" top: "i" interp_param { zoom_factor: 8 pad_beg: 0 pad_end: 0 } }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "x" top: "s" shuffle_channel_param { group: 3 } }
layer { name: "roi" type: "ROIPooling" bottom: "x" bottom: "rois" top: "r"
        roi_pooling_param { pooled_w: 7 pooled_h: 7 spatial_scale: 0.0625 } }
layer { name: "psroi" type: "PSROIPooling" bottom: "x" bottom: "rois" top: "ps"
        psroi_pooling_param { spatial_scale: 0.0625 output_dim: 21 group_size: 7 } }
layer { name: "drop" type: "Dropout" bottom: "x" top: "x" dropout_param { dropout_ratio: 0.5 sample_weights_test: false } }
"""


def test_fork_prototxt_parses_and_round_trips() -> None:
    net = text_format.Parse(FORK_PROTOTXT, caffe_pb2.NetParameter())
    by_name = {l.name: l for l in net.layer}
    assert by_name["pool"].pooling_param.ceil_mode is False
    assert list(by_name["perm"].permute_param.order) == [0, 2, 3, 1]
    assert list(by_name["prior"].prior_box_param.variance) == pytest.approx([0.1, 0.1, 0.2, 0.2])
    det = by_name["det"].detection_output_param
    assert det.code_type == caffe_pb2.PriorBoxParameter.CENTER_SIZE
    assert det.nms_param.top_k == 400 and det.keep_top_k == 200
    assert det.save_output_param.resize_param.height == 300
    assert by_name["bn_enet"].bn_param.bn_mode == caffe_pb2.BNParameter.INFERENCE
    assert by_name["bn_psp"].bn_param.momentum == pytest.approx(0.95)
    assert by_name["up_enet"].upsample_param.pad_out_h is True
    assert by_name["interp"].interp_param.zoom_factor == 8
    assert by_name["shuffle"].shuffle_channel_param.group == 3
    assert by_name["roi"].roi_pooling_param.spatial_scale == pytest.approx(0.0625)
    assert by_name["psroi"].psroi_pooling_param.group_size == 7
    # binary round trip (what a caffemodel written from this net holds)
    assert caffe_pb2.NetParameter.FromString(net.SerializeToString()) == net


# --------------------------------------------------------------------------- binary collisions

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field as protobuf writes it."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _uint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _float(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _fork_net(layer_type: str, number: int, settings: bytes) -> bytes:
    """A NetParameter holding one layer whose settings sit at field ``number``, as the fork writes it."""
    layer = caffe_pb2.LayerParameter(name="l", type=layer_type, bottom=["x"], top=["y"]).SerializeToString()
    return _field(100, layer + _field(number, settings))


@pytest.mark.parametrize(("layer_type", "number", "settings", "field", "expected"), [
    # PSPNet / DeepLab v2 Interp at 143 (upstream input_param): height 33, width 45, zoom 8
    ("Interp", 143, _uint(1, 33) + _uint(2, 45) + _uint(3, 8), "interp_param",
     {"height": 33, "width": 45, "zoom_factor": 8}),
    # ENet Upsample at 147 (upstream swish_param): scale 2, pad_out_h, upsample_w 60
    ("Upsample", 147, _uint(1, 2) + _uint(4, 1) + _uint(7, 60), "upsample_param",
     {"scale": 2, "pad_out_h": True, "upsample_w": 60}),
    # SegNet Upsample at 137 (upstream embed_param, whose fields 1-2 are varints too): scale_h 4, scale_w 3
    ("Upsample", 137, _uint(2, 4) + _uint(3, 3) + _uint(6, 90), "upsample_param",
     {"scale_h": 4, "scale_w": 3, "upsample_h": 90}),
    # PSPNet BN at 152: momentum 0.95 (field 3, a float), eps 1e-4, frozen
    ("BN", 152, _float(3, 0.95) + _float(4, 1e-4) + _uint(5, 1), "bn_param",
     {"momentum": pytest.approx(0.95), "eps": pytest.approx(1e-4), "frozen": True}),
    # yjxiong/caffe BN at 137 (upstream embed_param)
    ("BN", 137, _float(4, 2e-5), "bn_param", {"eps": pytest.approx(2e-5)}),
    # OCR fork Lstm at 8266711 (Faster R-CNN's roi_pooling_param): num_output 100, clipping 5, batch 4
    ("Lstm", 8266711, _uint(1, 100) + _float(2, 5.0) + _uint(5, 4), "lstm_param",
     {"num_output": 100, "clipping_threshold": pytest.approx(5.0), "batch_size": 4}),
    # OCR fork Interp at 162
    ("Interp", 162, _uint(3, 4) + _uint(1, 17), "interp_param", {"zoom_factor": 4, "height": 17}),
    # DenseBlock at 147 (upstream swish_param, whose field 1 is a float): 8 transitions, growth 8, BC,
    # moving_average_fraction 0.2
    ("DenseBlock", 147, _uint(1, 8) + _uint(3, 8) + _uint(18, 1) + _float(21, 0.2), "denseblock_param",
     {"numTransition": 8, "growthRate": 8, "use_BC": True, "moving_average_fraction": pytest.approx(0.2)}),
])
def test_fork_binary_collisions_are_read_as_the_fork_meant(layer_type: str, number: int, settings: bytes,
                                                          field: str, expected: dict) -> None:
    net = parse_caffemodel_bytes(_fork_net(layer_type, number, settings), "fork.caffemodel")
    layer = net.layer[0]
    assert [fd.name for fd, _ in layer.ListFields() if fd.name.endswith("_param")] == [field]
    got = getattr(layer, field)
    for name, value in expected.items():
        assert getattr(got, name) == value, name


def test_upstream_field_of_a_colliding_number_is_left_alone_on_other_layers() -> None:
    shape = caffe_pb2.BlobShape(dim=[1, 3, 8, 8]).SerializeToString()
    net = parse_caffemodel_bytes(_fork_net("Input", 143, _field(1, shape)), "m.caffemodel")
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]
    assert not net.layer[0].HasField("interp_param")


# --------------------------------------------------------------------------- the reader honours them

POOL_NET = """
input: "data"
input_shape { dim: 1 dim: 2 dim: 8 dim: 8 }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 %s } }
"""


@pytest.mark.parametrize(("setting", "size"), [
    ("", 4), ("ceil_mode: true", 4), ("ceil_mode: false", 3), ("round_mode: FLOOR", 3),
    ("ceil_mode: false round_mode: FLOOR", 3),
])
def test_ceil_mode_rounds_like_the_fork(setting: str, size: int, prototxt_text_file) -> None:
    graph = caffe2x.load(None, prototxt_text_file(POOL_NET % setting))
    assert graph.shapes["pool"] == (1, 2, size, size)
    x = np.random.default_rng(0).standard_normal((1, 2, 8, 8)).astype(np.float32)
    assert caffe2x.run(graph, x, outputs="pool").shape == (1, 2, size, size)


def test_ceil_mode_contradicting_round_mode_is_an_error(prototxt_text_file) -> None:
    with pytest.raises(caffe2x.Caffe2xError, match="'pool'.*ceil_mode and round_mode disagree"):
        caffe2x.load(None, prototxt_text_file(POOL_NET % "ceil_mode: true round_mode: FLOOR"))


def test_monte_carlo_dropout_is_refused(prototxt_text_file) -> None:
    net = """input: "data" input_shape { dim: 1 dim: 4 }
layer { name: "drop" type: "Dropout" bottom: "data" top: "d" dropout_param { sample_weights_test: true } }"""
    with pytest.raises(caffe2x.Caffe2xError, match="'drop'.*sample_weights_test"):
        caffe2x.load(None, prototxt_text_file(net))


def test_unknown_prototxt_field_names_the_field_and_the_line() -> None:
    text = 'input: "data"\nlayer {\n  name: "p"\n  type: "Pooling"\n  pooling_param { pool: MAX cail_mode: false }\n}\n'
    with pytest.raises(caffe2x.Caffe2xError) as info:
        parse_prototxt_text(text, "net.prototxt")
    message = str(info.value)
    assert "net.prototxt" in message and "line 5" in message and '"cail_mode"' in message
    assert '"PoolingParameter"' in message and "caffe2x_caffe" not in message
    assert "\n" not in message


@pytest.fixture
def prototxt_text_file(tmp_path):  # type: ignore[no-untyped-def]
    """Writes a prototxt text into the test's own temporary directory (pytest removes it)."""
    def write(text: str):  # type: ignore[no-untyped-def]
        path = tmp_path / "net.prototxt"
        path.write_text(text)
        return path

    return write


def test_fork_collisions_are_fixed_on_the_zero_copy_path_too() -> None:
    """caffe2x.load maps the file and parses its structure without blob payloads (caffe2x.caffe.wire)."""
    from caffe2x.caffe.parse import parse_caffemodel_bytes
    from caffe2x.caffe.wire import split

    conv = caffe_pb2.LayerParameter(name="c", type="Convolution", bottom=["x"], top=["y"])
    blob = conv.blobs.add()
    blob.shape.dim.extend([2, 2])
    blob.data.extend([1.0, 2.0, 3.0, 4.0])
    data = _field(100, conv.SerializeToString()) + _fork_net("Upsample", 147, _uint(1, 2) + _uint(6, 90))
    net, weights = split(data, "fork.caffemodel", parse_caffemodel_bytes)
    up = net.layer[1]
    assert not up.HasField("swish_param") and up.upsample_param.upsample_h == 90
    blobs = weights["c"] if weights is not None else net.layer[0].blobs
    from caffe2x.caffe.parse import blob_array

    np.testing.assert_array_equal(blob_array(blobs[0]), [[1, 2], [3, 4]])
