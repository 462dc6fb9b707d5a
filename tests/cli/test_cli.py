"""The command line: conversions that work, and bad input that fails with one clear line and no file."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.cli.main import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffe2x", *args], capture_output=True, text=True, timeout=300)


def assert_clean_failure(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert pattern in lines[0], lines[0]


def test_convert_resnet50_to_safetensors_without_importing_torch_or_tensorflow(resnet50_files, tmp_path: Path) -> None:
    model, deploy = resnet50_files
    out = tmp_path / "r50.safetensors"
    code = f"""
import sys
from caffe2x.cli import main
rc = main(["convert", {str(model)!r}, "--prototxt", {str(deploy)!r}, "--to", "safetensors", "-o", {str(out)!r}, "-q"])
heavy = sorted(m for m in ("torch", "tensorflow", "keras", "onnx", "onnxruntime") if m in sys.modules)
# neither the entry-point scan (importlib.metadata: ~40 ms) nor validate's options are part of the wait,
# nor what only other inputs need: resizing (reshape), HDF5 weights, seeding a weightless net, --outputs
slow = sorted(m for m in ("importlib.metadata", "caffe2x.cli.validate", "caffe2x.cli.inspect", "caffe2x.graph.reshape",
                          "caffe2x.caffe.hdf5weights", "caffe2x.caffe.calibration", "caffe2x.caffe.netcut")
              if m in sys.modules)
print(rc, heavy, slow)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "0 [] []", proc.stdout + proc.stderr
    graph = caffe2x.load(out)
    assert graph.equals(caffe2x.load(model, deploy))


