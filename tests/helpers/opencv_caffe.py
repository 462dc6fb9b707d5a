"""Run a prototxt through OpenCV's independent Caffe importer (test helper, not a test module).

The prototxt may use fork fields caffe2x's schema does not need for the check: OpenCV parses it with
its own schema; the caffemodel written here only carries the named layers' blobs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):  # OpenCV 5 removed the Caffe importer
    pytest.skip("this OpenCV has no Caffe importer (use opencv-python-headless 4.x)", allow_module_level=True)


def opencv_forward(tmp_path: Path, prototxt: str, inputs: dict[str, np.ndarray], outputs: list[str],
                   blobs: dict[str, list[np.ndarray]] | None = None) -> list[np.ndarray]:
    """OpenCV's outputs of the layers named in ``outputs`` for ``inputs`` (by blob name)."""
    from caffe2x.caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    for name, arrays in (blobs or {}).items():
        layer = net.layer.add()
        layer.name = name
        for a in arrays:
            blob = layer.blobs.add()
            blob.shape.dim.extend(a.shape)
            blob.data.extend(np.asarray(a, dtype=np.float32).ravel().tolist())
    deploy, model = tmp_path / "cv.prototxt", tmp_path / "cv.caffemodel"
    deploy.write_text(prototxt)
    model.write_bytes(net.SerializeToString())
    cvnet = cv2.dnn.readNetFromCaffe(str(deploy), str(model))
    cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for name, value in inputs.items():
        cvnet.setInput(np.ascontiguousarray(value, dtype=np.float32), name)
    return list(cvnet.forward(outputs))
