"""A validation's first framework children start before the reference runs: each imports its framework
first and takes its job only when the validating process gives it; one never given a job is stopped."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.errors import Caffe2xError
from caffe2x.validation.isolated import abandon, run_isolated, start_early, write_shared
from tests.helpers.child_process import processes
from tests.helpers.early_jobs import ImportsJob

MODULE = "tests.helpers.marks_its_import"


def _children_of_this_process() -> list[int]:
    """Validation children (the isolated bootstrap) whose parent is this process."""
    return processes(b"child_main", parent=os.getpid())


def test_an_early_child_imports_before_its_job_exists_then_runs_the_job_given(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    mark = tmp_path / "imported"
    monkeypatch.setenv("CAFFE2X_TEST_IMPORT_MARK", str(mark))
    shared = tmp_path / "shared.pkl"
    started = start_early([MODULE], shared, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not mark.exists():  # imported while there is neither a shared file nor a job
            assert started.proc.poll() is None and time.monotonic() < deadline, "the child never imported"
            time.sleep(0.02)
        assert not shared.exists() and not started.job_file.exists()
        graph = fixtures.graph("tiny")
        write_shared(shared, graph, np.zeros((2, 3, 8, 8), np.float32), np.zeros((2, 10), np.float32))
        outcome = run_isolated(ImportsJob((MODULE, "caffe2x.targets.keras")), shared, tmp_path,
                               lambda _m: None, lambda _i: None, started=started)
    finally:
        abandon(started)
    # what the import built is frozen (left out of every later collection), and the collector runs again
    assert outcome == {"nodes": len(graph.nodes), "imported": [MODULE], "batch": [2, 3, 8, 8], "frozen": True,
                       "collecting": True}
    assert started.proc.returncode == 0


def test_an_early_child_that_cannot_import_still_runs_its_job(tmp_path: Path) -> None:
    """The import's failure is the job's to meet (it imports the framework itself and reports why not)."""
    shared = tmp_path / "shared.pkl"
    started = start_early(["caffe2x_no_such_framework_module"], shared, tmp_path)
    write_shared(shared, fixtures.graph("tiny"), np.zeros((1, 3, 8, 8), np.float32), np.zeros((1, 10), np.float32))
    outcome = run_isolated(ImportsJob(("caffe2x_no_such_framework_module",)), shared, tmp_path,
                           lambda _m: None, lambda _i: None, started=started)
    assert outcome["imported"] == [] and outcome["nodes"] > 0 and outcome["collecting"]


def test_an_abandoned_early_child_is_stopped_while_it_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAFFE2X_TEST_IMPORT_MARK", str(tmp_path / "imported"))
    started = start_early([MODULE], tmp_path / "shared.pkl", tmp_path)
    abandon(started)
    assert started.proc.returncode is not None
    assert started.proc.pid not in _children_of_this_process()
    assert list(tmp_path.glob("result-*")) == []


def test_a_validation_that_fails_after_starting_children_leaves_none_running(tiny_files) -> None:  # type: ignore[no-untyped-def]
    """The labels are found wrong only after the reference ran, with the first children already importing."""
    if not caffe2x.targets.get("onnx").available():
        pytest.skip("needs onnx")
    with pytest.raises(Caffe2xError, match="labels name 3 classes"):
        caffe2x.validate(*tiny_files, frameworks=["onnx"], isolate=True, labels=["a", "b", "c"])
    assert _children_of_this_process() == []