def test_inspect_lists_layers_shapes_and_the_caffemodel_parameter_count(resnet50_files, capsys) -> None:
    model, deploy = resnet50_files
    assert main(["inspect", str(model), "--prototxt", str(deploy), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_layers"] == 228 and info["num_caffe_parameters"] == 25_610_269
    pool1 = next(l for l in info["layers"] if l["name"] == "pool1")
    assert pool1["type"] == "Pooling" and pool1["outputs"] == {"pool1": [1, 64, 56, 56]}
    assert info["outputs"] == {"prob": [1, 1000]}
    assert main(["inspect", str(model), "--prototxt", str(deploy)]) == 0
    table = capsys.readouterr().out
    assert "fc1000" in table and "2,049,000" in table and "25,610,269" in table


def test_fixture_command_writes_a_loadable_model(tmp_path: Path) -> None:
    assert main(["fixture", "tiny", "-o", str(tmp_path), "-q"]) == 0
    g = caffe2x.load(tmp_path / "tiny.caffemodel", tmp_path / "tiny-deploy.prototxt")
    assert g.outputs == ["prob"]


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    return fixtures.write_model("tiny", tmp_path / "model")


def _no_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.stem}.")], "temp file left behind"


@pytest.mark.parametrize("content,pattern", [
    (b"", "is empty"),
    (None, "is truncated"),               # truncated: filled in below
    (b"\xff\xfe random bytes \x00\x01\x02" * 50, "not a Caffe model"),
])
def test_broken_caffemodels_fail_with_one_line_and_no_output(tiny, tmp_path: Path, content, pattern) -> None:
    model, deploy = tiny
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(content if content is not None else model.read_bytes()[: model.stat().st_size // 2])
    out = tmp_path / "out.safetensors"
    assert_clean_failure(run_cli("convert", str(bad), "--prototxt", str(deploy), "-o", str(out)), pattern)
    _no_output(out)


def test_prototxt_that_does_not_match_the_caffemodel_names_layer_and_both_shapes(tiny, tmp_path: Path) -> None:
    model, deploy = tiny
    other = tmp_path / "other.prototxt"
    other.write_text(deploy.read_text().replace("num_output: 8", "num_output: 12", 1))
    out = tmp_path / "out.pt"
    proc = run_cli("convert", str(model), "--prototxt", str(other), "-o", str(out))
    assert_clean_failure(proc, "layer 'conv1' blob 0 (weight) has shape [8, 3, 7, 7] in the caffemodel, the net needs [12, 3, 7, 7]")
    _no_output(out)


def test_layer_missing_from_the_caffemodel_is_named(tiny, tmp_path: Path) -> None:
    model, deploy = tiny
    other = tmp_path / "other.prototxt"
    other.write_text(deploy.read_text().replace('name: "fc10"', 'name: "fc_new"'))
    assert_clean_failure(run_cli("inspect", str(model), "--prototxt", str(other)), "layer 'fc_new' has 0 blob(s)")


def test_unknown_layer_type_names_the_layer_and_type(tmp_path: Path) -> None:
    proto = tmp_path / "net.prototxt"
    proto.write_text('input: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
                     'layer { name: "weird" type: "FancyAttention" bottom: "data" top: "weird" }')
    model = tmp_path / "net.caffemodel"
    model.write_bytes(b"")
    assert_clean_failure(run_cli("inspect", "--prototxt", str(proto), str(model)), "is empty")
    with pytest.raises(caffe2x.UnsupportedLayerError, match="unsupported layer type 'FancyAttention' in layer 'weird'"):
        caffe2x.load(None, proto)


def test_unwritable_output_fails_cleanly(tiny, tmp_path: Path) -> None:
    model, deploy = tiny
    assert_clean_failure(run_cli("convert", str(model), "-p", str(deploy), "-o", str(tmp_path / "nodir" / "x.safetensors")),
                         "does not exist")
    assert_clean_failure(run_cli("convert", str(model), "-p", str(deploy), "-o", str(tmp_path / "x.pt"), "--to", "safetensors"),
                         "the safetensors target writes .safetensors files")


def test_missing_files_and_bad_arguments_are_one_line_errors(tmp_path: Path, tiny) -> None:
    assert_clean_failure(run_cli("convert", str(tmp_path / "nope.caffemodel"), "--to", "torch"), "no such file")
    assert_clean_failure(run_cli("convert", str(tiny[0]), "--input-shape", "1,x"), "input shape")
    assert_clean_failure(run_cli("convert", str(tiny[0]), "-o", str(tmp_path / "out.xyz")), "cannot tell the target format")
    proc = run_cli("convert", str(tiny[0]), "-p", str(tiny[0]), "--to", "torch")
    assert_clean_failure(proc, "is a binary file (a caffemodel?), not a text prototxt")


def test_writer_failure_leaves_no_partial_file(tiny, tmp_path: Path, monkeypatch) -> None:
    import caffe2x.targets.safetensors as st

    def explode(graph, path, options):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"half a file")
        raise caffe2x.Caffe2xError("disk full")

    monkeypatch.setattr(st, "write", explode)
    out = tmp_path / "x.safetensors"
    with pytest.raises(caffe2x.Caffe2xError, match="disk full"):
        caffe2x.save(caffe2x.load(*tiny), out)
    _no_output(out)


def test_output_file_gets_ordinary_permissions(tiny, tmp_path: Path) -> None:
    out = tmp_path / "x.safetensors"
    caffe2x.save(caffe2x.load(*tiny), out)
    assert out.stat().st_mode & 0o044 == 0o044  # readable by group/others under a usual umask


@pytest.mark.parametrize("target,suffix,forbidden", [
    ("safetensors", ".safetensors", ("torch", "tensorflow", "keras", "onnx")),
    ("onnx", ".onnx", ("torch", "tensorflow", "keras")),
    ("torch", ".pt", ("tensorflow", "keras")),
    ("keras", ".h5", ("torch",)),
])
def test_each_target_imports_only_its_own_framework(tiny_files, tmp_path: Path, target, suffix, forbidden) -> None:
    model, deploy = tiny_files
    out = tmp_path / f"tiny{suffix}"
    code = f"""
import sys
from caffe2x.cli import main
rc = main(["convert", {str(model)!r}, "-p", {str(deploy)!r}, "--to", {target!r}, "-o", {str(out)!r}, "-q"])
print(rc, sorted(m for m in {forbidden!r} if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout + proc.stderr
    assert out.exists()


def test_python_dash_m_caffe2x_is_the_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "caffe2x", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("caffe2x ")
