"""OpenCV's Caffe importer (``cv2.dnn.readNetFromCaffe``, OpenCV 4.x) run as an independent reference.

The only caffe2x module that imports ``cv2``, and only inside its functions: OpenCV is an optional
extra (``pip install 'caffe2x[oracle]'``). OpenCV 5 removed the Caffe importer, so a cv2 without
``dnn.readNetFromCaffe`` counts as missing. The net runs on OpenCV's own CPU backend with layer fusion
and Winograd convolutions off, so each Caffe layer is computed as written (fusion also renames outputs).

OpenCV runs in a child process (:func:`forward_isolated`): its importer crashes the process on some
nets (a segfault on BatchNorm with ``use_global_stats: false``), which must cost the oracle, not the
validation.
"""
from __future__ import annotations

import re
import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from caffe2x.errors import Caffe2xError, one_line

INSTALL_HINT = "pip install 'caffe2x[oracle]' (opencv-python-headless 4.x)"


def unavailable_reason() -> str | None:
    """Why OpenCV cannot serve as the oracle here, or None when it can."""
    try:
        import cv2
    except ImportError:
        return f"OpenCV is not installed: {INSTALL_HINT}"
    if not hasattr(getattr(cv2, "dnn", None), "readNetFromCaffe"):
        return f"OpenCV {getattr(cv2, '__version__', '?')} has no Caffe importer (OpenCV 5 removed it): {INSTALL_HINT}"
    return None


def version() -> str:
    import cv2

    return str(cv2.__version__)


def _message(exc: BaseException) -> str:
    """OpenCV's error without its source path and function: ``Can't create layer "th" of type "Threshold"``."""
    text = one_line(exc)
    m = re.search(r"error: \([^)]*\) (.*)", text)
    text = m.group(1) if m else text
    return re.sub(r" in function '[^']*'$", "", text).strip()


def forward(deploy: Path, model: Path, input_name: str, x: np.ndarray, layer: str, index: int = 0) -> np.ndarray:
    """Output ``index`` of Caffe layer ``layer`` when OpenCV runs ``deploy`` with ``model``'s weights on ``x``."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    level = logging.getLogLevel() if logging is not None else None
    try:
        if logging is not None:  # OpenCV prints its own [ERROR] lines for a net it cannot shape; the reason is ours
            logging.setLogLevel(logging.LOG_LEVEL_SILENT)
        net = cv2.dnn.readNetFromCaffe(str(deploy), str(model))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        net.enableFusion(False)
        if hasattr(net, "enableWinograd"):
            net.enableWinograd(False)
        net.setInput(np.ascontiguousarray(x, dtype=np.float32), input_name)
        outs = net.forwardAndRetrieve([layer])[0]  # every top of the layer
    except cv2.error as exc:
        raise Caffe2xError(f"OpenCV cannot run the net: {_message(exc)}") from None
    finally:
        if logging is not None:
            logging.setLogLevel(level)
    if index >= len(outs):
        raise Caffe2xError(f"OpenCV's layer {layer!r} has {len(outs)} output(s), not {index + 1}")
    return np.asarray(outs[index], dtype=np.float32)


_BOOTSTRAP = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
              "from caffe2x.validation.oracles.opencv import child_main; child_main(sys.argv[2:])")
#: exit status of a child that reports a Caffe2xError (its message is in the error file)
_REPORTED = 3


def forward_isolated(deploy: Path, model: Path, input_name: str, x: np.ndarray, layer: str, index: int,
                     scratch: Path) -> np.ndarray:
    """:func:`forward` in a child process (same ``sys.path``, files in ``scratch``); a crash is an error."""
    scratch = Path(scratch)
    x_file, out_file, err_file = scratch / "x.npy", scratch / "out.npy", scratch / "error.txt"
    np.save(x_file, np.ascontiguousarray(x, dtype=np.float32))
    args = [sys.executable, "-c", _BOOTSTRAP, json.dumps(sys.path), str(deploy), str(model), input_name,
            str(x_file), layer, str(index), str(out_file), str(err_file)]
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode == 0:
        return np.load(out_file)
    if proc.returncode == _REPORTED and err_file.exists():
        raise Caffe2xError(err_file.read_text(encoding="utf-8"))
    if proc.returncode < 0:
        try:
            how = signal.Signals(-proc.returncode).name
        except ValueError:
            how = f"signal {-proc.returncode}"
        raise Caffe2xError(f"OpenCV crashed ({how}) running the net")
    last = [line for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.strip()][-1:]
    raise Caffe2xError(f"OpenCV's process failed (exit {proc.returncode})" + (f": {last[0][:200]}" if last else ""))


def child_main(argv: Sequence[str]) -> None:
    """The child of :func:`forward_isolated`."""
    deploy, model, input_name, x_file, layer, index, out_file, err_file = argv
    try:
        out = forward(Path(deploy), Path(model), input_name, np.load(x_file), layer, int(index))
    except Caffe2xError as exc:
        Path(err_file).write_text(str(exc), encoding="utf-8")
        sys.exit(_REPORTED)
    np.save(out_file, out)
