"""The converted torch module through the deploy paths people hand models to next, each checked against
the numpy reference at several input sizes: ``torch.export`` (static, dynamic batch, dynamic H/W),
``torch.compile(fullgraph=True)``, FX quantization, and ``torch.onnx.export`` (dynamo) run in
onnxruntime; ResNet-50 through the same paths (slow)."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.export import Dim

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe.reader import graph_from_text
from caffe2x.graph.ir import Graph
from caffe2x.graph.numeric import max_rel_error
from tests.helpers.torch_nets import SIZES, at_size, fcn_graph, reference_cases, seeded

TOL = 1e-5


@pytest.fixture(scope="module")
def fcn() -> Graph:
    return fcn_graph()


@pytest.fixture(scope="module")
def cases(fcn: Graph) -> list[tuple[torch.Tensor, np.ndarray]]:
    return [(torch.from_numpy(x), ref) for x, ref in reference_cases(fcn)]


def assert_matches(run, cases, tol: float = TOL) -> None:  # type: ignore[no-untyped-def]
    for x, ref in cases:
        with torch.no_grad():
            y = run(x)
        assert tuple(y.shape) == ref.shape
        assert max_rel_error(np.asarray(y.detach() if isinstance(y, torch.Tensor) else y), ref) <= tol


def batch_of_two(x: torch.Tensor) -> torch.Tensor:
    """An example input for a dynamic batch: export specialises a dim whose example size is 1."""
    return torch.cat([x, x])


def test_torch_export_static_runs_the_exported_size(fcn: Graph, cases) -> None:  # type: ignore[no-untyped-def]
    ep = torch.export.export(caffe2x.to_torch(fcn), (cases[0][0],))
    assert_matches(ep.module(), cases[:1])


def test_torch_export_with_dynamic_batch_and_hw_runs_at_every_size(fcn: Graph, cases) -> None:  # type: ignore[no-untyped-def]
    net = caffe2x.to_torch(fcn)
    ep = torch.export.export(net, (batch_of_two(cases[0][0]),),
                             dynamic_shapes={"data": {0: Dim("batch"), 2: Dim.AUTO, 3: Dim.AUTO}})
    assert_matches(ep.module(), cases)
    x = torch.from_numpy(seeded((3, 3, 17, 29), seed=9))
    with torch.no_grad():
        assert max_rel_error(ep.module()(x).numpy(), caffe2x.run(fcn_graph(17, 29, 3), x.numpy())) <= TOL


def test_torch_export_with_a_named_dim_range_on_a_net_without_crop() -> None:
    """``Dim("H", min=...)``: export proves the pooling guards over the whole range (a Crop's guard,
    relating two dims, needs ``Dim.AUTO``)."""
    text = FCN_NO_CROP
    net = caffe2x.to_torch(graph_from_text(text, seed=2))
    x = torch.from_numpy(seeded((2, 3, 23, 19)))
    ep = torch.export.export(net, (x,), dynamic_shapes={"data": {0: Dim("batch"), 2: Dim("H", min=4, max=2048),
                                                                 3: Dim("W", min=4, max=2048)}})
    for h, w in SIZES:
        x = seeded((2, 3, h, w), seed=h)
        with torch.no_grad():
            y = ep.module()(torch.from_numpy(x)).numpy()
        assert max_rel_error(y, caffe2x.run(graph_from_text(text, seed=2, input_shape=(2, 3, h, w)), x)) <= TOL


#: the hard-case net up to its Crop, without it: pooling only relates each dim to itself
FCN_NO_CROP = """
input: "data" input_shape { dim: 1 dim: 3 dim: 23 dim: 19 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pool2" type: "Pooling" bottom: "pool1" top: "pool2" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pool3" type: "Pooling" bottom: "pool2" top: "pool3" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 2 } }
"""


@pytest.mark.slow  # compiling takes minutes on a shared 2-core machine
def test_torch_compile_fullgraph_runs_at_every_size(fcn: Graph, cases) -> None:  # type: ignore[no-untyped-def]
    torch._dynamo.reset()
    assert_matches(torch.compile(caffe2x.to_torch(fcn), fullgraph=True, dynamic=True), cases)


def test_fx_quantization_smoke_run_stays_close_to_float(fcn: Graph, cases) -> None:  # type: ignore[no-untyped-def]
    """prepare_fx / convert_fx on a calibration batch. PReLU and ConvTranspose2d stay float: torch's
    FX quantization of those two is off by 50-180 % of the output range on its own modules alone."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    net = caffe2x.to_torch(fcn)
    mapping = get_default_qconfig_mapping("x86").set_object_type(torch.nn.PReLU, None) \
        .set_object_type(torch.nn.ConvTranspose2d, None)
    calibration = torch.from_numpy(seeded((8, 3, 23, 19), seed=20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        prepared = prepare_fx(copy.deepcopy(net), mapping, (calibration,))
        with torch.no_grad():
            prepared(calibration)
        quantized = convert_fx(prepared)
    assert any(n.op == "call_function" and "quantize_per_tensor" in str(n.target) for n in quantized.graph.nodes)
    assert_matches(quantized, cases, tol=0.1)


def test_onnx_dynamo_export_runs_in_onnxruntime_at_every_size(fcn: Graph, cases, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "fcn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(caffe2x.to_torch(fcn), (batch_of_two(cases[0][0]),), dynamo=True,
                                    dynamic_shapes={"data": {0: Dim("batch"), 2: Dim.AUTO, 3: Dim.AUTO}},
                                    verbose=False)
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape[1] == 3 and all(isinstance(d, str) for d in (inp.shape[0], *inp.shape[2:]))
    assert_matches(lambda x: session.run(None, {inp.name: x.numpy()})[0], cases)


# --------------------------------------------------------------------------- ResNet-50 through the paths
@pytest.fixture(scope="module")
def resnet50() -> Graph:
    return fixtures.graph("resnet50")


@pytest.fixture(scope="module")
def r50_cases(resnet50: Graph) -> list[tuple[torch.Tensor, np.ndarray]]:
    """ResNet-50's logits at batch 1 and 2 (its InnerProduct fixes H x W)."""
    return [(torch.from_numpy(x), caffe2x.run(resnet50, x, "fc1000"))
            for x in (seeded((1, 3, 224, 224), 30, 50.0), seeded((2, 3, 224, 224), 31, 50.0))]


@pytest.mark.slow
def test_resnet50_logits_through_script_trace_fx_export_and_onnx(resnet50: Graph, r50_cases, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    net = caffe2x.to_torch(resnet50, outputs="fc1000")
    x1, x2 = r50_cases[0][0], r50_cases[1][0]
    assert_matches(net, r50_cases)
    assert_matches(torch.jit.script(net), r50_cases)
    assert_matches(torch.jit.trace(net, x1), r50_cases)
    assert_matches(torch.fx.symbolic_trace(net), r50_cases)
    ep = torch.export.export(net, (x2,), dynamic_shapes={"data": {0: Dim("batch")}})
    assert_matches(ep.module(), r50_cases)
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x2,), str(tmp_path / "r50.onnx"), dynamo=True, verbose=False,
                          dynamic_shapes={"data": {0: Dim("batch")}})
    session = ort.InferenceSession(str(tmp_path / "r50.onnx"), providers=["CPUExecutionProvider"])
    assert_matches(lambda x: session.run(None, {"data": x.numpy()})[0], r50_cases, tol=1e-4)


@pytest.mark.slow
def test_resnet50_compiled_fullgraph_matches_the_reference(resnet50: Graph, r50_cases) -> None:  # type: ignore[no-untyped-def]
    torch._dynamo.reset()
    assert_matches(torch.compile(caffe2x.to_torch(resnet50, outputs="fc1000"), fullgraph=True), r50_cases[:1])


@pytest.mark.slow
def test_resnet50_backbone_exported_and_traced_at_224_runs_at_193x257(resnet50: Graph) -> None:
    net = caffe2x.to_torch(resnet50, outputs="res5c")
    x = torch.from_numpy(seeded((1, 3, 224, 224), 40, 50.0))
    ep = torch.export.export(net, (x,), dynamic_shapes={"data": {2: Dim("H", min=64, max=1024),
                                                                 3: Dim("W", min=64, max=1024)}})
    traced = torch.jit.trace(net, x)
    y = seeded((1, 3, 193, 257), 41, 50.0)
    ref = caffe2x.run(at_size(resnet50, "res5c", (1, 3, 193, 257)), y, "res5c")
    assert ref.shape == (1, 2048, 6, 8)
    for run in (net, ep.module(), traced):
        with torch.no_grad():
            assert max_rel_error(run(torch.from_numpy(y)).numpy(), ref) <= TOL
