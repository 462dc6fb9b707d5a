"""Target registry: one module per framework, found by name or by the output file's suffix.

A target module is imported only when it is used, so writing safetensors never imports torch or
tensorflow. Each module exposes ``SUFFIXES`` (tuple of file suffixes it writes) and
``write(graph, path, options) -> list[str]``: it writes ``path`` (a temporary name the caller renames
into place when ``write`` returns) and returns notes to show the user (e.g. a measured logit difference).
Adding a framework is adding one module and one line in :data:`TARGETS`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import Caffe2xError

#: target name -> module path
TARGETS: dict[str, str] = {
    "safetensors": "caffe2x.targets.safetensors",
    "torch": "caffe2x.targets.torch",
    "keras": "caffe2x.targets.keras",
    "onnx": "caffe2x.targets.onnx",
}

#: file suffix -> target name
SUFFIXES: dict[str, str] = {
    ".safetensors": "safetensors",
    ".pt": "torch",
    ".pth": "torch",
    ".h5": "keras",
    ".keras": "keras",
    ".onnx": "onnx",
}

#: default output suffix per target
DEFAULT_SUFFIX: dict[str, str] = {"safetensors": ".safetensors", "torch": ".pt", "keras": ".h5", "onnx": ".onnx"}

#: pip extra that brings each target's framework
EXTRAS: dict[str, str] = {"torch": "torch", "keras": "keras", "onnx": "onnx", "safetensors": ""}


@dataclass
class WriteOptions:
    """Options every target understands (``extra`` holds target-specific ones, e.g. ``emit_code``)."""

    dtype: str = "float32"          # float32 | float16 | bfloat16
    profile: str | None = None      # naming profile, e.g. 'torchvision' or 'keras-applications'
    destination: Path | None = None  # final name of the file being written (write() gets a temporary one)
    overwrite: bool = False         # side files (torch --emit-code) may replace existing ones
    extra: dict[str, Any] = field(default_factory=dict)


def target_for(to: str | None, path: str | Path | None) -> str:
    """The target name from an explicit ``to`` or from the suffix of ``path``."""
    if to is not None:
        if to not in TARGETS:
            raise Caffe2xError(f"unknown target {to!r}; choose one of {', '.join(TARGETS)}")
        return to
    if path is not None:
        suffix = Path(path).suffix.lower()
        if suffix in SUFFIXES:
            return SUFFIXES[suffix]
    raise Caffe2xError(f"cannot tell the target format from {str(path)!r}; name it with to=/--to "
                       f"({', '.join(TARGETS)})")


def load_target(name: str) -> ModuleType:
    """Import a target module, turning a missing framework into a clear install hint."""
    try:
        return importlib.import_module(TARGETS[name])
    except ImportError as exc:
        extra = EXTRAS.get(name, name)
        raise Caffe2xError(f"the {name} target needs {exc.name or 'a missing package'}: "
                           f"pip install 'caffe2x[{extra}]'") from None
