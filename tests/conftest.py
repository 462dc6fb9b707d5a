"""Shared fixtures: the synthetic models are generated once per test session (nothing is downloaded)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(scope="session")
def resnet50_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(caffemodel, deploy prototxt) of the synthetic ResNet-50, written by ``caffe2x fixture``'s code."""
    from caffe2x.fixtures import write_model

    return write_model("resnet50", tmp_path_factory.mktemp("resnet50"))


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from caffe2x.fixtures import write_model

    return write_model("tiny", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def resnet50_graph_session(resnet50_files: tuple[Path, Path]):  # type: ignore[no-untyped-def]
    import caffe2x

    return caffe2x.load(*resnet50_files)


@pytest.fixture()
def resnet50_graph(resnet50_graph_session):  # type: ignore[no-untyped-def]
    """A structural copy per test (tensors shared), so a test may rewrite the graph freely."""
    return resnet50_graph_session.copy()


@pytest.fixture(scope="session")
def image_batch() -> np.ndarray:
    """A seeded NCHW batch scaled like mean-subtracted BGR pixels."""
    return (np.random.default_rng(1234).standard_normal((2, 3, 224, 224)) * 50).astype(np.float32)


def seeded_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
