"""Every layer family in every target: each net of layer_nets.NETS is converted, written to a file,
loaded back with the framework's own loader (torch.load(weights_only=True) + load_state_dict(strict),
keras.models.load_model of the .keras file, onnxruntime) and run; every net output must match the
numpy reference (<= 1e-5 relative, the reference itself being checked in test_layers_reference.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import caffe2x  # noqa: E402
from caffe2x import fixtures  # noqa: E402
from caffe2x.caffe.reader import read_bytes  # noqa: E402
from caffe2x.graph.numeric import max_rel_error  # noqa: E402
from caffe2x.graph.reference import execute  # noqa: E402
from tests.helpers.layer_nets import NETS  # noqa: E402

TOL = 1e-5

#: nets a target cannot express, with the reason (each is a documented limitation)
UNSUPPORTED: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def nets() -> dict[str, tuple[caffe2x.Graph, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Each net read back from its synthesised caffemodel, its input and the reference outputs."""
    out = {}
    for name, net in NETS.items():
        graph = read_bytes(fixtures.synthesize(net.text), net.text)
        x = net.inputs(dict(graph.inputs))
        values = execute(graph, x)
        out[name] = (graph, x, {graph.blob_name(v): values[v] for v in graph.outputs})
    return out


def _check(name: str, got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert set(got) == set(ref), name
    for blob, value in ref.items():
        assert np.shape(got[blob]) == value.shape, f"{name}: {blob}"
        assert max_rel_error(got[blob], value) <= TOL, f"{name}: {blob}"


def _load_code(path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Import emitted model code with caffe2x made unimportable (it must stand alone)."""
    import importlib.util
    import sys

    monkeypatch.setitem(sys.modules, "caffe2x", None)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", list(NETS))
def test_torch_pt_file_reloaded_matches_the_reference(name: str, nets: dict, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Into caffe2x.to_torch's module and into the --emit-code model, both strictly."""
    import torch

    graph, x, ref = nets[name]
    path = tmp_path / f"{name}.pt"
    caffe2x.save(graph, path, emit_code=True)
    state = torch.load(path, weights_only=True)
    module = caffe2x.to_torch(graph)
    with torch.no_grad():
        for t in module.state_dict().values():
            t.zero_()
    module.load_state_dict(state, strict=True)
    emitted = _load_code(tmp_path / f"{name}_model.py", monkeypatch).Net()
    emitted.load_state_dict(state, strict=True)
    for net in (module, emitted):
        with torch.no_grad():
            out = net(*(torch.from_numpy(x[k]) for k in graph.inputs))
        out = out if isinstance(out, dict) else {next(iter(ref)): out}
        _check(name, {k: v.numpy() for k, v in out.items()}, ref)


@pytest.mark.parametrize("name", list(NETS))
def test_onnx_file_run_by_onnxruntime_matches_the_reference(name: str, nets: dict, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    graph, x, ref = nets[name]
    path = tmp_path / f"{name}.onnx"
    caffe2x.save(graph, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, x)))
    _check(name, {graph.blob_name(k) if k not in ref else k: v for k, v in got.items()}, ref)


def _nhwc(v: np.ndarray) -> np.ndarray:
    return v.transpose(0, 2, 3, 1) if v.ndim == 4 else v


def _nchw(v: np.ndarray) -> np.ndarray:
    return v.transpose(0, 3, 1, 2) if v.ndim == 4 else v


@pytest.mark.parametrize("name", list(NETS))
def test_keras_file_loaded_by_load_model_matches_the_reference(name: str, nets: dict, tmp_path: Path) -> None:
    if ("keras", name) in UNSUPPORTED:
        pytest.skip(UNSUPPORTED[("keras", name)])
    import keras

    import caffe2x.targets.keras  # noqa: F401  (registers the caffe2x layers for load_model)

    graph, x, ref = nets[name]
    path = tmp_path / f"{name}.keras"
    caffe2x.save(graph, path)
    model = keras.models.load_model(path)
    feeds = [_nhwc(x[k]) for k in graph.inputs]
    out = model(feeds[0] if len(feeds) == 1 else feeds, training=False)
    out = out if isinstance(out, (list, tuple)) else [out]
    _check(name, {blob: _nchw(np.asarray(v)) for blob, v in zip(ref, out)}, ref)


def _rebatched(name: str, graph: caffe2x.Graph, batch: int) -> dict[str, np.ndarray]:
    """The net's kind of input for 'data' at another batch size (other inputs, e.g. Crop references, as
    declared)."""
    shapes = {k: ((batch, *s[1:]) if k == "data" else s) for k, s in graph.inputs.items()}
    return NETS[name].inputs(shapes)


@pytest.mark.parametrize("name", list(NETS))
def test_torch_and_onnx_follow_another_batch_size(name: str, nets: dict, tmp_path: Path) -> None:
    """A net declared at batch 2 run at batch 3 (the ONNX input's batch is dynamic; torch takes any)."""
    import torch

    ort = pytest.importorskip("onnxruntime")
    graph = nets[name][0]
    x = _rebatched(name, graph, 3)
    values = execute(graph, x)
    ref = {graph.blob_name(v): values[v] for v in graph.outputs}
    with torch.no_grad():
        out = caffe2x.to_torch(graph)(*(torch.from_numpy(x[k]) for k in graph.inputs))
    out = out if isinstance(out, dict) else {next(iter(ref)): out}
    _check(name, {k: v.numpy() for k, v in out.items()}, ref)
    path = tmp_path / f"{name}.onnx"
    caffe2x.save(graph, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, x)))
    _check(name, got, ref)
