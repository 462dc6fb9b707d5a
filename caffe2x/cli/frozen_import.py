"""A framework's import in the ``caffe2x`` command's own process: Python's cyclic garbage collector
paused while it runs, and every object it built frozen afterwards (:func:`gc.freeze`).

Why: ``import torch`` creates hundreds of thousands of objects that live until the process ends. Each
collection of the oldest generation walks all of them and frees nothing: during the import itself, in
the write after it (one full collection cost 0.086 s of a ResNet-50 write under cProfile), and at
interpreter exit, where finalisation collects again (``import torch`` and a normal exit: 1.64-1.76 s;
the same with ``os._exit``: 1.22-1.24 s). Frozen objects are left out of every later collection,
finalisation's included. ``convert --to torch`` of ResNet-50 went from a median 2.27 s to 1.48 s with
nothing else changed (bench/README.md, 2026-12-07 12:05 UTC).

Only in the command's own process (``_command.is_command``): it exits after the conversion, so what
is frozen is never missed. A program calling the library or ``main()`` keeps its collector as it was.
Objects made after the import (the module built for the write, Keras' layers) are collected as usual.
"""
from __future__ import annotations

import sys

from caffe2x import _command
from caffe2x.targets import Target


def applies(target: Target) -> bool:
    """Whether :func:`import_writer` pauses and freezes: the command's own process, a target that says
    its import is slow, and the module not imported yet."""
    return _command.is_command and target.slow_import and target.module is not None and \
        target.module not in sys.modules


def import_writer(target: Target) -> None:
    """Import ``target``'s module now, the collector paused, then freeze what exists. A failure to
    import is left to the write, which imports it again and reports it in its place (after the model's
    own errors, which come first)."""
    if not applies(target):
        return
    try:
        _command.import_frozen(target.implementation)
    except Exception:  # noqa: BLE001 - reported by caffe2x.convert.write, in its place
        pass
