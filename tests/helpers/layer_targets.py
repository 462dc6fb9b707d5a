"""Test helper (not a test module): write a graph with each target, load the file back with that
framework's own loader into a zeroed model, run it on named NCHW inputs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import caffe2x
from caffe2x.graph.ir import Graph

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def run_torch(graph: Graph, feeds: dict[str, np.ndarray], outputs: list[str], tmp_path: Path) -> dict[str, np.ndarray]:
    import torch

    from caffe2x.targets.torch import to_module

    path = tmp_path / "net.pt"
    caffe2x.save(graph, path, to="torch")
    module = to_module(graph, outputs)
    with torch.no_grad():
        for t in module.state_dict().values():
            t.zero_()
    module.load_state_dict(torch.load(path, weights_only=True), strict=True)
    with torch.no_grad():
        out = module({k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in feeds.items()})
    out = out if isinstance(out, dict) else {outputs[0]: out}
    return {k: v.numpy() for k, v in out.items()}


def run_keras(graph: Graph, feeds: dict[str, np.ndarray], outputs: list[str], tmp_path: Path) -> dict[str, np.ndarray]:
    from caffe2x.targets.keras import to_model

    path = tmp_path / "net.h5"
    caffe2x.save(graph, path, to="keras")
    fresh = to_model(graph, outputs)
    for w in fresh.weights:
        w.assign(np.zeros(tuple(w.shape), dtype=np.float32))  # every number must come from the file
    fresh.load_weights(str(path))
    xs = [np.ascontiguousarray(feeds[k].transpose(0, 2, 3, 1)) if feeds[k].ndim == 4 else feeds[k]
          for k in graph.inputs]
    ys = fresh(xs if len(xs) > 1 else xs[0], training=False)
    ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
    result = {}
    for name, y in zip(outputs, ys):
        arr = np.asarray(y, dtype=np.float32)
        if len(graph.shapes[graph.value(name)]) == 4:
            arr = arr.transpose(0, 3, 1, 2)
        result[name] = arr
    return result


def run_onnx(graph: Graph, feeds: dict[str, np.ndarray], outputs: list[str], tmp_path: Path) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    from caffe2x.targets.onnx import to_onnx

    path = tmp_path / "net.onnx"
    onnx.save(to_onnx(graph, outputs), str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = session.run(names, {i.name: np.ascontiguousarray(feeds[k], np.float32)
                              for i, k in zip(session.get_inputs(), graph.inputs)})
    return dict(zip(outputs, got))


RUNNERS = {"torch": run_torch, "keras": run_keras, "onnx": run_onnx}


def run_emitted_torch(graph: Graph, feeds: dict[str, np.ndarray], tmp_path: Path, monkeypatch) -> object:  # type: ignore[no-untyped-def]
    """The net through the standalone ``--emit-code`` module alone (``caffe2x`` made unimportable while
    it is loaded and run), with the ``.pt`` loaded by ``load_state_dict(strict=True)``: its raw output."""
    import importlib.util
    import sys

    import torch

    path = tmp_path / "net.pt"
    caffe2x.save(graph, path, emit_code=True)
    monkeypatch.setitem(sys.modules, "caffe2x", None)  # the generated file must stand alone
    try:
        spec = importlib.util.spec_from_file_location("net_model", tmp_path / "net_model.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        net = module.Net()
        net.load_state_dict(torch.load(path, weights_only=True), strict=True)
        with torch.no_grad():
            return net(*(torch.from_numpy(feeds[k]) for k in graph.inputs))
    finally:
        monkeypatch.undo()
