"""Targets: what caffe2x knows about each framework, in one registry.

A :class:`Target` is everything about one framework: its name, file suffixes, pip extra and the
packages it needs (plain data, so listing targets or checking what is installed imports no framework),
and the code that writes a file (:meth:`Target.write`), loads one back with the framework's own loader
into a model whose weights were zeroed first (:meth:`Target.load` -> :class:`Runner`) and lists what a
file stores (:meth:`Target.stored_tensors`). The converter, the CLI and the validator only ever talk
to targets through this registry; none of them names a framework.

Built-in targets are declared in :data:`BUILTIN` with the module that implements them
(``caffe2x/targets/<fw>/target.py``), imported on first use. Other packages add targets through the
``caffe2x.targets`` entry-point group (see ``docs/targets.md``); :func:`register` is what the
entry-point loader calls for each, and what a script calls to add a target in-process.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from caffe2x.errors import Caffe2xError, option
from caffe2x.graph.ir import Graph

#: the entry-point group third-party targets register under
ENTRY_POINT_GROUP = "caffe2x.targets"


@dataclass
class WriteOptions:
    """Options every target understands (``extra`` holds target-specific ones, e.g. ``emit_code``)."""

    dtype: str = "float32"          # float32 | float16 | bfloat16
    profile: str | None = None      # naming profile, e.g. 'torchvision' or 'keras-applications'
    destination: Path | None = None  # final name of the file being written (write() gets a temporary one)
    overwrite: bool = False         # side files (torch --emit-code) may replace existing ones
    extra: dict[str, Any] = field(default_factory=dict)


class StoredTensor(NamedTuple):
    """One tensor of a file: its name in the file and its values (float32, in the file's own layout)."""

    name: str
    array: np.ndarray


class Runner(Protocol):
    """A model loaded from a file by its framework's own loader."""

    def run(self, x: np.ndarray, values: Sequence[str]) -> dict[str, np.ndarray]:
        """Run NCHW float32 ``x``; return each graph value in ``values`` as an array in Caffe's layout."""
        ...


@dataclass
class RecordedProfile:
    """What a naming-profile file says about itself in its metadata: the profile that wrote it and the
    logit difference its conversion measured and printed (``max|a-b|/max|b|`` against the numpy
    reference on the profile's seeded input), the bound ``validate --against`` holds the file to."""

    profile: str
    max_rel: float


class ProfileRunner(Runner, Protocol):
    """A naming-profile file loaded by its framework's own loader into the *other* library's
    architecture (torchvision's, keras.applications'); ``run`` gives the logits value only."""

    #: the seeded input the converter measured the profile's logit difference on (NCHW float32)
    measurement_input: np.ndarray


def _module_found(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Target:
    """One framework caffe2x converts to (and, when :attr:`runs`, validates by running the file).

    Either give ``module``, the dotted name of a module defining ``write``, ``load`` and
    ``stored_tensors`` with the signatures of the methods below (imported on first use, so declaring
    a target imports nothing), or subclass and override the methods.
    """

    name: str
    #: file suffixes, lower case with the dot; the first is the default output suffix
    suffixes: tuple[str, ...]
    #: pip extra that installs the framework (``pip install 'caffe2x[extra]'``), if any
    extra: str | None = None
    #: import names that must be installed (checked without importing them)
    requires: tuple[str, ...] = ()
    #: module implementing write / load / stored_tensors (None: a subclass overrides them)
    module: str | None = None
    #: whether it writes files (``convert --to NAME``); a target that does not has its files written
    #: by the writing target of its default suffix (the numpy reference runs ``.safetensors`` files)
    writes: bool = True
    #: whether it loads and runs files (``validate --frameworks NAME``, ``--against``)
    runs: bool = True
    #: suffixes :meth:`load` and :meth:`stored_tensors` accept (default: :attr:`suffixes`)
    reads: tuple[str, ...] | None = None
    #: pip distributions whose versions a validation report records (default: :attr:`requires`)
    distributions: tuple[str, ...] | None = None
    #: target-specific keyword options of :meth:`write` (``emit_code``; on the command line ``--emit-code``)
    options: tuple[str, ...] = ()
    #: naming profiles :meth:`write` knows (``options.profile``), each with the suffixes it writes
    profiles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: one line for listings
    summary: str = ""
    #: whether ``validate`` may run it in a child process of its own for a big model (its memory then
    #: goes when the child exits): only for a target a fresh process finds by name (built-in, entry point)
    isolate: bool = False
    #: whether its validation child must run on its own: isolated children of other targets run side by
    #: side, up to the core count, and this one's peak would add to theirs (the Keras child of a ResNet-50
    #: validation peaks at ~0.73 GB, ~0.5 GB of it ``import tensorflow``; beside torch's ~0.38 GB and the
    #: validating process's ~0.05 GB it would be ~1.15 GB, against issue 24's 1 GB)
    runs_alone: bool = False
    #: extra copies of the graph's float32 tensors that :meth:`write` holds at its peak (measured; a
    #: target that does not say is assumed to make one); the size limit counts them before writing
    write_copies: float = 1.0
    #: whether importing :attr:`module` is slow (a framework's import: ``import torch`` is ~1 s and
    #: hundreds of thousands of objects), so that the ``caffe2x`` command imports it with Python's
    #: cyclic GC paused and freezes what it built (:mod:`caffe2x.cli.frozen_import`)
    slow_import: bool = False

    @property
    def default_suffix(self) -> str:
        return self.suffixes[0]

    @property
    def read_suffixes(self) -> tuple[str, ...]:
        return self.suffixes if self.reads is None else self.reads

    def available(self) -> bool:
        """Whether every package in :attr:`requires` is installed (found, not imported)."""
        return all(_module_found(m) for m in self.requires)

    def unavailable_reason(self) -> str:
        missing = [m for m in self.requires if not _module_found(m)]
        hint = f": pip install 'caffe2x[{self.extra}]'" if self.extra else ""
        return f"{', '.join(missing) or self.name} not installed{hint}"

    def implementation(self) -> Any:
        """The module named by :attr:`module`, a missing framework turned into an install hint."""
        if self.module is None:
            raise Caffe2xError(f"the {self.name} target names no implementation module")
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            if exc.name and self.module.startswith(exc.name):
                raise  # the implementation module itself is missing: a packaging bug, not a user error
            hint = f": pip install 'caffe2x[{self.extra}]'" if self.extra else ""
            raise Caffe2xError(f"the {self.name} target needs {exc.name or 'a missing package'}{hint}") from None

    def write(self, graph: Graph, path: Path, options: WriteOptions) -> list[str]:
        """Write ``graph`` to ``path`` (a temporary name; ``options.destination`` is the final one);
        return notes for the user."""
        if not self.writes:
            raise Caffe2xError(f"the {self.name} target writes no files")
        return list(self.implementation().write(graph, path, options))

    def load(self, path: Path, graph: Graph) -> Runner:
        """Load ``path`` with the framework's own loader into a model built from ``graph`` whose
        weights were zeroed first (so every number comes from the file)."""
        if not self.runs:
            raise Caffe2xError(f"the {self.name} target does not run its files")
        return self.implementation().load(path, graph)

    def stored_tensors(self, path: Path, graph: Graph) -> dict[str, StoredTensor]:
        """Every floating-point tensor in ``path``, keyed by the graph tensor key it holds (its name
        in the file when it holds none); values in the file's own layout."""
        return self.implementation().stored_tensors(path, graph)

    def recorded_profile(self, path: Path) -> RecordedProfile | None:
        """The naming profile ``path`` was written with and its measured bound, when the file's format
        records them (optional ``recorded_profile(path)`` in the implementation; default: None)."""
        if not self.profiles or self.module is None:
            return None
        fn = getattr(self.implementation(), "recorded_profile", None)
        return None if fn is None else fn(Path(path))

    def load_profile(self, path: Path, graph: Graph, profile: str) -> ProfileRunner:
        """Load a file written with naming profile ``profile`` into that profile's architecture
        (optional ``load_profile(path, graph, profile)`` in the implementation)."""
        fn = getattr(self.implementation(), "load_profile", None) if self.module is not None else None
        if profile not in self.profiles or fn is None:
            raise Caffe2xError(f"the {self.name} target cannot run files of naming profile {profile!r}")
        return fn(Path(path), graph, profile)


#: the built-in targets, in the order they are listed (and validated). ``write_copies`` measured by
#: saving a weightless net of one 1 GiB InnerProduct (peak RSS over the RSS before the save, in units
#: of the tensors): safetensors 0.12, torch 0.0, onnx 0.0 (raw_data streamed from the arrays; 3.0 when it
#: went through onnx.save_model); keras on the 256 MiB one of test_each_writer_copies_no_more_than_it_declares:
#: .h5 2.43 and .keras 3.91 since their weights go to the file through a file, not an in-memory copy
#: (3.31 and 4.90 before)
BUILTIN: tuple[Target, ...] = (
    Target("safetensors", (".safetensors",), requires=("safetensors",), module="caffe2x.targets.safetensors",
           runs=False, write_copies=0.25, summary="tensors under the graph's names, the graph in the metadata"),
    Target("numpy", (".safetensors",), requires=("safetensors",), module="caffe2x.targets.numpy_reference",
           writes=False, summary="caffe2x's numpy reference executor on a .safetensors file (Caffe's exact numbers)"),
    Target("torch", (".pt", ".pth"), extra="torch", requires=("torch",), module="caffe2x.targets.torch.target",
           options=("emit_code",), profiles={"torchvision": (".pt", ".pth")},
           summary="PyTorch state_dict; torch.load + load_state_dict(strict=True)", isolate=True, write_copies=0.25,
           slow_import=True),
    Target("keras", (".h5", ".keras"), extra="keras", requires=("keras", "tensorflow", "h5py"),
           module="caffe2x.targets.keras.target",
           distributions=("keras", "tensorflow", "tensorflow-cpu", "h5py"),
           options=("full_model",), profiles={"keras-applications": (".h5",)},
           summary="Keras 3 HDF5 weights or model; model.load_weights", isolate=True, runs_alone=True,
           write_copies=4.0, slow_import=True),
    Target("onnx", (".onnx",), extra="onnx", requires=("onnx", "onnxruntime"), module="caffe2x.targets.onnx.target",
           summary="ONNX opset 17; onnxruntime", isolate=True, write_copies=0.25,
           slow_import=True),
)

#: name -> target, in registration order (built-ins first, then entry points, then register() calls)
REGISTRY: dict[str, Target] = {t.name: t for t in BUILTIN}
_entry_points_loaded = False


def register(target: Target | Any, *, replace: bool = False) -> Target:
    """Add a target (a :class:`Target`, or a callable returning one: the value of an entry point).

    This is what the ``caffe2x.targets`` entry-point loader calls for each entry point; call it
    yourself to add a target in-process. A name already taken is an error unless ``replace``.
    """
    if not isinstance(target, Target) and callable(target):
        target = target()
    if not isinstance(target, Target):
        raise Caffe2xError(f"a caffe2x target must be a caffe2x.targets.Target, got {type(target).__name__}")
    if not target.suffixes or any(not s.startswith(".") or s != s.lower() for s in target.suffixes):
        raise Caffe2xError(f"target {target.name!r}: suffixes must be lower-case and start with a dot, "
                           f"got {target.suffixes}")
    if target.name in REGISTRY and not replace and REGISTRY[target.name] is not target:
        raise Caffe2xError(f"a target named {target.name!r} is already registered")
    REGISTRY[target.name] = target
    return target


def unregister(name: str) -> None:
    """Remove a target added with :func:`register` (a no-op for an unknown name)."""
    REGISTRY.pop(name, None)


def load_entry_points() -> None:
    """Register every target of the ``caffe2x.targets`` entry-point group, once per process.

    A broken plugin is reported as a warning and left out; it must not break caffe2x's own targets.
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register(ep.load())
        except Exception as exc:  # noqa: BLE001 - any failure of third-party code
            from caffe2x.errors import PluginWarning

            warnings.warn(f"caffe2x target entry point {ep.name!r} ({ep.value}) not loaded: {exc}", PluginWarning,
                          stacklevel=2)


_handoff_depth = 0


@contextlib.contextmanager
def write_then_load() -> Iterator[None]:
    """A write followed by a load of the same graph (what ``validate`` does per framework): inside this
    block a target may keep what its write built for that load (Keras keeps the built layers, so a
    validation builds them once; the load still zeroes every weight before the framework's own loader
    fills it from the file). Outside it a write keeps nothing: ``caffe2x.save`` never holds a model's
    weights in memory after it returns."""
    global _handoff_depth
    _handoff_depth += 1
    try:
        yield
    finally:
        _handoff_depth -= 1


def handoff_allowed() -> bool:
    """Whether a write may keep what it built for the next load (inside :func:`write_then_load`)."""
    return _handoff_depth > 0


def all_targets() -> list[Target]:
    load_entry_points()
    return list(REGISTRY.values())


def _first(match: Any) -> Target | None:
    """The first registered target ``match`` accepts: built-in and in-process ones first, and the
    installed distributions scanned for entry points only when none of those matches. Scanning costs
    ~40 ms (importing ``importlib.metadata`` and reading every distribution's metadata), a tenth of a
    whole ``convert --to safetensors``; the order is the same as :func:`all_targets`' because
    entry-point targets are registered after the built-in ones."""
    found = next((t for t in list(REGISTRY.values()) if match(t)), None)
    if found is None and not _entry_points_loaded:
        load_entry_points()
        found = next((t for t in list(REGISTRY.values()) if match(t)), None)
    return found


class Choices(Sequence[str]):
    """Names for argparse ``choices`` that answer ``in`` from the registry without scanning entry points
    unless the name is unknown so far; listing them (``--help``, an error) lists every target. Give the
    argument a ``metavar``: argparse iterates ``choices`` to draw a missing one."""

    def __init__(self, listing: Any, known: Any) -> None:
        self._listing, self._known = listing, known

    def __contains__(self, name: object) -> bool:
        return name in self._known() or name in self._listing()

    def __getitem__(self, i: Any) -> Any:
        return self._listing()[i]

    def __len__(self) -> int:
        return len(self._listing())

    def __iter__(self) -> Any:
        return iter(self._listing())


def target_choices(*, writes: bool | None = None, runs: bool | None = None) -> Choices:
    """:func:`names` as lazy argparse ``choices``."""
    def known() -> list[str]:
        return [t.name for t in REGISTRY.values()
                if (writes is None or t.writes == writes) and (runs is None or t.runs == runs)]
    return Choices(lambda: names(writes=writes, runs=runs), known)


def profile_choices() -> Choices:
    """Every target's naming profiles as lazy argparse ``choices``."""
    return Choices(lambda: list(dict.fromkeys(p for t in all_targets() for p in t.profiles)),
                   lambda: [p for t in REGISTRY.values() for p in t.profiles])


def names(*, writes: bool | None = None, runs: bool | None = None) -> list[str]:
    """Registered target names, optionally only those that write files / run them."""
    return [t.name for t in all_targets()
            if (writes is None or t.writes == writes) and (runs is None or t.runs == runs)]


def get(name: str) -> Target:
    """The target called ``name``."""
    found = _first(lambda t: t.name == name)
    if found is None:
        raise Caffe2xError(f"unknown target {name!r}; choose one of {', '.join(names(writes=True))}")
    return found


def writer_for_suffix(suffix: str) -> Target | None:
    """The first registered target that writes files with ``suffix``."""
    return _first(lambda t: t.writes and suffix.lower() in t.suffixes)


def reader_for(path: str | Path) -> Target:
    """The first registered target that runs files like ``path`` (by suffix)."""
    suffix = Path(path).suffix.lower()
    found = _first(lambda t: t.runs and suffix in t.read_suffixes)
    if found is not None:
        return found
    known = sorted({s for t in all_targets() if t.runs for s in t.read_suffixes})
    raise Caffe2xError(f"{Path(path).name}: cannot check a {suffix or 'suffix-less'} file "
                       f"(artifacts: {', '.join(known)})")


def writer_of(target: Target) -> Target:
    """The target that writes ``target``'s files: itself, or the writer of its default suffix."""
    if target.writes:
        return target
    writer = writer_for_suffix(target.default_suffix)
    if writer is None:
        raise Caffe2xError(f"no registered target writes {target.default_suffix} files for the {target.name} target")
    return writer


def target_for(to: str | None, path: str | Path | None) -> str:
    """The name of the target that writes: ``to`` when given, else the one for the suffix of ``path``."""
    if to is not None:
        target = get(to)
        if not target.writes:
            writer = writer_for_suffix(target.default_suffix)
            also = f"; its {target.default_suffix} files are written with {option('to', writer.name)}" if writer else ""
            raise Caffe2xError(f"the {to} target writes no files{also}")
        return to
    if path is not None:
        writer = writer_for_suffix(Path(path).suffix)
        if writer is not None:
            return writer.name
    raise Caffe2xError(f"cannot tell the target format from {str(path)!r}; name it with {option('to')} "
                       f"({', '.join(names(writes=True))})")


__all__ = ["ENTRY_POINT_GROUP", "BUILTIN", "REGISTRY", "Choices", "ProfileRunner", "RecordedProfile", "Runner",
           "StoredTensor", "Target", "WriteOptions", "all_targets", "get", "load_entry_points", "names",
           "profile_choices", "reader_for", "register", "target_choices", "target_for", "unregister",
           "writer_for_suffix", "writer_of"]
