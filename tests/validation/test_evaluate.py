"""``caffe2x.evaluate`` on image sets whose accuracy is known exactly (tests/evaluate_sets.py), in every
framework, with the local engine: the figures, the report's schema, undecodable images, streaming output."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import caffe2x
from caffe2x.validation.evaluate import EvaluationReport
from tests.helpers.evaluate_sets import colour_set, figures

@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return colour_set(tmp_path_factory.mktemp("colours"), count=20)


def run(colours, **kwargs) -> EvaluationReport:  # type: ignore[no-untyped-def]
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("batch_size", 8)
    return caffe2x.evaluate(colours.model, colours.prototxt, images=colours.root, list_file=colours.listing,
                            **kwargs)


def test_accuracy_is_the_known_ratio_in_every_framework(colours) -> None:  # type: ignore[no-untyped-def]
    report = run(colours, frameworks=["numpy", "torch", "keras", "onnx"])
    data = report.data
    assert data["schema"] == "caffe2x.evaluate/1"
    assert data["passed"] and report.exit_code == 0
    assert data["images"] == 20 and data["labelled"]
    assert [f["name"] for f in data["frameworks"]] == ["numpy", "torch", "keras", "onnx"]
    for f in data["frameworks"]:
        assert f["counts"] == {"top1_correct": colours.top1, "top5_correct": colours.top5,
                               "top1_agree": 20, "top5_agree": 20}, f["name"]
        assert f["top1_accuracy"] == colours.top1 / 20 and f["top5_accuracy"] == colours.top5 / 20
        assert f["top1_agreement"] == 1.0 and f["top5_agreement"] == 1.0
        assert f["images"] == 20
        assert f["max_rel"] < 1e-5 and f["within_tolerance"]
    assert data["frameworks"][0]["max_abs"] == 0.0  # the reference against itself
    assert data["disagreements"] == [] and data["unreadable"] == []


def test_without_labels_accuracy_is_null_and_agreement_counted(colours, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report = caffe2x.evaluate(colours.model, colours.prototxt, images=colours.root, frameworks=["numpy", "torch"],
                              workers=1)
    data = report.data
    assert data["images"] == 20 and not data["labelled"] and report.passed
    for f in data["frameworks"]:
        assert f["top1_accuracy"] is None and f["top5_accuracy"] is None
        assert f["top1_agreement"] == 1.0


def test_folder_is_scanned_recursively_in_sorted_order(colours, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "rows.csv"
    caffe2x.evaluate(colours.model, colours.prototxt, images=colours.root, frameworks=["numpy"], workers=1,
                     per_image=out)
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["image"] for r in rows] == sorted(colours.names)


def test_a_tolerance_below_the_error_fails_with_exit_1(colours) -> None:  # type: ignore[no-untyped-def]
    report = run(colours, frameworks=["numpy", "torch"], rtol=1e-12)
    assert not report.passed and report.exit_code == 1
    assert any(f.startswith("torch: max rel") for f in report.data["failures"])
    assert report.data["frameworks"][0]["within_tolerance"]


def test_batch_size_and_limit_do_not_change_the_figures(colours) -> None:  # type: ignore[no-untyped-def]
    a = run(colours, frameworks=["numpy", "onnx"], batch_size=1, limit=10)
    b = run(colours, frameworks=["numpy", "onnx"], batch_size=7, limit=10)
    assert a.data["images"] == b.data["images"] == 10
    for fa, fb in zip(a.data["frameworks"], b.data["frameworks"]):
        assert fa["counts"] == fb["counts"]


def test_undecodable_image_is_listed_left_out_and_exit_2(colours, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    root = tmp_path / "images"
    shutil.copytree(colours.root, root)
    (root / colours.names[4]).write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    report = caffe2x.evaluate(colours.model, colours.prototxt, images=root, list_file=colours.listing,
                              frameworks=["numpy", "torch"], workers=1, json_path=tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data == report.data
    assert report.exit_code == 2 and not data["passed"]
    assert data["images"] == 19 and data["unreadable_total"] == 1
    (bad,) = data["unreadable"]
    assert bad["image"] == colours.names[4] and bad["line"] == 5 and "cannot decode" in bad["reason"]
    # rank 0 at image 4: the figures are the known ones without it
    for f in data["frameworks"]:
        assert f["counts"]["top1_correct"] == colours.top1 - 1 and f["images"] == 19


def test_per_image_csv_and_html_are_written(colours, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report = run(colours, frameworks=["numpy", "torch"], per_image=tmp_path / "p.csv", html_path=tmp_path / "r.html")
    rows = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8")))
    assert len(rows) == 20
    assert [int(r["label"]) for r in rows] == colours.labels
    assert sum(int(r["torch_top1"]) == int(r["label"]) for r in rows) == colours.top1
    page = (tmp_path / "r.html").read_text()
    assert "<svg" in page and "Per-image max relative logit error" in page and report.passed


def test_top1_disagreement_is_reported(colours, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A framework whose logits are changed on one image: that image is the one disagreement."""
    from caffe2x.validation.evaluate import worker

    real = worker.Evaluator.logits

    def skewed(self, name, x):  # type: ignore[no-untyped-def]
        out = real(self, name, x)
        if name == "torch":
            out = out.copy()
            out[0] = out[0][::-1]  # first image of every batch: classes reversed
        return out

    monkeypatch.setattr(worker.Evaluator, "logits", skewed)
    report = run(colours, frameworks=["numpy", "torch"], batch_size=10)
    data = report.data
    assert data["disagreements_total"] == 2
    assert [d["index"] for d in data["disagreements"]] == [0, 10]
    torch_ = data["frameworks"][1]
    assert torch_["counts"]["top1_agree"] == 18 and torch_["top1_agreement"] == 18 / 20
    assert not torch_["within_tolerance"] and report.exit_code == 1
