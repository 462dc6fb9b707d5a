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


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the tests that share a costly module-scoped fixture on one xdist worker (``--dist loadgroup``
    in pyproject's addopts). Under plain ``--dist load`` each worker that receives one of them builds the
    fixture again: the ``--against --profile`` module's ~100 s setup ran on both workers. A module names
    its costly fixtures in ``XDIST_SHARED_FIXTURES`` (only those: grouping a cheap fixture's 164 tests
    would pin them all to one worker). Tests are joined transitively (fixtures used together form one
    group), and xdist sends the largest groups first."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    keys_of: dict[int, list[str]] = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        shared = getattr(item.module, "XDIST_SHARED_FIXTURES", ())
        keys = [f"{item.module.__name__}::{name}" for name in item.fixturenames
                if name in shared and (defs := info.name2fixturedefs.get(name)) and defs[-1].scope == "module"]
        for other in keys[1:]:
            parent[root(other)] = root(keys[0])
        if keys:
            keys_of[id(item)] = keys
    for item in items:
        if id(item) in keys_of and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(root(keys_of[id(item)][0])))
