"""Importing Keras without TensorFlow's import-time log lines on stderr.

Why: TensorFlow (2.16 and later) logs its oneDNN notice through absl *before* absl's logging is set up,
so ``TF_CPP_MIN_LOG_LEVEL`` does not reach it: every ``import keras`` printed two
``WARNING: All log messages before absl::InitializeLog() …`` / ``I0000 … port.cc … oneDNN custom
operations are on …`` pairs straight to file descriptor 2, under ``caffe2x validate -q`` too. They are
written by C++ during the import, so Python's ``sys.stderr`` cannot catch them: descriptor 2 itself
points to a temporary file for the import, and everything that is not one of those lines is written
back afterwards (a failed import replays all of it, so no reason for a failure is lost).

The lines stay when ``TF_CPP_MIN_LOG_LEVEL`` is ``0`` (``caffe2x validate --verbose`` sets it so).

Also here, :func:`without_unused_extras`: the import without the optional packages it pulls in for
features caffe2x never uses, in the processes caffe2x owns.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

#: what TensorFlow writes while it is imported: absl's pre-initialisation warning and INFO lines
_NOISE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                    rb"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*)$")


@contextlib.contextmanager
def quiet_import() -> Iterator[None]:
    """Run the block with descriptor 2 redirected; give back every line but TensorFlow's notices."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "0":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (an embedded interpreter): nothing to redirect
        yield
        return
    failed = False
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines = sink.read().splitlines(keepends=True)
            kept = lines if failed else [l for l in lines if not _NOISE.match(l.rstrip(b"\r\n"))]
            if kept:
                os.write(2, b"".join(kept))


#: what ``import keras`` on TensorFlow imports when it is installed, only for a feature caffe2x never
#: uses; each import is guarded by ``try: ... except ImportError`` in the importing module. Measured
#: with all three installed (``caffe2x[test]``): ``import keras`` 4.6 -> 3.8 s, peak RSS 649 -> 505 MiB.
UNUSED_EXTRAS: dict[str, str] = {
    "jax": "tensorflow.lite.python.util: TF Lite's converter of JAX functions (0.4 s, ~100 MiB)",
    "IPython": "keras.src.saving.file_editor: showing a saved file's contents in a notebook (0.4 s)",
    "cv2": "keras.src.visualization.draw_bounding_boxes: drawing boxes on images (0.1 s)",
}


@contextlib.contextmanager
def without_unused_extras() -> Iterator[None]:
    """Run the block (``import keras``) with the :data:`UNUSED_EXTRAS` not yet imported looking absent,
    then make them importable again.

    Only where caffe2x owns the process (:data:`caffe2x._command.owns_process`: the command, a validation
    child) and Keras runs on TensorFlow (on JAX, ``jax`` is the backend itself). The modules that
    guard those imports keep their feature off for this process; nothing caffe2x does needs them, and a
    later ``import cv2`` (the OpenCV oracle) imports OpenCV as usual. In any other process nothing changes.
    """
    from caffe2x import _command

    if not _command.owns_process or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        yield
        return
    hidden = [name for name in UNUSED_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # ``import name`` raises ImportError
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
