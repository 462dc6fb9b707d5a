"""Importing Keras without TensorFlow's import-time log lines on stderr.

Why: TensorFlow (2.16 and later) logs its oneDNN notice through absl *before* absl's logging is set up,
so ``TF_CPP_MIN_LOG_LEVEL`` does not reach it: every ``import keras`` printed two
``WARNING: All log messages before absl::InitializeLog() …`` / ``I0000 … port.cc … oneDNN custom
operations are on …`` pairs straight to file descriptor 2, under ``caffe2x validate -q`` too. They are
written by C++ during the import, so Python's ``sys.stderr`` cannot catch them: descriptor 2 itself
points to a temporary file for the import, and everything that is not one of those lines is written
back afterwards (a failed import replays all of it, so no reason for a failure is lost).

The lines stay when ``TF_CPP_MIN_LOG_LEVEL`` is ``0`` (``caffe2x validate --verbose`` sets it so).
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
