"""Deeper zoo nets (ResNet-101/152) against OpenCV: minutes, so behind the ``slow`` marker (``pytest -m slow``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.graph.numeric import max_rel_error

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["resnet101", "resnet152"])
def test_deep_resnet_reference_matches_opencv(name: str, tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    model, deploy = fixtures.write_model(name, tmp_path)
    graph = caffe2x.load(model, deploy)
    x = (np.random.default_rng(5).standard_normal((1, 3, 224, 224)) * 50).astype(np.float32)
    ours = caffe2x.run(graph, x, outputs="fc1000")
    net = cv2.dnn.readNetFromCaffe(str(deploy), str(model))
    net.setInput(x)
    theirs = net.forward("fc1000")
    assert max_rel_error(ours, theirs) <= 1e-4
    assert list(np.argsort(-ours[0])[:5]) == list(np.argsort(-theirs[0])[:5])
