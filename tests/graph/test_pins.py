"""Which layer fixes each input dim (caffe2x.graph.pins), for the layers that truly fix a size: an
InnerProduct after a spatial map, a Reshape with explicit dims, PriorBox with img_size, a Crop to a
fixed-size reference; a fully convolutional net has none but its channels. Another size is one line
naming that layer and the sizes the net takes, from the library (a Caffe2xError) and the CLI (exit 2)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe.reader import graph_from_text
from caffe2x.cli.main import main
from caffe2x.errors import Caffe2xError
from caffe2x.graph.pins import describe_pins, pinning_layers
from caffe2x.graph.reshape import free_input_dims

HEAD = """input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
"""
#: name -> (the layer that fixes H and W, its prototxt line, the sizes the net then takes)
PINNING = {
    "inner_product": ("fc", 'layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }',
                      "H fixed 8, W fixed 8"),
    "explicit_reshape": ("flat", 'layer { name: "flat" type: "Reshape" bottom: "conv" top: "flat" '
                                 'reshape_param { shape { dim: 0 dim: 4 dim: 64 } } }', "H fixed 8, W fixed 8"),
    "priorbox_img_size": ("prior", 'layer { name: "prior" type: "PriorBox" bottom: "conv" bottom: "data" top: "prior" '
                                   'prior_box_param { min_size: 2 img_size: 8 } }', "H fixed 8, W fixed 8"),
}


def seeded(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("case", sorted(PINNING))
def test_the_layer_that_fixes_h_and_w_is_named(case: str) -> None:
    layer, line, takes = PINNING[case]
    graph = graph_from_text(HEAD + line)
    pins = pinning_layers(graph)
    assert pins == {"data": {1: ("conv",), 2: (layer,), 3: (layer,)}}
    assert describe_pins(graph, pins).endswith(f"data H, W: {layer!r} ({graph.nodes[1].op})")
    dims = free_input_dims(graph)["data"]
    assert [d.free for d in dims] == [True, False, False, False]
    with pytest.raises(Caffe2xError) as err:
        caffe2x.run(graph, seeded((1, 3, 9, 8)))
    message = str(err.value)
    assert "\n" not in message and f"layer {layer!r}" in message
    assert message.endswith(f"it takes data: N free, C fixed 3, {takes}")


def test_a_fully_convolutional_net_has_only_its_channels_fixed() -> None:
    graph = fixtures.graph("fcn_style")
    (axes,) = pinning_layers(graph).values()
    assert list(axes) == [1]


def test_a_crop_to_a_fixed_size_reference_bounds_the_reference() -> None:
    """The reference (a second input read at 6x6) may grow only while the crop fits in the data; the
    data may grow freely (the crop's output stays 6x6)."""
    graph = graph_from_text("""input: "data" input_shape { dim: 1 dim: 2 dim: 10 dim: 10 }
input: "ref" input_shape { dim: 1 dim: 1 dim: 6 dim: 6 }
layer { name: "crop" type: "Crop" bottom: "data" bottom: "ref" top: "crop" crop_param { axis: 2 offset: 2 } }
""")
    assert pinning_layers(graph) == {"data": {}, "ref": {2: ("crop",), 3: ("crop",)}}
    dims = free_input_dims(graph)
    assert [d.free for d in dims["data"]] == [True, True, True, True]
    assert dims["ref"][2].describe() == "H 1..8"
    with pytest.raises(Caffe2xError, match=r"layer 'crop' \(Crop\).*it takes .*ref: N free, C free, H 1\.\.8, W 1\.\.8$"):
        caffe2x.run(graph, {"data": seeded((1, 2, 10, 10)), "ref": seeded((1, 1, 9, 6))})


def test_a_second_layer_that_fixes_the_size_is_named_too() -> None:
    """A net stops at its first refusing layer; the pins go on past it, so the PriorBox behind an
    InnerProduct is named as well."""
    graph = graph_from_text(HEAD + PINNING["inner_product"][1] + "\n" + PINNING["priorbox_img_size"][1])
    assert pinning_layers(graph)["data"][2] == ("fc", "prior")


@pytest.mark.parametrize("case", sorted(PINNING))
def test_cli_names_the_layer_and_exits_2(case: str, tmp_path: Path, capsys) -> None:
    """``inspect`` says which layer sets the size; reading the net at a size that layer refuses
    (``--input-shape``) is one ``error:`` line naming it and the sizes the net takes, exit 2."""
    layer, line, takes = PINNING[case]
    text = HEAD + line
    model, deploy = tmp_path / "net.caffemodel", tmp_path / "net.prototxt"
    model.write_bytes(fixtures.synthesize(text))
    deploy.write_text(text)
    assert main(["inspect", str(model), "--prototxt", str(deploy)]) == 0
    out = capsys.readouterr().out
    assert f"input sizes: data: N free, C fixed 3, {takes}" in out
    assert f"input sizes set by: data C: 'conv' (Convolution); data H, W: {layer!r}" in out
    if case == "priorbox_img_size":  # read at another size (not reshaped), img_size still divides: Caffe's net too
        return
    rc = main(["inspect", str(model), "--prototxt", str(deploy), "--input-shape", "1,3,11,8"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert f"{layer!r}" in err[0] and takes in err[0]
