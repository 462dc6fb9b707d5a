"""The ``ray`` engine on a local Ray cluster started by the test: the same figures as the local engine.

Ray's start-up takes several seconds, so the default suite runs one real Ray evaluation (two actors, two
frameworks); the every-framework run is ``slow``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import caffe2x
from tests.helpers.evaluate_sets import colour_set, figures

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    """A local Ray cluster of 2 CPUs whose workers import this checkout's caffe2x."""
    root = str(Path(caffe2x.__file__).resolve().parent.parent)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return colour_set(tmp_path_factory.mktemp("colours"), count=20)


def _run(colours, engine: str, frameworks: list[str]):  # type: ignore[no-untyped-def]
    return caffe2x.evaluate(colours.model, colours.prototxt, images=colours.root, list_file=colours.listing,
                            frameworks=frameworks, engine=engine, workers=2, batch_size=4)


def test_ray_actors_give_the_local_engines_figures(cluster, colours) -> None:  # type: ignore[no-untyped-def]
    on_ray = _run(colours, "ray", ["numpy", "onnx"])
    assert on_ray.data["engine"] == "ray" and on_ray.passed
    onnx = on_ray.data["frameworks"][1]
    assert onnx["counts"] == {"top1_correct": colours.top1, "top5_correct": colours.top5, "top1_agree": 20,
                              "top5_agree": 20}
    local = _run(colours, "local", ["numpy", "onnx"])
    assert figures(on_ray) == figures(local)


@pytest.mark.slow
def test_ray_in_every_framework(cluster, colours) -> None:  # type: ignore[no-untyped-def]
    fws = ["numpy", "torch", "keras", "onnx"]
    on_ray = _run(colours, "ray", fws)
    for f in on_ray.data["frameworks"]:
        assert f["counts"]["top1_correct"] == colours.top1 and f["counts"]["top5_correct"] == colours.top5
    assert figures(on_ray) == figures(_run(colours, "local", fws))


@pytest.mark.slow
def test_ray_address_connects_to_an_existing_cluster(colours) -> None:  # type: ignore[no-untyped-def]
    """``ray_address``: a cluster started elsewhere (here Ray's own test cluster, a head node of 2 CPUs),
    not this process's session; the figures are the local engine's."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        report = caffe2x.evaluate(colours.model, colours.prototxt, images=colours.root, list_file=colours.listing,
                                  frameworks=["numpy", "torch"], engine="ray", workers=2, batch_size=4,
                                  ray_address=cluster.address)
        assert report.passed and not ray.is_initialized()  # the engine disconnected when done
        local = caffe2x.evaluate(colours.model, colours.prototxt, images=colours.root, list_file=colours.listing,
                                 frameworks=["numpy", "torch"], engine="local", workers=2, batch_size=4)
        assert figures(report) == figures(local)
    finally:
        cluster.shutdown()
