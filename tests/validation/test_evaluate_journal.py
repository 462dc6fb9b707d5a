"""The resume journal: atomic batch files tied to the run by a hash; journals that are truncated, edited,
or from another model, list or flags are refused naming what is wrong, and a resumed run ends with the
uninterrupted run's figures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import caffe2x
from caffe2x.validation.evaluate import worker
from caffe2x.validation.evaluate.journal import Journal, JournalError
from tests.helpers.evaluate_sets import colour_model, colour_set, figures

PARTS = {"model": "m1", "prototxt": "p1", "images": "i1", "flags": {"batch_size": 4}}


def _journal(tmp_path: Path) -> Path:
    book, done = Journal.open(tmp_path / "j", PARTS, 8, 2, resume=False, force=False)
    assert done == []
    book.record(0, {"records": [], "unreadable": [{"i": 0, "reason": "x"}]})
    return tmp_path / "j"


def test_a_recorded_batch_is_found_on_resume(tmp_path: Path) -> None:
    folder = _journal(tmp_path)
    book, done = Journal.open(folder, PARTS, 8, 2, resume=True, force=False)
    assert done == [0] and book.read(0)["unreadable"][0]["reason"] == "x"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_journal_of_another_model_names_what_differs(tmp_path: Path) -> None:
    folder = _journal(tmp_path)
    with pytest.raises(JournalError, match=r"another evaluation \(images, model differ\)"):
        Journal.open(folder, {**PARTS, "model": "m2", "images": "i2"}, 8, 2, resume=True, force=False)
    with pytest.raises(JournalError, match=r"\(flags differs\)"):
        Journal.open(folder, {**PARTS, "flags": {"batch_size": 5}}, 8, 2, resume=True, force=False)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:-9]), "truncated or not JSON"),
    (lambda p: p.write_text(p.read_text().replace('"reason":"x"', '"reason":"y"')), "was edited"),
    (lambda p: p.rename(p.with_name("batch-0000001.json")), "holds batch 0"),
])
def test_a_damaged_batch_file_is_refused_naming_it(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    folder = _journal(tmp_path)
    damage(folder / "batch-0000000.json")
    with pytest.raises(JournalError, match=message) as info:
        Journal.open(folder, PARTS, 8, 2, resume=True, force=False)
    assert "batch-000000" in str(info.value)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:20]), "truncated or not JSON"),
    (lambda p: p.write_text(p.read_text().replace('"m1"', '"m9"')), "header was edited"),
    (lambda p: p.unlink(), "no journal.json"),
])
def test_a_damaged_header_is_refused(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    folder = _journal(tmp_path)
    damage(folder / "journal.json")
    with pytest.raises(JournalError, match=message):
        Journal.open(folder, PARTS, 8, 2, resume=True, force=False)


def test_force_removes_only_the_journals_own_files(tmp_path: Path) -> None:
    folder = _journal(tmp_path)
    (folder / "mine.txt").write_text("keep me")
    Journal.open(folder, PARTS, 8, 2, resume=False, force=True)[0].remove()
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, batches: int) -> None:
    real = worker.Evaluator.run_batch
    calls = []

    def run_batch(self, items, data=None):  # type: ignore[no-untyped-def]
        if len(calls) == batches:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, items, data)

    monkeypatch.setattr(worker.Evaluator, "run_batch", run_batch)


def test_resume_after_an_interrupt_gives_the_same_figures_and_refuses_another_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    colours = colour_set(tmp_path / "set", count=12)
    kwargs = dict(images=colours.root, list_file=colours.listing, frameworks=["numpy"], workers=1, batch_size=2)
    whole = caffe2x.evaluate(colours.model, colours.prototxt, **kwargs)
    journal = tmp_path / "journal"
    with monkeypatch.context() as m:
        _interrupt_after(m, 3)
        with pytest.raises(KeyboardInterrupt):
            caffe2x.evaluate(colours.model, colours.prototxt, journal=journal, **kwargs)
    assert len(list(journal.glob("batch-*.json"))) == 3
    other_model, _, _, _ = colour_model(tmp_path / "other", seed=4)
    with pytest.raises(JournalError, match=r"model differs"):
        caffe2x.evaluate(other_model, colours.prototxt, journal=journal, resume=True, **kwargs)
    with pytest.raises(JournalError, match=r"flags differs"):
        caffe2x.evaluate(colours.model, colours.prototxt, journal=journal, resume=True, **{**kwargs, "batch_size": 3})
    shorter = tmp_path / "short.txt"
    shorter.write_text("\n".join(colours.listing.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(JournalError, match=r"images differs"):
        caffe2x.evaluate(colours.model, colours.prototxt, journal=journal, resume=True,
                         **{**kwargs, "list_file": shorter})
    messages: list[str] = []
    resumed = caffe2x.evaluate(colours.model, colours.prototxt, journal=journal, resume=True, progress=messages.append,
                               **kwargs)
    assert "resuming: 6 of 12 images already done (3 batches), 6 to go" in messages
    assert resumed.data["resumed"] == 6
    assert figures(resumed) == figures(whole)
    assert not journal.exists()


def test_a_batch_file_holding_other_images_is_refused_when_counted(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch file rewritten with a valid digest but another batch's records is still caught."""
    import hashlib

    colours = colour_set(tmp_path / "set", count=6)
    kwargs = dict(images=colours.root, list_file=colours.listing, frameworks=["numpy"], workers=1, batch_size=2)
    journal = tmp_path / "journal"
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            caffe2x.evaluate(colours.model, colours.prototxt, journal=journal, **kwargs)
    first = json.loads((journal / "batch-0000000.json").read_text())
    second = json.loads((journal / "batch-0000001.json").read_text())
    first["payload"] = second["payload"]
    body = {k: first[k] for k in ("hash", "batch", "payload")}
    first["digest"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    (journal / "batch-0000000.json").write_text(json.dumps(first))
    with pytest.raises(JournalError, match="batch 0 of the journal .* holds image 2"):
        caffe2x.evaluate(colours.model, colours.prototxt, journal=journal, resume=True, **kwargs)
