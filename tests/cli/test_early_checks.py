"""Destinations are checked before the work: a refusal never waits for (or pays) a model read or a
synthesis. Each test replaces the expensive step by one that fails the test if it is reached."""
from __future__ import annotations

from pathlib import Path

import pytest

from caffe2x import fixtures
from caffe2x.cli.main import main
from caffe2x.fileio import OutputExistsError


def never(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("the expensive step ran before the check")


def linked_copy(files: tuple[Path, Path], directory: Path) -> Path:
    directory.mkdir()
    for f in files:
        (directory / f.name).symlink_to(f)
    return directory


def test_fixture_into_a_folder_of_another_seed_refuses_before_synthesising(resnet50_files, tmp_path: Path,
                                                                         monkeypatch) -> None:
    folder = linked_copy(resnet50_files, tmp_path / "demo")  # seed 0
    monkeypatch.setattr(fixtures, "synthesize", never)
    with pytest.raises(OutputExistsError, match=r"resnet50.caffemodel already exists .*overwrite=True"):
        fixtures.write_model("resnet50", folder, seed=1)
    assert main(["fixture", "resnet50", "--seed", "1", "-o", str(folder), "-q"]) == 2
    assert all(p.is_symlink() for p in folder.iterdir())


def test_fixture_over_a_different_prototxt_refuses_before_synthesising(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "resnet50-deploy.prototxt").write_text('name: "mine"\n')
    monkeypatch.setattr(fixtures, "synthesize", never)
    with pytest.raises(OutputExistsError, match="resnet50-deploy.prototxt already exists"):
        fixtures.write_model("resnet50", tmp_path, seed=0)
    assert (tmp_path / "resnet50-deploy.prototxt").read_text() == 'name: "mine"\n'


def test_fixture_over_its_own_files_passes_the_early_check(resnet50_files) -> None:
    model, deploy = resnet50_files
    fixtures._refuse_different_files_early("resnet50", fixtures.prototxt_for("resnet50"), 0, model, deploy)
    with pytest.raises(OutputExistsError):  # the same files under another seed do not
        fixtures._refuse_different_files_early("resnet50", fixtures.prototxt_for("resnet50"), 7, model, deploy)


def test_convert_into_a_missing_directory_is_refused_before_the_model_is_read(tiny_files, tmp_path: Path,
                                                                             monkeypatch, capsys) -> None:
    import caffe2x.loading

    monkeypatch.setattr(caffe2x.loading, "read_model", never)
    model, deploy = tiny_files
    out = tmp_path / "missing" / "tiny.onnx"
    assert main(["convert", str(model), "-p", str(deploy), "-o", str(out)]) == 2
    assert f"error: cannot write {out}: directory {out.parent} does not exist" in capsys.readouterr().err
