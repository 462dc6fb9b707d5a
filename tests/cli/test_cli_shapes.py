"""``caffe2x inspect`` shows which input dims are free; ``validate --input-shape`` runs a net at any
size it takes; a size it cannot take is one line naming the layer and the sizes the net takes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from caffe2x import fixtures
from caffe2x.cli.main import main
from tests.helpers.fcn_net import write_fcn


@pytest.fixture(scope="module")
def fcn_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_fcn(tmp_path_factory.mktemp("fcn"))


def test_inspect_shows_the_free_input_dims_as_text_and_json(fcn_files, capsys) -> None:
    model, deploy = fcn_files
    assert main(["inspect", str(model), "--prototxt", str(deploy)]) == 0
    assert "input sizes: data: N free, C fixed 3, H free, W free" in capsys.readouterr().out
    assert main(["inspect", str(model), "--prototxt", str(deploy), "--json"]) == 0
    dims = json.loads(capsys.readouterr().out)["input_dims"]["data"]
    assert [(d["name"], d["free"]) for d in dims] == [("N", True), ("C", False), ("H", True), ("W", True)]
    assert dims[1]["accepts"] == [[3, 3]] and dims[2]["accepts"] == [[dims[2]["minimum"], None]]


def test_inspect_shows_the_sizes_a_classifier_takes(tmp_path: Path, capsys) -> None:
    model, deploy = fixtures.write_model("googlenet_style_names", tmp_path)
    assert main(["inspect", str(model), "--prototxt", str(deploy)]) == 0
    assert "input sizes: data: N free, C fixed 3, H 31..34, W 31..34" in capsys.readouterr().out


def test_a_size_the_net_cannot_take_is_one_line_naming_the_layer_and_the_sizes(tmp_path: Path, capsys) -> None:
    model, deploy = fixtures.write_model("googlenet_style_names", tmp_path)
    rc = main(["validate", str(model), "--prototxt", str(deploy), "--input-shape", "1,3,20,20",
               "--frameworks", "numpy", "--quiet"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(err) == 1
    assert "layer 'pool5/7x7_s1'" in err[0] and err[0].endswith("the net takes data: N free, C fixed 3, H 31..34, W 31..34")


@pytest.mark.parametrize("shape", ["1,3,33,29", "2,3,9,7"])
def test_validate_runs_the_fcn_at_another_size(fcn_files, tmp_path: Path, shape: str, capsys) -> None:
    model, deploy = fcn_files
    report = tmp_path / "r.json"
    rc = main(["validate", str(model), "--prototxt", str(deploy), "--input-shape", shape, "--frameworks",
               "numpy,onnx", "--json", str(report), "--keep-artifacts", str(tmp_path / "art"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["input"]["shape"][1:] == [3, *map(int, shape.split(",")[2:])]
    assert data["passed"] and [f["status"] for f in data["frameworks"]] == ["PASS", "PASS"]
    assert data["frameworks"][1]["max_rel"] <= 1e-5
