"""The worked fork example of docs/forks.md, end to end as a user runs it.

A fork adds a layer type ``ScaledTanh`` with its own ``scaled_tanh_param { a b }`` to its caffe.proto.
The user installs a small package whose ``caffe2x.layers`` entry point registers the layer
(tests/helpers/scaled_tanh_plugin.py), then converts and validates with ``--proto`` on the command line. The
"installed package" is a real ``.dist-info`` with an ``entry_points.txt`` on the child's path, found by
``importlib.metadata`` exactly as pip would lay it out.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("grpc_tools")

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]

#: what the fork adds to its caffe.proto (docs/forks.md shows the same lines)
FORK_FIELD = "  optional ScaledTanhParameter scaled_tanh_param = 8801;\n"
FORK_MESSAGE = """
// y = a * tanh(b * x)  (LeCun's scaled tanh)
message ScaledTanhParameter {
  optional float a = 1 [default = 1.7159];
  optional float b = 2 [default = 0.6667];
}
"""

DEPLOY = """
name: "fork_net"
input: "data"
input_shape { dim: 1 dim: 2 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "act" type: "ScaledTanh" bottom: "conv" top: "act" scaled_tanh_param { a: 1.5 b: 0.5 } }
layer { name: "fc" type: "InnerProduct" bottom: "act" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture(scope="module")
def fork(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from google.protobuf import text_format

    from caffe2x.caffe.schema import load_schema

    d = tmp_path_factory.mktemp("fork")
    text = (REPO_ROOT / "proto" / "caffe.proto").read_text(encoding="utf-8").replace("package caffe2x_caffe;", "package caffe;")
    text = text.replace("message LayerParameter {\n", "message LayerParameter {\n" + FORK_FIELD, 1) + FORK_MESSAGE
    proto = d / "caffe.proto"
    proto.write_text(text, encoding="utf-8")
    env = dict(os.environ, CAFFE2X_CACHE_DIR=str(d / "cache"))
    mp = pytest.MonkeyPatch()
    mp.setenv("CAFFE2X_CACHE_DIR", env["CAFFE2X_CACHE_DIR"])  # compiled schemas stay out of ~/.cache
    net = text_format.Parse(DEPLOY, load_schema(proto).message("NetParameter")())
    rng = np.random.default_rng(3)
    for layer, shapes in ((net.layer[0], [(4, 2, 3, 3), (4,)]), (net.layer[2], [(5, 144), (5,)])):
        for shape in shapes:
            blob = layer.blobs.add()
            blob.shape.dim.extend(shape)
            blob.data.extend((rng.standard_normal(shape) * 0.3).astype(np.float32).ravel().tolist())
    (d / "fork.caffemodel").write_bytes(net.SerializeToString())
    (d / "fork-deploy.prototxt").write_text(DEPLOY)
    # the user's plugin package, "installed": a dist-info whose entry point names its register()
    site = d / "site"
    info = site / "scaled_tanh_layers-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scaled-tanh-layers\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[caffe2x.layers]\nscaled-tanh = scaled_tanh_plugin:register\n")
    (site / "scaled_tanh_plugin.py").write_text((TESTS / "helpers" / "scaled_tanh_plugin.py").read_text())
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    yield {"dir": d, "proto": proto, "env": env}
    mp.undo()


def _cli(fork: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffe2x", *args], capture_output=True, text=True, timeout=600,
                          env=fork["env"], cwd=fork["dir"])


@pytest.mark.slow  # ~1.5 min on 2 shared cores; --proto (tests/caffe/test_fork_proto.py) and an installed
# plugin (the two tests below, tests/test_plugins.py) stay in the default run
def test_worked_fork_example_converts_and_validates_with_proto_and_an_installed_plugin(fork: dict) -> None:
    d = fork["dir"]
    proc = _cli(fork, "convert", "fork.caffemodel", "-p", "fork-deploy.prototxt", "--proto", "caffe.proto",
                "--to", "onnx", "-q")
    assert proc.returncode == 0, proc.stderr
    assert (d / "fork.onnx").is_file()
    proc = _cli(fork, "validate", "fork.caffemodel", "-p", "fork-deploy.prototxt", "--proto", "caffe.proto",
                "--frameworks", "numpy,torch,keras,onnx")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout.upper()


def test_the_fork_parameters_reach_the_registered_handler(fork: dict) -> None:
    code = ("import caffe2x, numpy as np; g = caffe2x.load('fork.caffemodel', 'fork-deploy.prototxt', "
            "proto='caffe.proto'); n = g.node('act'); print(n.op, n.attrs['a'], n.attrs['b'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=fork["env"], cwd=fork["dir"])
    assert proc.stdout.split() == ["ScaledTanh", "1.5", "0.5"], proc.stderr


def test_without_the_plugin_the_layer_is_named_as_unsupported(fork: dict) -> None:
    env = dict(fork["env"], PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-m", "caffe2x", "inspect", "fork.caffemodel", "-p", "fork-deploy.prototxt",
                           "--proto", "caffe.proto"], capture_output=True, text=True, timeout=300, env=env, cwd=fork["dir"])
    assert proc.returncode == 2
    assert "unsupported layer type 'ScaledTanh' in layer 'act'" in proc.stderr
