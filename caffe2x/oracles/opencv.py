"""OpenCV's Caffe importer (``cv2.dnn.readNetFromCaffe``, OpenCV 4.x) run as an independent reference.

The only caffe2x module that imports ``cv2``, and only inside its functions: OpenCV is an optional
extra (``pip install 'caffe2x[oracle]'``). OpenCV 5 removed the Caffe importer, so a cv2 without
``dnn.readNetFromCaffe`` counts as missing. The net runs on OpenCV's own CPU backend with layer fusion
and Winograd convolutions off, so each Caffe layer is computed as written (fusion also renames outputs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import Caffe2xError, one_line

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


def forward(deploy: Path, model: Path, input_name: str, x: np.ndarray, layer: str) -> np.ndarray:
    """The output of Caffe layer ``layer`` when OpenCV runs ``deploy`` with ``model``'s weights on ``x``."""
    import cv2

    try:
        net = cv2.dnn.readNetFromCaffe(str(deploy), str(model))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        net.enableFusion(False)
        if hasattr(net, "enableWinograd"):
            net.enableWinograd(False)
        net.setInput(np.ascontiguousarray(x, dtype=np.float32), input_name)
        out = net.forward(layer)
    except cv2.error as exc:
        raise Caffe2xError(f"OpenCV cannot run the net: {one_line(exc)}") from None
    return np.asarray(out, dtype=np.float32)
