"""``--proto`` / ``caffe2x.load(..., proto=...)``: a user's fork caffe.proto compiled at run time.

The fork schema is built here from caffe2x's own ``proto/caffe.proto`` with upstream's package name,
a custom ``LayerParameter`` field (``glow_param``, number 9001, message ``GlowParameter``) for a
custom layer type ``Glow``, and one extra field inside a message caffe2x knows (``PoolingParameter.
fancy``). grpcio-tools compiles it (in a child process) into a private descriptor pool.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x.caffe import reader
from caffe2x.caffe.reader import LayerSpec

pytest.importorskip("grpc_tools")

REPO_ROOT = Path(__file__).resolve().parents[2]

PROTOTXT = """
name: "forknet"
input: "data"
input_shape { dim: 1 dim: 2 dim: 6 dim: 6 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "glow" type: "Glow" bottom: "conv" top: "glow" glow_param { gain: 2.5 } }
layer { name: "pool" type: "Pooling" bottom: "glow" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 %s } }
"""


def _fork_proto(directory: Path) -> Path:
    text = (REPO_ROOT / "proto" / "caffe.proto").read_text(encoding="utf-8")
    text = text.replace("package caffe2x_caffe;", "package caffe;")
    text = text.replace("message LayerParameter {\n", "message LayerParameter {\n  optional GlowParameter glow_param = 9001;\n", 1)
    text = text.replace("message PoolingParameter {\n", "message PoolingParameter {\n  optional bool fancy = 777;\n", 1)
    text += "\n// A fork layer: y = gain * x\nmessage GlowParameter {\n  optional float gain = 1 [default = 1];\n}\n"
    path = directory / "caffe.proto"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Compiled schemas go to a temporary cache (inherited by the CLI subprocesses), not ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAFFE2X_CACHE_DIR", str(tmp_path_factory.mktemp("proto-cache")))
        yield


@pytest.fixture(scope="module")
def fork(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The fork proto, a caffemodel written with the fork's own classes, and its prototxt."""
    from caffe2x.caffe.schema import load_schema

    d = tmp_path_factory.mktemp("fork")
    proto = _fork_proto(d)
    schema = load_schema(proto)
    net = schema.message("NetParameter")()
    from google.protobuf import text_format

    text_format.Parse(PROTOTXT % "", net)
    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((3, 2, 3, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    for arr in (weight, bias):
        blob = net.layer[0].blobs.add()
        blob.shape.dim.extend(arr.shape)
        blob.data.extend(arr.ravel().tolist())
    model = d / "fork.caffemodel"
    model.write_bytes(net.SerializeToString())
    prototxt = d / "fork.prototxt"
    prototxt.write_text(PROTOTXT % "")
    return {"proto": proto, "model": model, "prototxt": prototxt, "weight": weight, "bias": bias, "dir": d}


@pytest.fixture()
def glow_handler():  # type: ignore[no-untyped-def]
    """A handler for the fork's Glow layer, reading its fork-only field (a Scale by the gain)."""

    def glow(layer, ins, blobs):  # type: ignore[no-untyped-def]
        gain = float(layer.glow_param.gain)
        return LayerSpec("Scale", {"axis": 1, "num_axes": 1}, {"weight": np.full(ins[0][1], gain, np.float32)})

    caffe2x.register_layer("Glow", reader=glow, op="Scale", replace=True)
    yield
    del reader.LAYERS["Glow"]


@pytest.mark.parametrize("with_model", [True, False], ids=["caffemodel+prototxt", "caffemodel-only"])
def test_fork_layer_and_field_read_with_the_fork_proto(fork: dict, glow_handler: None, with_model: bool) -> None:
    prototxt = fork["prototxt"] if with_model else None
    graph = caffe2x.load(fork["model"], prototxt, proto=fork["proto"])
    assert [n.name for n in graph.nodes] == ["conv", "glow", "pool"]
    np.testing.assert_array_equal(graph.tensors["conv.weight"], fork["weight"])
    np.testing.assert_array_equal(graph.tensors["glow.weight"], np.full(3, 2.5, np.float32))
    x = np.random.default_rng(1).standard_normal((1, 2, 6, 6)).astype(np.float32)
    out = caffe2x.run(graph, x, outputs=["conv", "glow"])
    np.testing.assert_allclose(out["glow"], 2.5 * out["conv"], rtol=1e-6)


def test_without_the_fork_proto_the_fork_field_is_an_error_naming_it(fork: dict) -> None:
    with pytest.raises(caffe2x.Caffe2xError, match=r"line 7.*glow_param"):
        caffe2x.load(fork["model"], fork["prototxt"])


def test_a_field_the_fork_proto_does_not_know_names_field_and_line(fork: dict, tmp_path: Path) -> None:
    prototxt = tmp_path / "typo.prototxt"
    prototxt.write_text(PROTOTXT.replace("gain: 2.5", "gian: 2.5") % "")
    with pytest.raises(caffe2x.Caffe2xError) as info:
        caffe2x.load(None, prototxt, proto=fork["proto"])
    message = str(info.value)
    assert "line 7" in message and '"GlowParameter" has no field named "gian"' in message
    assert "caffe.GlowParameter" not in message and "\n" not in message


def test_fork_field_inside_a_known_message_is_an_error(fork: dict, glow_handler: None, tmp_path: Path) -> None:
    prototxt = tmp_path / "fancy.prototxt"
    prototxt.write_text(PROTOTXT % "fancy: true")
    with pytest.raises(caffe2x.Caffe2xError, match=r"layer 'pool'.*pooling_param\.fancy.*does not know"):
        caffe2x.load(None, prototxt, proto=fork["proto"])


def test_fork_only_layer_field_no_handler_reads_is_an_error(fork: dict, tmp_path: Path) -> None:
    # a ReLU carrying the fork's glow_param: caffe2x's ReLU handler would ignore it
    prototxt = tmp_path / "relu.prototxt"
    prototxt.write_text('input: "data" input_shape { dim: 1 dim: 2 }\n'
                        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" glow_param { gain: 3 } }\n')
    with pytest.raises(caffe2x.Caffe2xError, match=r"layer 'r' \(ReLU\) sets glow_param.*does not read"):
        caffe2x.load(None, prototxt, proto=fork["proto"])


def test_compiled_schema_is_cached_by_content(fork: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from caffe2x.caffe.schema import compile_proto

    monkeypatch.setenv("CAFFE2X_CACHE_DIR", str(tmp_path / "cache"))
    first = compile_proto(fork["proto"])
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".desc"
    stamp = cached[0].stat().st_mtime_ns
    assert compile_proto(fork["proto"]) == first and cached[0].stat().st_mtime_ns == stamp
    changed = tmp_path / "caffe.proto"
    changed.write_text(fork["proto"].read_text() + "\nmessage Extra { optional int32 x = 1; }\n")
    compile_proto(changed)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_a_proto_that_does_not_compile_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from caffe2x.caffe.schema import compile_proto

    monkeypatch.setenv("CAFFE2X_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "bad.proto"
    bad.write_text('syntax = "proto2";\nmessage NetParameter { optional Nope x = 1; }\n')
    with pytest.raises(caffe2x.Caffe2xError, match=r"bad\.proto does not compile:.*Nope"):
        compile_proto(bad)
    with pytest.raises(caffe2x.Caffe2xError, match="no such .proto file"):
        compile_proto(tmp_path / "missing.proto")


def test_cli_proto_flag(fork: dict, tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    model, prototxt = tiny_files
    env_cmd = [sys.executable, "-m", "caffe2x", "inspect", str(model), "-p", str(prototxt), "--proto", str(fork["proto"])]
    result = subprocess.run(env_cmd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    plain = subprocess.run(env_cmd[:-2], capture_output=True, text=True, timeout=180)
    assert result.stdout == plain.stdout
    relu = tmp_path / "relu.prototxt"
    relu.write_text('input: "data" input_shape { dim: 1 dim: 2 }\n'
                    'layer { name: "r" type: "ReLU" bottom: "data" top: "r" glow_param { gain: 3 } }\n')
    bad = subprocess.run([sys.executable, "-m", "caffe2x", "convert", str(model), "-p", str(relu), "--proto",
                          str(fork["proto"]), "--to", "safetensors", "-o", str(tmp_path / "x.safetensors")],
                         capture_output=True, text=True, timeout=180)
    last = bad.stderr.strip().splitlines()[-1]
    assert bad.returncode == 2 and last.startswith("error: ") and "layer 'r' (ReLU) sets glow_param" in last
    assert not (tmp_path / "x.safetensors").exists()
