"""``caffe2x validate``: convert, reload every file with its framework's own loader, run, compare.

What a validation does
----------------------
1. Read the model into a graph and pick the **logits**: the input of the final Softmax when the net
   ends in one (``fc1000`` for ResNet), else the net's (first) output blob.
2. Build the input batch (:mod:`caffe2x.preprocess`: the packaged photos, Caffe's ImageNet
   preprocessing; seeded Gaussian noise for nets that do not take 3-channel images).
3. Run the numpy reference executor (:mod:`caffe2x.reference`, Caffe's exact semantics) on it.
4. For every framework in :data:`FRAMEWORKS`: write the target file into a work directory with
   :func:`caffe2x.save`, load it back with the framework's **own** loader into a model whose weights
   were zeroed first (so every number comes from the file), run the batch, compare the logits with
   the reference.
5. Optionally (``against``) check existing artifacts tensor by tensor and run their logits.

Pass rule
---------
A framework passes when ``max|logits - ref| <= atol + rtol * max|ref|`` (the defaults ``rtol = 1e-4``,
``atol = 0`` make it ``max|a - b| / max|b| <= 1e-4``, the measure :func:`caffe2x.numeric.max_rel_error`
gives) **and** its top-5 classes are identical, in order, to the reference's on every image. 1e-4 is
well above float32 reordering noise through ResNet-50 (about 1e-6) and far below what one wrong
BatchNorm does (the moving-average factor forgotten in one layer changes the logits by ~1e-1). The run
passes when every framework and every artifact passes; a framework that is not installed is skipped,
unless it was named explicitly, which fails the run.

Frameworks are a registry
-------------------------
:data:`FRAMEWORKS` maps a name to a :class:`Framework` subclass with ``available()``,
``prepare(graph, workdir) -> artifact path`` (write + reload) and ``run(x_nchw, outputs) -> {value:
array NCHW}``. Registering another one (``FRAMEWORKS["mine"] = MyFramework`` or ``@register("mine")``)
makes ``--frameworks mine`` work; the default set is every registered framework whose packages are
installed. No framework is imported before it is used.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .cliargs import add_force_argument, add_model_args, parse_floats, path_list_option
from .errors import Caffe2xError
from .ir import Graph

PathLike = str | os.PathLike[str]

#: the report's schema tag (see docs/validate-report-schema.md)
SCHEMA = "caffe2x.validate/1"
DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 0.0
TOPK = 5

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


# =========================================================================== frameworks
class Framework:
    """One framework the validator can convert to and run. Subclasses set the class attributes and
    implement :meth:`load` and :meth:`run`; :meth:`prepare` writes the target file with
    :func:`caffe2x.save` and loads it back with :meth:`load`.

    For ``--against`` a framework also says which file suffixes it reads (:attr:`suffixes`), what a
    file of its format holds (:meth:`stored_tensors`, keyed by the names in the file) and how those
    names map to the graph's tensor keys (:meth:`tensor_labels`).
    """

    name: ClassVar[str] = ""
    #: caffe2x target written by :meth:`prepare`
    target: ClassVar[str | None] = None
    #: file suffix of the written artifact, and every suffix :meth:`stored_tensors` reads
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: import names that must be installed
    modules: ClassVar[tuple[str, ...]] = ()
    #: pip extra that installs them
    extra: ClassVar[str | None] = None
    #: file name stem of the artifact :meth:`prepare` writes (default: from the graph's name)
    artifact_stem: str | None = None
    #: the batch validate runs and the numpy reference's values for it (value name -> array)
    reference: tuple[np.ndarray, Mapping[str, np.ndarray]] | None = None

    @classmethod
    def available(cls) -> bool:
        """Whether the framework's packages are installed (found, not imported)."""
        return all(_module_found(m) for m in cls.modules)

    @classmethod
    def unavailable_reason(cls) -> str:
        missing = [m for m in cls.modules if not _module_found(m)]
        hint = f": pip install 'caffe2x[{cls.extra}]'" if cls.extra else ""
        return f"{', '.join(missing) or cls.name} not installed{hint}"

    def prepare(self, graph: Graph, workdir: Path) -> Path:
        """Write the graph as this framework's file into ``workdir`` and load it back."""
        from . import save

        if not self.suffixes:
            raise NotImplementedError(f"{type(self).__name__} writes no file; override prepare()")
        path = Path(workdir) / f"{self.artifact_stem or _stem(graph)}{self.suffixes[0]}"
        # validate() refused existing files in a kept-artifacts directory up front (unless overwrite)
        save(graph, path, to=self.target, overwrite=True)
        self.load(graph, path)
        return path

    def load(self, graph: Graph, path: Path) -> None:
        """Load ``path`` (a file of this framework's format holding ``graph``'s weights)."""
        raise NotImplementedError

    def run(self, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        """Run NCHW float32 ``x``; return every value named in ``outputs`` (graph value names) as NCHW."""
        raise NotImplementedError

    def stored_tensors(self, path: Path) -> dict[str, np.ndarray]:
        """Every tensor in a file of this format, float32, by its name in the file."""
        raise NotImplementedError

    def tensor_labels(self, graph: Graph) -> dict[str, str]:
        """Name in the file -> graph tensor key (names absent here are shown as stored)."""
        return {k: k for k in graph.tensors}


#: name -> framework class; the default set is every available one, in this order
FRAMEWORKS: dict[str, type[Framework]] = {}


def register(name: str) -> Callable[[type[Framework]], type[Framework]]:
    """Class decorator: ``@register("mine") class Mine(Framework): ...``."""

    def deco(cls: type[Framework]) -> type[Framework]:
        cls.name = name
        FRAMEWORKS[name] = cls
        return cls

    return deco


def _module_found(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _stem(graph: Graph) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in (graph.name or "model")).strip(".")
    return stem or "model"


@register("numpy")
class NumpyFramework(Framework):
    """The numpy reference executor on the graph read back from the written ``.safetensors``
    (safetensors' own ``deserialize``; the graph travels in the file's metadata)."""

    target = "safetensors"
    suffixes = (".safetensors",)
    modules = ("safetensors",)

    def load(self, graph: Graph, path: Path) -> None:
        from .targets.safetensors import read_graph

        try:
            self.graph = read_graph(path)
        except Caffe2xError:  # a plain state dict (no graph metadata): the graph with the file's tensors
            self.graph = graph.copy(tensors=_complete(graph, self.stored_tensors(path)))
        self.identical = self.graph.equals(graph)

    def run(self, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        """The reference on the graph read back from the file. When that graph is bit-identical to the
        validated one and this is validate's batch, the executor (deterministic) would repeat the
        reference run exactly, so its values are returned instead of running it a second time."""
        from .reference import execute

        if self.reference is not None and getattr(self, "identical", False) and x is self.reference[0] \
                and all(v in self.reference[1] for v in outputs):
            return {v: self.reference[1][v] for v in outputs}
        return execute(self.graph, x, keep=set(outputs))

    def stored_tensors(self, path: Path) -> dict[str, np.ndarray]:
        from .targets.safetensors import read_tensors

        return read_tensors(path)


@register("torch")
class TorchFramework(Framework):
    """``torch.load(weights_only=True)`` + ``load_state_dict(strict=True)`` into ``caffe2x.to_torch``'s module."""

    target = "torch"
    suffixes = (".pt", ".pth")
    modules = ("torch",)
    extra = "torch"

    def load(self, graph: Graph, path: Path) -> None:
        self.graph = graph
        self.state = self._read(path)
        self._modules: dict[tuple[str, ...], Any] = {}

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        import pickle

        import torch

        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
            raise Caffe2xError(f"{Path(path).name} does not load with torch.load(weights_only=True): "
                               f"{_one_line(exc)}") from None
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise Caffe2xError(f"{Path(path).name} is not a flat state_dict of tensors")
        return dict(state)

    def module(self, outputs: Sequence[str]) -> Any:
        import torch

        from .targets.torch import to_module

        key = tuple(outputs)
        if key not in self._modules:
            module = to_module(self.graph, list(outputs))
            with torch.no_grad():
                for t in module.state_dict().values():
                    t.zero_()  # every number must come from the file
            try:
                module.load_state_dict(self.state, strict=True)
            except RuntimeError as exc:
                raise Caffe2xError(f"load_state_dict(strict=True) failed: {_one_line(exc)}") from None
            self._modules = {key: module.eval()}  # keep one: a module holds a full copy of the weights
        return self._modules[key]

    def run(self, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        import torch

        module = self.module(outputs)
        with torch.inference_mode():
            y = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        if not isinstance(y, Mapping):
            return {outputs[0]: y.float().numpy()}
        return {k: v.float().numpy() for k, v in y.items()}

    def stored_tensors(self, path: Path) -> dict[str, np.ndarray]:
        return {k: v.detach().float().numpy() for k, v in self._read(path).items()
                if v.is_floating_point()}

    def tensor_labels(self, graph: Graph) -> dict[str, str]:
        from .targets.torch import node_module_names

        return {f"{module}.{role}": key for node, module in zip(graph.nodes, node_module_names(graph))
                for role, key in node.params.items()}


#: Keras variable name -> graph param role, per op
_KERAS_ROLES = {
    "Convolution": {"kernel": "weight", "bias": "bias"},
    "InnerProduct": {"kernel": "weight", "bias": "bias"},
    "BatchNorm": {"moving_mean": "running_mean", "moving_variance": "running_var"},
    "Scale": {"scale": "weight", "bias": "bias"},
}


@register("keras")
class KerasFramework(Framework):
    """``caffe2x.to_keras`` model (weights zeroed) + Keras' own ``load_weights`` on the written ``.h5``;
    NHWC in and out, transposed back to NCHW for comparison."""

    target = "keras"
    suffixes = (".h5",)
    modules = ("keras", "tensorflow", "h5py")
    extra = "keras"

    def load(self, graph: Graph, path: Path) -> None:
        self.graph = graph
        self.path = Path(path)
        self._models: dict[tuple[str, ...], Any] = {}

    def model(self, outputs: Sequence[str]) -> Any:
        from .targets.keras import to_model

        key = tuple(outputs)
        if key not in self._models:
            with _quiet_tensorflow():
                model = to_model(self.graph, list(outputs))
                for w in model.weights:
                    w.assign(np.zeros(tuple(w.shape), dtype=np.float32))  # every number must come from the file
                try:
                    model.load_weights(str(self.path))
                except (ValueError, KeyError, OSError) as exc:
                    raise Caffe2xError(f"Keras load_weights failed: {_one_line(exc)}") from None
            self._models = {key: model}
        return self._models[key]

    def run(self, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        model = self.model(outputs)
        x_nhwc = np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(0, 2, 3, 1)) if x.ndim == 4 else x
        with _quiet_tensorflow():
            y = model(x_nhwc, training=False)
        ys = list(y) if isinstance(y, (list, tuple)) else [y]
        result = {}
        for name, t in zip(outputs, ys):
            arr = np.asarray(t, dtype=np.float32)
            if len(self.graph.shapes[self.graph.value(name)]) == 4:
                arr = np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
            result[name] = arr
        return result

    def stored_tensors(self, path: Path) -> dict[str, np.ndarray]:
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise Caffe2xError(f"{Path(path).name} is not an HDF5 file: {_one_line(exc)}") from None
        with f:
            root = f["model_weights"] if "model_weights" in f else f
            layers = _h5_names(root.attrs, "layer_names")
            if layers is None:
                raise Caffe2xError(f"{Path(path).name} is not a Keras HDF5 weights file (no layer_names)")
            out = {}
            for layer in layers:
                for wname in _h5_names(root[layer].attrs, "weight_names") or []:
                    out[f"{layer}/{wname}"] = np.asarray(root[layer][wname], dtype=np.float32)
            return out

    def tensor_labels(self, graph: Graph) -> dict[str, str]:
        from .targets.keras import BuildContext

        ctx = BuildContext(graph)
        labels = {}
        for node in graph.nodes:
            layer = ctx.name(node)
            for var, role in _KERAS_ROLES.get(node.op, {}).items():
                if role in node.params:
                    labels[f"{layer}/{layer}/{var}"] = node.params[role]
        return labels


def _h5_names(attrs: Any, name: str) -> list[str] | None:
    """A name list as Keras stores it (possibly split over name0, name1, ...)."""
    if name in attrs:
        chunks = [attrs[name]]
    elif f"{name}0" in attrs:
        chunks, i = [], 0
        while f"{name}{i}" in attrs:
            chunks.append(attrs[f"{name}{i}"])
            i += 1
    else:
        return None
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for chunk in chunks for n in chunk]


@register("onnx")
class OnnxFramework(Framework):
    """``onnx.load`` of the written ``.onnx``, run by ``onnxruntime.InferenceSession`` (CPU). The values
    asked for are added as graph outputs to the loaded model (nodes carry their Caffe layer's name)."""

    target = "onnx"
    suffixes = (".onnx",)
    modules = ("onnx", "onnxruntime")
    extra = "onnx"

    def load(self, graph: Graph, path: Path) -> None:
        self.graph = graph
        self.proto = self._read(path)

    @staticmethod
    def _read(path: Path) -> Any:
        import onnx

        try:
            return onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a broken file
            raise Caffe2xError(f"{Path(path).name} does not load with onnx.load: {_one_line(exc)}") from None

    def _onnx_names(self, values: Sequence[str]) -> list[str]:
        """The ONNX tensor name of each graph value: output ``i`` of the node named after its layer."""
        by_node = {n.name: list(n.output) for n in self.proto.graph.node}
        known = {o for outs in by_node.values() for o in outs} | {i.name for i in self.proto.graph.input}
        producers = self.graph.producers()
        names = []
        for v in values:
            node = producers.get(v)
            if node is not None and node.name in by_node and node.outputs.index(v) < len(by_node[node.name]):
                names.append(by_node[node.name][node.outputs.index(v)])
            elif v in known:
                names.append(v)
            else:
                raise Caffe2xError(f"the ONNX model has no tensor for value {v!r}")
        return names

    def run(self, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        import onnx
        from onnx import TensorProto, helper

        from .targets.onnx import run_onnx

        names = self._onnx_names(outputs)
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        present = {o.name for o in model.graph.output}
        for n in dict.fromkeys(names):
            if n not in present:
                model.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
        got = run_onnx(model, x, list(dict.fromkeys(names)))
        del model
        return {v: np.asarray(got[n], dtype=np.float32) for v, n in zip(outputs, names)}

    def stored_tensors(self, path: Path) -> dict[str, np.ndarray]:
        from onnx import numpy_helper

        from .numeric import from_bfloat16_bits

        out = {}
        for init in self._read(path).graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.dtype == np.uint16 or str(arr.dtype) == "bfloat16":
                arr = from_bfloat16_bits(arr.view(np.uint16))
            out[init.name] = np.asarray(arr, dtype=np.float32)
        return out


@contextlib.contextmanager
def _quiet_tensorflow() -> Iterator[None]:
    """Keras/TF chatter (retracing warnings, numpy notices) is not the validator's output."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _complete(graph: Graph, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [k for k in graph.tensors if k not in tensors]
    if missing:
        raise Caffe2xError(f"the file has no tensor {missing[0]!r}")
    return {k: np.asarray(tensors[k], dtype=np.float32) for k in graph.tensors}


def _one_line(exc: BaseException) -> str:
    lines = [l.strip() for l in str(exc).strip().splitlines() if l.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# =========================================================================== results
@dataclass
class Comparison:
    """Logits of one run against the reference's."""

    max_abs: float
    max_rel: float
    top1_agree: int
    topk_agree: int
    topk: list[list[int]]
    within: bool

    @property
    def passed(self) -> bool:
        return self.within and self.topk_agree == len(self.topk)


@dataclass
class FrameworkResult:
    name: str
    status: str                                  # PASS | FAIL | SKIP
    reason: str | None = None
    artifact: str | None = None
    comparison: Comparison | None = None
    prepare_seconds: float | None = None
    run_seconds: float | None = None
    per_layer: list[float | None] | None = None  # max rel error per layer (None: not produced)
    first_divergent: str | None = None
    worst_layer: str | None = None
    logits: np.ndarray | None = field(default=None, repr=False)


@dataclass
class TensorDifference:
    tensor: str        # graph tensor key (or the name in the file when it maps to none)
    stored_as: str     # name in the file
    max_abs: float
    max_rel: float


@dataclass
class ArtifactResult:
    path: str
    framework: str | None
    status: str
    tensors_checked: int = 0
    differing: list[TensorDifference] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    shape_mismatches: list[dict[str, Any]] = field(default_factory=list)
    comparison: Comparison | None = None
    messages: list[str] = field(default_factory=list)
    seconds: float | None = None


@dataclass
class Report:
    """Everything a validation found; :meth:`to_dict` is the JSON report (schema ``caffe2x.validate/1``)."""

    passed: bool
    model: str
    prototxt: str | None
    graph_name: str
    logits_blob: str
    logits_value: str
    logits_note: str
    input: dict[str, Any]
    rtol: float
    atol: float
    reference_topk: list[list[int]]
    reference_max_abs: float
    frameworks: list[FrameworkResult]
    pairwise: list[dict[str, Any]]
    layers: list[dict[str, Any]] | None
    artifacts: list[ArtifactResult]
    failures: list[str]
    labels: list[str] | None = field(default=None, repr=False)
    seconds: float = 0.0
    environment: dict[str, str | None] = field(default_factory=dict)

    def framework(self, name: str) -> FrameworkResult:
        for f in self.frameworks:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return _report_dict(self)

    def table(self) -> str:
        from .report import render_table

        return render_table(self.to_dict())

    def html(self) -> str:
        from .report import render_html

        return render_html(self.to_dict())


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _names(labels: list[str] | None, topk: list[list[int]]) -> list[list[str]] | None:
    if labels is None:
        return None
    return [[labels[i] if 0 <= i < len(labels) else str(i) for i in row] for row in topk]


def _comparison_dict(c: Comparison | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"max_abs": _num(c.max_abs), "max_rel": _num(c.max_rel), "top1_agree": c.top1_agree,
            "top5_agree": c.topk_agree, "within_tolerance": c.within, "top5": c.topk}


def _report_dict(r: Report) -> dict[str, Any]:
    n = int(r.input["shape"][0])
    frameworks = []
    for f in r.frameworks:
        c = f.comparison
        frameworks.append({
            "name": f.name, "status": f.status, "reason": f.reason, "artifact": f.artifact,
            "max_abs": _num(c.max_abs) if c else None, "max_rel": _num(c.max_rel) if c else None,
            "top1_agree": c.top1_agree if c else None, "top5_agree": c.topk_agree if c else None,
            "samples": n, "within_tolerance": c.within if c else None,
            "top5": c.topk if c else None, "top5_labels": _names(r.labels, c.topk) if c else None,
            "prepare_seconds": _num(f.prepare_seconds), "run_seconds": _num(f.run_seconds),
            "per_layer_max_rel": None if f.per_layer is None else [_num(v) for v in f.per_layer],
            "first_divergent_layer": f.first_divergent, "worst_layer": f.worst_layer,
        })
    artifacts = [{
        "path": a.path, "framework": a.framework, "status": a.status, "tensors_checked": a.tensors_checked,
        "differing": [{"tensor": d.tensor, "stored_as": d.stored_as, "max_abs": _num(d.max_abs),
                       "max_rel": _num(d.max_rel)} for d in a.differing],
        "missing": list(a.missing), "extra": list(a.extra), "shape_mismatches": list(a.shape_mismatches),
        "logits": _comparison_dict(a.comparison), "messages": list(a.messages), "seconds": _num(a.seconds),
    } for a in r.artifacts]
    return {
        "schema": SCHEMA,
        "passed": r.passed,
        "model": r.model,
        "prototxt": r.prototxt,
        "graph": r.graph_name,
        "logits": {"blob": r.logits_blob, "value": r.logits_value, "note": r.logits_note},
        "input": r.input,
        "tolerance": {"rtol": r.rtol, "atol": r.atol, "topk": TOPK,
                      "rule": "max|a-b| <= atol + rtol*max|ref| and identical top-5 per image"},
        "reference": {"max_abs": _num(r.reference_max_abs), "top5": r.reference_topk,
                      "top5_labels": _names(r.labels, r.reference_topk)},
        "frameworks": frameworks,
        "pairwise": r.pairwise,
        "layers": r.layers,
        "artifacts": artifacts,
        "failures": list(r.failures),
        "seconds": _num(r.seconds),
        "environment": r.environment,
    }


# =========================================================================== comparing
def logits_blob(graph: Graph) -> tuple[str, str, str]:
    """(blob, value, note): the input of the final Softmax when the net ends in one, else its output."""
    value, note = graph.logits()
    return graph.blob_name(value), value, note


def topk(logits: np.ndarray, k: int = TOPK) -> list[list[int]]:
    """Indices of the k largest logits per sample (descending; ties broken by the lower index)."""
    flat = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    k = min(k, flat.shape[1])
    order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    return [[int(i) for i in row] for row in order]


def within(got: np.ndarray, ref: np.ndarray, rtol: float, atol: float) -> tuple[float, float, bool]:
    """(max abs error, max rel error = max|a-b|/max|ref|, whether max abs <= atol + rtol*max|ref|)."""
    a = np.asarray(got, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        raise Caffe2xError(f"shape {list(a.shape)} differs from the reference's {list(b.shape)}")
    if not a.size:
        return 0.0, 0.0, True
    diff = float(np.max(np.abs(a - b)))
    scale = float(np.max(np.abs(b)))
    if not np.all(np.isfinite(a)):
        return float("nan"), float("nan"), False
    rel = diff / scale if scale > 0 else diff
    return diff, rel, diff <= atol + rtol * scale


def compare_logits(got: np.ndarray, ref: np.ndarray, ref_topk: list[list[int]], rtol: float, atol: float) -> Comparison:
    max_abs, max_rel, ok = within(got, ref, rtol, atol)
    tk = topk(got) if np.all(np.isfinite(got)) else [[-1] for _ in ref_topk]
    top1 = sum(int(a[0] == b[0]) for a, b in zip(tk, ref_topk))
    agree = sum(int(a == b) for a, b in zip(tk, ref_topk))
    return Comparison(max_abs, max_rel, top1, agree, tk, ok)


def _fmt_tol(x: float) -> str:
    if x == 0:
        return "0"
    mant, exp = f"{x:.0e}".split("e")
    return f"{mant}e{int(exp)}"


# =========================================================================== artifacts
def framework_for_file(path: PathLike) -> str:
    """The registered framework that reads ``path``'s format, by suffix."""
    suffix = Path(path).suffix.lower()
    for name, cls in FRAMEWORKS.items():
        if suffix in cls.suffixes:
            return name
    known = sorted({s for cls in FRAMEWORKS.values() for s in cls.suffixes})
    raise Caffe2xError(f"{Path(path).name}: cannot check a {suffix or 'suffix-less'} file "
                       f"(artifacts: {', '.join(known)})")


def compare_tensors(stored: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                    labels: Mapping[str, str], rtol: float, atol: float, result: ArtifactResult) -> None:
    """Names, shapes and values of a file's tensors against the expected ones (both in the file's layout)."""
    label = lambda k: labels.get(k, k)  # noqa: E731
    result.missing = [label(k) for k in expected if k not in stored]
    result.extra = [k for k in stored if k not in expected]
    for key, want in expected.items():
        if key not in stored:
            continue
        got = stored[key]
        if tuple(got.shape) != tuple(want.shape):
            result.shape_mismatches.append({"tensor": label(key), "stored_as": key, "expected": list(want.shape),
                                            "found": list(got.shape)})
            continue
        result.tensors_checked += 1
        max_abs, max_rel, ok = within(got, want, rtol, atol)
        if not ok:
            result.differing.append(TensorDifference(label(key), key, max_abs, max_rel))


def check_artifact(path: PathLike, graph: Graph, x: np.ndarray, ref_logits: np.ndarray, logits_value: str,
                   ref_topk: list[list[int]], rtol: float, atol: float,
                   written: dict[str, Path] | None = None, workdir: Path | None = None) -> ArtifactResult:
    """One ``--against`` artifact: every tensor against the graph's (in the file's own naming and
    layout, the expected file written by caffe2x from the graph), then its logits on the batch."""
    start = time.perf_counter()
    p = Path(path)
    name = framework_for_file(p)
    cls = FRAMEWORKS[name]
    result = ArtifactResult(str(p), name, PASS)
    if not p.is_file():
        raise Caffe2xError(f"{p}: no such artifact file")
    if not cls.available():
        result.status = FAIL
        result.messages.append(f"{p.name}: cannot check, {cls.unavailable_reason()}")
        return result
    fw = cls()
    try:
        stored = fw.stored_tensors(p)
        reference_file = (written or {}).get(name)
        if reference_file is None:
            from . import save

            assert workdir is not None
            reference_file = Path(workdir) / f"expected-{_stem(graph)}{cls.suffixes[0]}"
            save(graph, reference_file, to=cls.target, overwrite=True)  # checked up front by validate()
            if isinstance(written, dict):
                written[name] = reference_file  # the next artifact of this format reuses it
        expected = fw.stored_tensors(reference_file)
        compare_tensors(stored, expected, fw.tensor_labels(graph), rtol, atol, result)
    except Caffe2xError as exc:
        result.status = FAIL
        result.messages.append(f"{p.name}: {exc}")
        result.seconds = time.perf_counter() - start
        return result
    for d in result.differing[:1]:
        via = f" (stored as {d.stored_as!r})" if d.stored_as != d.tensor else ""
        result.messages.append(f"{p.name}: tensor {d.tensor!r}{via} differs: max abs {d.max_abs:.1e}, max rel "
                               f"{d.max_rel:.1e} (rtol {_fmt_tol(rtol)}, atol {_fmt_tol(atol)})"
                               + (f"; {len(result.differing) - 1} more tensor(s) differ" if len(result.differing) > 1 else ""))
    if result.missing:
        result.messages.append(f"{p.name}: {len(result.missing)} tensor(s) missing, first {result.missing[0]!r}")
    if result.extra:
        result.messages.append(f"{p.name}: {len(result.extra)} unexpected tensor(s), first {result.extra[0]!r}")
    for m in result.shape_mismatches[:1]:
        result.messages.append(f"{p.name}: tensor {m['tensor']!r} has shape {m['found']}, expected {m['expected']}"
                               + (f"; {len(result.shape_mismatches) - 1} more" if len(result.shape_mismatches) > 1 else ""))
    # the artifact's own logits
    try:
        fw.load(graph, p)
        got = fw.run(x, [logits_value])[logits_value]
        result.comparison = compare_logits(got, ref_logits, ref_topk, rtol, atol)
        if not result.comparison.passed:
            result.messages.append(f"{p.name}: logits " + _comparison_problem(result.comparison, rtol, atol))
    except Caffe2xError as exc:
        result.messages.append(f"{p.name}: cannot run its logits: {exc}")
    if result.messages:
        result.status = FAIL
    result.seconds = time.perf_counter() - start
    return result


def _comparison_problem(c: Comparison, rtol: float, atol: float) -> str:
    problems = []
    if not c.within:
        if not np.isfinite(c.max_abs):
            problems.append("contain NaN or infinity")
        else:
            problems.append(f"max rel {c.max_rel:.1e} (max abs {c.max_abs:.1e}) exceeds rtol {_fmt_tol(rtol)}"
                            + (f" + atol {_fmt_tol(atol)}" if atol else ""))
    n = len(c.topk)
    if c.topk_agree != n:
        problems.append(f"top-5 differs on {n - c.topk_agree}/{n} image(s)")
    return "; ".join(problems) or "agree"


# =========================================================================== the validation
def read_labels(path: PathLike) -> list[str]:
    """Class names from a ``synset_words.txt``-style file: one class per line, an optional WordNet id
    first (``n01440764 tench, Tinca tinca`` -> ``tench``)."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise Caffe2xError(f"{path}: cannot read labels: {exc.strerror or exc}") from None
    names = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        if rest and len(head) > 1 and head[0] == "n" and head[1:].isdigit():
            line = rest.strip()
        names.append(line.split(",")[0].strip())
    if not names:
        raise Caffe2xError(f"{path}: no labels in the file")
    return names


def _environment() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    env: dict[str, str | None] = {"caffe2x": __version__, "python": platform.python_version(),
                                  "platform": platform.platform(), "numpy": np.__version__}
    for dist in ("torch", "tensorflow", "tensorflow-cpu", "keras", "onnx", "onnxruntime", "safetensors", "h5py", "pillow"):
        try:
            env[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return env


def _layer_values(graph: Graph) -> list[str]:
    return [v for node in graph.nodes for v in node.outputs]


def validate(model: PathLike | Graph, prototxt: PathLike | None = None, frameworks: Sequence[str] | None = None,
             images: PathLike | Sequence[PathLike] | None = None, mean: PathLike | np.ndarray | None = None,
             mean_values: Sequence[float] | None = None, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
             per_layer: bool = False, against: Sequence[PathLike] | None = None,
             input_shape: Sequence[int] | None = None, labels: PathLike | Sequence[str] | None = None,
             outputs: Sequence[str] | None = None,
             keep_artifacts: PathLike | None = None, progress: Callable[[str], None] | None = None,
             proto: PathLike | None = None, overwrite: bool = False) -> Report:
    """Convert ``model`` to every framework, reload each file with its own loader, run the same batch
    and compare the logits with the numpy reference (see the module docstring for the pass rule).

    ``model`` is a ``.caffemodel`` / caffe2x ``.safetensors`` path (read with :func:`caffe2x.load`) or a
    :class:`~caffe2x.ir.Graph`. ``frameworks``: names in :data:`FRAMEWORKS` (default: every available
    one; an explicitly named framework that is not installed fails the run). ``against``: existing
    artifacts to check tensor by tensor. ``keep_artifacts``: a directory to write the converted files
    to (default: a temporary directory, removed afterwards); files already there are kept (the run
    fails before any work) unless ``overwrite``. ``progress``: called with one-line progress messages.
    """
    import math

    say = progress or (lambda _m: None)
    started = time.perf_counter()
    for tol_name, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise Caffe2xError(f"{tol_name} must be a finite number >= 0, got {tol!r}")
    if isinstance(model, Graph):
        graph, model_name, stem = model, model.name or "graph", _stem(model)
    else:
        from . import load

        say(f"reading {model}" + (f" with {prototxt}" if prototxt else ""))
        graph, model_name, stem = (load(model, prototxt, input_shape, outputs=outputs, proto=proto), str(model),
                                   Path(model).stem)
    if len(graph.inputs) != 1:
        raise Caffe2xError(f"validate runs single-input nets; this one has {len(graph.inputs)} "
                           f"({', '.join(graph.inputs)})")
    explicit = frameworks is not None
    names = list(dict.fromkeys(frameworks)) if frameworks is not None else list(FRAMEWORKS)
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown:
        raise Caffe2xError(f"unknown framework {unknown[0]!r}; choose from {', '.join(FRAMEWORKS)}")
    for art in against or ():
        framework_for_file(art)
        if not Path(art).is_file():
            raise Caffe2xError(f"{art}: no such artifact file")
        if keep_artifacts is not None and Path(art).resolve().parent == Path(keep_artifacts).resolve() \
                and Path(art).stem == stem:
            raise Caffe2xError(f"{art} would be overwritten by the files written to {keep_artifacts}; "
                               f"keep the artifacts elsewhere")
    if keep_artifacts is not None:
        _refuse_existing_artifacts(Path(keep_artifacts), stem, names, bool(against), overwrite)
        from .fileio import refuse_collisions

        refuse_collisions([(f"kept artifact", Path(keep_artifacts) / f"{prefix}{stem}{suffix}")
                           for name in names for suffix in FRAMEWORKS[name].suffixes[:1]
                           for prefix in ("", "expected-")],
                          _run_inputs(model, prototxt, mean, images, against, labels))
    label_names = (read_labels(labels) if isinstance(labels, (str, os.PathLike)) else
                   [str(s) for s in labels] if labels is not None else None)

    blob, value, note = logits_blob(graph)
    (input_name, input_shape_), = graph.inputs.items()
    from .preprocess import make_inputs

    inputs = make_inputs(input_name, input_shape_, images, mean, mean_values)
    x = inputs.array
    say(f"  {len(graph.nodes)} layers; logits {blob!r} ({note}); input {list(x.shape)} "
        f"({'photos' if inputs.kind == 'images' else 'seeded Gaussian'})")
    if inputs.note:
        say(f"  note: {inputs.note}")

    # ------------------------------------------------------------------ reference
    from .reference import execute

    say("running the numpy reference" + (" (every layer kept)" if per_layer else ""))
    t = time.perf_counter()
    layer_values = _layer_values(graph) if per_layer else []
    ref_values = execute(graph, x, keep=set(layer_values) | {value})
    ref_logits = ref_values[value]
    if label_names is not None and len(label_names) != int(np.prod(ref_logits.shape[1:])):
        raise Caffe2xError(f"the labels name {len(label_names)} classes, the logits {blob!r} have "
                           f"{int(np.prod(ref_logits.shape[1:]))}")
    ref_topk = topk(ref_logits)
    say(f"  done in {time.perf_counter() - t:.1f}s")
    if not per_layer:
        ref_values = {}

    failures: list[str] = []
    results: list[FrameworkResult] = []
    written: dict[str, Path] = {}
    with _workdir(keep_artifacts) as workdir:
        for name in names:
            result = _run_framework(name, graph, x, workdir, value, ref_logits, ref_topk, rtol, atol,
                                    layer_values, ref_values, explicit, say, written, stem)
            results.append(result)
            if result.status == FAIL:
                failures.append(f"{name}: {result.reason}")
        artifacts = []
        scratch = Path(tempfile.mkdtemp(prefix="caffe2x-expected-")) if against else None
        for art in against or ():
            say(f"checking artifact {art}")
            a = check_artifact(art, graph, x, ref_logits, value, ref_topk, rtol, atol, written, scratch)
            artifacts.append(a)
            say(f"  {a.status}" + (f": {a.messages[0]}" if a.messages else f" ({a.tensors_checked} tensors)"))
            failures.extend(a.messages)
        if scratch is not None:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)

    pairwise = []
    ran = [r for r in results if r.logits is not None]
    scale = float(np.max(np.abs(ref_logits))) if ref_logits.size else 0.0
    for i, a in enumerate(ran):
        for b in ran[i + 1:]:
            d = float(np.max(np.abs(a.logits.astype(np.float64) - b.logits))) if a.logits.shape == b.logits.shape else float("nan")
            pairwise.append({"a": a.name, "b": b.name, "max_abs": _num(d),
                             "max_rel": _num(d / scale if scale > 0 else d)})
    layers = None
    if per_layer:
        layers = [{"index": i, "name": node.name, "op": node.op, "values": list(node.outputs)}
                  for i, node in enumerate(graph.nodes)]
    ran_any = any(r.status != SKIP for r in results) or bool(against)
    if not ran_any:
        failures.append("no framework ran (none available)")
    return Report(
        passed=not failures, model=model_name, prototxt=str(prototxt) if prototxt else None,
        graph_name=graph.name, logits_blob=blob, logits_value=value, logits_note=note, input=inputs.describe(),
        rtol=float(rtol), atol=float(atol), reference_topk=ref_topk,
        reference_max_abs=float(np.max(np.abs(ref_logits))) if ref_logits.size else 0.0,
        frameworks=results, pairwise=pairwise, layers=layers, artifacts=artifacts, failures=failures,
        labels=label_names, seconds=time.perf_counter() - started, environment=_environment())


@contextlib.contextmanager
def _workdir(keep: PathLike | None) -> Iterator[Path]:
    if keep is not None:
        path = Path(keep)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Caffe2xError(f"cannot create {path}: {exc.strerror or exc}") from None
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="caffe2x-validate-") as tmp:
        yield Path(tmp)


def _run_framework(name: str, graph: Graph, x: np.ndarray, workdir: Path, value: str, ref_logits: np.ndarray,
                   ref_topk: list[list[int]], rtol: float, atol: float, layer_values: list[str],
                   ref_values: dict[str, np.ndarray], explicit: bool, say: Callable[[str], None],
                   written: dict[str, Path], stem: str) -> FrameworkResult:
    cls = FRAMEWORKS[name]
    if not cls.available():
        why = cls.unavailable_reason()
        if explicit:
            say(f"{name}: FAIL, {why}")
            return FrameworkResult(name, FAIL, f"requested but {why}")
        say(f"{name}: skipped, {why}")
        return FrameworkResult(name, SKIP, why)
    result = FrameworkResult(name, PASS)
    fw = cls()
    fw.artifact_stem = stem
    fw.reference = (x, {**ref_values, value: ref_logits})
    stage = "writing and loading"
    try:
        say(f"{name}: writing and loading back")
        t = time.perf_counter()
        artifact = fw.prepare(graph, workdir)
        result.prepare_seconds = time.perf_counter() - t
        if artifact is not None:
            result.artifact = Path(artifact).name
            if cls.target is not None:
                written.setdefault(name, Path(artifact))
        stage = "running"
        say(f"{name}: running" + (f" with {len(layer_values)} values exposed" if layer_values else ""))
        t = time.perf_counter()
        outs = fw.run(x, list(dict.fromkeys([*layer_values, value])))
        result.run_seconds = time.perf_counter() - t
        if value not in outs:
            raise Caffe2xError(f"returned no value {value!r}")
        result.logits = np.asarray(outs[value], dtype=np.float32)
        result.comparison = compare_logits(result.logits, ref_logits, ref_topk, rtol, atol)
        if layer_values:
            _per_layer(result, graph, outs, ref_values, rtol, atol)
        del outs
    except Caffe2xError as exc:
        result.status, result.reason = FAIL, f"{stage} failed: {exc}"
    except ImportError as exc:
        result.status, result.reason = FAIL, f"{stage} failed: cannot import {exc.name or exc}"
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - a framework's own failure is a result, not a crash
        result.status, result.reason = FAIL, f"{stage} failed: {type(exc).__name__}: {_one_line(exc)}"
    if result.comparison is not None and not result.comparison.passed:
        result.status = FAIL
        result.reason = _comparison_problem(result.comparison, rtol, atol)
        if result.first_divergent:
            result.reason += f"; first layer past tolerance: {result.first_divergent}"
    c = result.comparison
    say(f"{name}: {result.status}" + (f", max rel {c.max_rel:.1e}, top-5 {c.topk_agree}/{len(c.topk)}" if c else "")
        + (f" ({result.reason})" if result.reason and result.status == FAIL else ""))
    return result


def _per_layer(result: FrameworkResult, graph: Graph, outs: Mapping[str, np.ndarray],
               ref_values: Mapping[str, np.ndarray], rtol: float, atol: float) -> None:
    """Max relative error of every layer's outputs; the first layer past tolerance and the worst."""
    curve: list[float | None] = []
    worst, worst_err = None, -1.0
    for node in graph.nodes:
        errs, bad = [], False
        for v in node.outputs:
            if v not in outs:
                continue
            try:
                _, rel, ok = within(outs[v], ref_values[v], rtol, atol)
            except Caffe2xError:
                rel, ok = float("nan"), False
            errs.append(rel)
            bad = bad or not ok
        err = None if not errs else (float("nan") if any(not np.isfinite(e) for e in errs) else max(errs))
        curve.append(err)
        if bad and result.first_divergent is None:
            result.first_divergent = node.name
        if err is not None and np.isfinite(err) and err > worst_err:
            worst, worst_err = node.name, err
    result.per_layer = curve
    result.worst_layer = worst if worst_err > 0 else None


def _run_inputs(model: Any, prototxt: Any, mean: Any, images: Any, against: Any, labels: Any) -> list[tuple[str, Any]]:
    """(role, path) of every file a validation reads, for :func:`caffe2x.fileio.refuse_collisions`."""
    def paths(value: Any) -> list[Any]:
        if value is None or isinstance(value, (np.ndarray, Graph)):
            return []
        if isinstance(value, (str, os.PathLike)):
            return [value]
        return [v for v in value if isinstance(v, (str, os.PathLike))]

    pairs: list[tuple[str, Any]] = []
    for role, value in (("model", model), ("prototxt", prototxt), ("mean file", mean), ("image", images),
                        ("--against file", against), ("labels file", labels)):
        pairs += [(role, p) for p in paths(value)]
    return pairs


def _refuse_existing_artifacts(directory: Path, stem: str, names: Sequence[str], against: bool,
                               overwrite: bool) -> None:
    """Files validate would write into ``directory`` must not exist yet, unless ``overwrite``."""
    if overwrite:
        return
    from .fileio import OutputExistsError

    for name in names:
        for suffix in FRAMEWORKS[name].suffixes[:1]:
            for prefix in ("", "expected-") if against else ("",):
                path = directory / f"{prefix}{stem}{suffix}"
                if path.exists():
                    raise OutputExistsError(f"{path} already exists; pass --force (overwrite=True) to replace the "
                                            f"kept artifacts")


# =========================================================================== command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``caffe2x validate`` options (``p`` is the subcommand's parser)."""
    add_model_args(p)
    p.add_argument("--frameworks", metavar="LIST",
                   help=f"comma-separated frameworks to check ({', '.join(FRAMEWORKS)}); default: every installed "
                        f"one (a named one that is not installed fails the run)")
    path_list_option(p, "--images", metavar="FILE|DIR",
                     help="photos to run (files and/or directories; repeat the flag or join with commas); "
                          "default: the 4 packaged sample photos")
    means = p.add_mutually_exclusive_group()
    means.add_argument("--mean", metavar="MEAN.binaryproto", help="mean image to subtract (centre-cropped to the input)")
    means.add_argument("--mean-values", metavar="B,G,R", type=parse_floats,
                       help="per-channel means in BGR order (default 103.94,116.78,123.68)")
    p.add_argument("--labels", metavar="synset_words.txt", help="class names, one per line, for the top-5 listing")
    p.add_argument("--json", metavar="REPORT.json", help="write the machine-readable report (schema caffe2x.validate/1)")
    p.add_argument("--html", metavar="REPORT.html",
                   help="write a self-contained HTML report with the per-layer error plot (turns on --per-layer)")
    p.add_argument("--per-layer", action="store_true",
                   help="compare every layer's output and name the first one past tolerance")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                   help="pass if max|a-b| <= atol + rtol*max|ref| (default %(default)g)")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="absolute slack (default %(default)g)")
    path_list_option(p, "--against", metavar="ARTIFACT",
                     help="existing .pt/.h5/.safetensors/.onnx file to check tensor by tensor and run (repeat "
                          "the flag or join with commas)")
    p.add_argument("--keep-artifacts", metavar="DIR", help="write the converted files here instead of a temp dir")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress; print only the verdict")
    add_force_argument(p)


def cmd_validate(args: argparse.Namespace) -> int:
    """``caffe2x validate``: 0 when everything agrees, 1 when something differs (2: bad input, raised)."""
    from .fileio import atomic_output

    quiet = getattr(args, "quiet", False)
    say = None if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    frameworks = None
    if args.frameworks is not None:
        frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
        if not frameworks:
            raise Caffe2xError("--frameworks names no framework")
    from .fileio import OutputExistsError, refuse_collisions

    refuse_collisions([("--json report", args.json), ("--html report", args.html)],
                      _run_inputs(args.model, args.prototxt, args.mean, args.images, args.against, args.labels))
    for out in (args.json, args.html):
        if out and not Path(out).resolve().parent.is_dir():
            raise Caffe2xError(f"cannot write {out}: directory {Path(out).parent} does not exist")
        if out and Path(out).exists() and not args.force:  # a report never comes out identical: fail now
            raise OutputExistsError(f"{out} already exists; pass --force to replace it")
    if args.html and not args.per_layer:
        args.per_layer = True
        if say:
            say("--html plots the error per layer: comparing every layer (--per-layer)")
    report = validate(args.model, args.prototxt, frameworks=frameworks, images=args.images, mean=args.mean,
                      mean_values=args.mean_values, rtol=args.rtol, atol=args.atol, per_layer=args.per_layer,
                      against=args.against, input_shape=args.input_shape, labels=args.labels,
                      outputs=args.outputs,
                      keep_artifacts=args.keep_artifacts, progress=say, proto=args.proto,
                      overwrite=args.force)
    data = report.to_dict()
    from .report import render_html, render_json, render_table, verdict

    if args.json:
        with atomic_output(args.json, overwrite=True) as tmp:  # existence checked above
            tmp.write_text(render_json(data), encoding="utf-8")
    if args.html:
        with atomic_output(args.html, overwrite=True) as tmp:
            tmp.write_text(render_html(data), encoding="utf-8")
    print(verdict(data) if quiet else render_table(data))
    if not quiet:
        for out in (args.json, args.html):
            if out:
                print(f"report written to {out}", file=sys.stderr)
    return 0 if report.passed else 1
