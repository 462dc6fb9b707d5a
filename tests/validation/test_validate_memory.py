"""Bounded memory in ``caffe2x validate``: photos run one at a time, per-layer comparisons streamed
against the reference's values spilled to disk, big models validated with one child process per
framework (caffe2x/validation/framework_run.py, caffe2x/validation/isolated.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.graph.numeric import within
from caffe2x.validation.framework_run import LayerStat, RefSpill, batches_for, layer_curve


def _whole_batch_curve(graph: caffe2x.Graph, outs: dict[str, np.ndarray], refs: dict[str, np.ndarray],
                       rtol: float, atol: float) -> tuple[list[float | None], str | None, str | None]:
    """The per-layer comparison as the validator made it before streaming: every value of the whole batch
    at once through comparison.within."""
    curve: list[float | None] = []
    first, worst, worst_err = None, None, -1.0
    for node in graph.nodes:
        errs, bad = [], False
        for v in node.outputs:
            _, rel, ok = within(outs[v], refs[v], rtol, atol)
            errs.append(rel)
            bad = bad or not ok
        err = float("nan") if any(not np.isfinite(e) for e in errs) else max(errs)
        curve.append(err)
        if bad and first is None:
            first = node.name
        if np.isfinite(err) and err > worst_err:
            worst, worst_err = node.name, err
    return curve, first, worst


def test_streamed_per_layer_comparison_equals_the_whole_batch_one_with_a_wrong_layer(tmp_path: Path) -> None:
    """One layer's values made wrong on one photo only (the third), another layer NaN on one photo: the
    slice-by-slice comparison (reference spilled to disk, read back mapped) names the same first divergent
    and worst layer and gives the same curve, to the bit, as comparing the whole batch at once."""
    graph = fixtures.graph("tiny")
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    refs = caffe2x.run(graph, x, outputs=[v for n in graph.nodes for v in n.outputs])
    noise = np.random.default_rng(1)
    outs = {v: (a + 1e-7 * np.abs(a).max() * noise.standard_normal(a.shape)).astype(np.float32)
            for v, a in refs.items()}
    wrong = graph.nodes[len(graph.nodes) // 2]
    wv = wrong.outputs[0]
    outs[wv][2] += 0.5 * np.abs(refs[wv]).max()
    nan_node = graph.nodes[-3]
    outs[nan_node.outputs[0]][1].flat[0] = np.nan

    expected = _whole_batch_curve(graph, outs, refs, 1e-4, 0.0)
    batches = batches_for(4, True, graph)
    assert batches == [(0, 1), (1, 2), (2, 3), (3, 4)]
    spill = RefSpill(tmp_path, list(refs))
    for i, (a, b) in enumerate(batches):
        spill.save(i, {v: r[a:b] for v, r in refs.items()})
    stats = {v: LayerStat() for v in refs}
    for i, (a, b) in enumerate(batches):
        mapped = spill.load(i)
        assert isinstance(mapped[wv], np.memmap)
        for v, stat in stats.items():
            stat.add(outs[v][a:b], mapped[v])
    got = layer_curve(graph, stats, 1e-4, 0.0)
    assert got[1] == expected[1] == wrong.name
    assert got[2] == expected[2]
    np.testing.assert_array_equal(np.array(got[0], dtype=float), np.array(expected[0], dtype=float))
    assert np.isnan(got[0][len(graph.nodes) - 3])


def test_a_shape_mismatch_on_one_slice_marks_the_layer_as_divergent() -> None:
    stat = LayerStat()
    stat.add(np.zeros((1, 3)), np.zeros((1, 3)))
    stat.add(np.zeros((1, 4)), np.zeros((1, 3)))
    rel, ok = stat.relative(1e-4, 0.0)
    assert np.isnan(rel) and not ok


def test_photos_run_one_at_a_time_arrays_as_given() -> None:
    graph = fixtures.graph("tiny")
    assert batches_for(4, True, graph) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert batches_for(4, False, graph) == [(0, 4)]
    assert batches_for(1, True, graph) == [(0, 1)]


@pytest.fixture(scope="module")
def in_and_out_of_process(tiny_files: tuple[Path, Path]) -> tuple[caffe2x.validation.validator.Report, caffe2x.validation.validator.Report]:
    frameworks = [n for n in ("numpy", "onnx") if caffe2x.targets.get(n).available()]
    kw = dict(frameworks=frameworks, per_layer=True)
    return (caffe2x.validate(*tiny_files, isolate=False, **kw),  # type: ignore[arg-type]
            caffe2x.validate(*tiny_files, isolate=True, **kw))  # type: ignore[arg-type]


def test_a_framework_in_a_child_process_reports_what_it_reports_in_process(in_and_out_of_process) -> None:  # type: ignore[no-untyped-def]
    here, child = in_and_out_of_process
    assert here.passed and child.passed
    assert [f.name for f in here.frameworks] == [f.name for f in child.frameworks]
    for a, b in zip(here.frameworks, child.frameworks):
        assert (a.status, a.artifact, a.first_divergent, a.worst_layer) == (b.status, b.artifact, b.first_divergent,
                                                                            b.worst_layer), a.name
        assert a.per_layer is not None and b.per_layer is not None
        np.testing.assert_allclose(np.array(a.per_layer, dtype=float), np.array(b.per_layer, dtype=float),
                                   rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=1e-6)
    assert here.to_dict().keys() == child.to_dict().keys()


def test_an_isolated_validation_never_imports_the_framework_in_the_validating_process(tiny_files) -> None:  # type: ignore[no-untyped-def]
    if not caffe2x.targets.get("onnx").available():
        pytest.skip("onnx not installed")
    code = ("import sys, caffe2x; r = caffe2x.validate(sys.argv[1], sys.argv[2], frameworks=['onnx'], isolate=True); "
            "assert r.passed, r.failures; "
            "print(sorted(m for m in ('onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *map(str, tiny_files)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


AGAINST_ISOLATED = """
import sys, caffe2x
import onnx
model, deploy, good, bad = sys.argv[1:5]
r = caffe2x.validate(model, deploy, frameworks=['numpy'], against=[good, bad], isolate=True)
print([a.status for a in r.artifacts], r.artifacts[1].messages[:1])
print(sorted(m for m in ('onnxruntime',) if m in sys.modules))
"""


def test_artifacts_are_checked_in_child_processes_and_a_tampered_one_is_still_named(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--against files go through the same isolation as the frameworks: the validating process never
    runs onnxruntime (onnx itself is imported above only to tamper the file), and the child's check
    names the changed tensor as it does in process."""
    if not caffe2x.targets.get("onnx").available():
        pytest.skip("onnx not installed")
    import onnx
    from onnx import numpy_helper

    graph = caffe2x.load(*tiny_files)
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    caffe2x.save(graph, good)
    model = onnx.load(str(good))
    init = next(t for t in model.graph.initializer if t.name == "fc10.weight")
    arr = numpy_helper.to_array(init).copy()
    arr.flat[3] += 0.5
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save_model(model, str(bad))
    out = subprocess.run([sys.executable, "-c", AGAINST_ISOLATED, *map(str, tiny_files), str(good), str(bad)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    statuses, onnxruntime = out.stdout.strip().splitlines()
    assert statuses.startswith("['PASS', 'FAIL']") and "fc10.weight" in statuses, statuses
    assert onnxruntime == "[]"


def test_onnx_runs_the_photos_one_at_a_time_with_one_session(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if not caffe2x.targets.get("onnx").available():
        pytest.skip("onnx not installed")
    graph = caffe2x.load(*tiny_files)
    path = tmp_path / "tiny.onnx"
    caffe2x.save(graph, path)
    runner = caffe2x.targets.get("onnx").load(path, graph)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    value = graph.logits()[0]
    first = runner.run(x[:1], [value])[value]
    session = runner._session
    second = runner.run(x[1:], [value])[value]
    assert runner._session is session
    ref = caffe2x.run(graph, x, outputs=[value])[value]
    np.testing.assert_allclose(np.concatenate([first, second]), ref, rtol=0, atol=1e-5 * np.abs(ref).max())


SIGTERM_DURING_ISOLATED_RUN = """
import signal, sys, time
from pathlib import Path
import caffe2x
from caffe2x.fileio import Terminated

def terminated(signum, frame):
    raise Terminated()

signal.signal(signal.SIGTERM, terminated)

def say(message):
    if message.startswith("onnx: running"):  # a message from the child process
        Path({ready!r}).touch()
        time.sleep(60)

try:
    caffe2x.validate({model!r}, {deploy!r}, frameworks=["onnx"], isolate=True, per_layer=True, progress=say)
except Terminated:
    sys.exit(143)
sys.exit(3)
"""


def _processes_naming(path: Path) -> list[int]:
    from tests.helpers.child_process import processes

    return processes(str(path).encode())


def test_sigterm_during_an_isolated_run_stops_the_child_and_leaves_no_files(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The validating process terminated while a framework's child process reports: the child is stopped
    (none is left running with the run's files on its command line) and every temporary directory goes
    (the converted files, the reference's spilled values, the child's files)."""
    import signal

    from tests.helpers.child_process import start_until_ready

    if not caffe2x.targets.get("onnx").available():
        pytest.skip("onnx not installed")
    tmp, ready = tmp_path / "tmp", tmp_path / "ready"
    tmp.mkdir()
    script = SIGTERM_DURING_ISOLATED_RUN.format(model=str(tiny_files[0]), deploy=str(tiny_files[1]), ready=str(ready))
    proc = start_until_ready(script, ready, tmp)
    assert any(p.name.startswith("caffe2x-validate-run-") for p in tmp.iterdir())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert [p.name for p in tmp.iterdir() if p.name.startswith("caffe2x-")] == []  # (onnxruntime leaves a .ses)
    assert _processes_naming(tmp) == []


def test_a_child_process_that_dies_is_that_frameworks_failure_not_a_crash(tmp_path: Path) -> None:
    """The child cannot read its inputs (a truncated file) and dies with a traceback: the parent gets an
    outcome naming how it ended, and runs on."""
    from caffe2x.validation.framework_run import FrameworkJob
    from caffe2x.validation.isolated import run_isolated

    shared = tmp_path / "shared.pkl"
    shared.write_bytes(b"\x80\x05truncated")
    job = FrameworkJob("onnx", tmp_path / "m.onnx", "onnx", "prob", [], [(0, 1)])
    said: list[str] = []
    outcome = run_isolated(job, shared, tmp_path, said.append, lambda i: None)
    assert outcome.reason == "its child process exited with code 1 before reporting"
    assert not outcome.written and outcome.logits is None and said == []


SIGTERM_SIDE_BY_SIDE = """
import os, signal, sys, threading
from pathlib import Path
import caffe2x
from caffe2x.fileio import Terminated

stopping = threading.Event()

def terminated(signum, frame):
    stopping.set()
    raise Terminated()

signal.signal(signal.SIGTERM, terminated)
running = []

def say(message):
    if message.endswith(": running") or ": running," in message or ": running " in message:
        running.append(message.split(":")[0])
        if len(running) == 2:  # only when both children run at once: one at a time would wait here for ever
            Path({ready!r}).touch()
        if not stopping.wait(30):  # the other child never ran beside this one
            os._exit(4)

try:
    caffe2x.validate({model!r}, {deploy!r}, frameworks=["torch", "onnx"], isolate=True, progress=say)
except Terminated:
    sys.exit(143)
sys.exit(3)
"""


def test_isolated_frameworks_run_side_by_side_and_sigterm_stops_both_children(tiny_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """torch's and onnx's children run at the same time (the script's progress callback holds each one's
    'running' message until the other's has come), and a SIGTERM of the validating process, which reaches
    its main thread only, stops both and leaves no temporary directory."""
    import signal

    from tests.helpers.child_process import start_until_ready

    if not all(caffe2x.targets.get(n).available() for n in ("torch", "onnx")) or (os.cpu_count() or 1) < 2:
        pytest.skip("needs torch, onnx and two cores")
    tmp, ready = tmp_path / "tmp", tmp_path / "ready"
    tmp.mkdir()
    script = SIGTERM_SIDE_BY_SIDE.format(model=str(tiny_files[0]), deploy=str(tiny_files[1]), ready=str(ready))
    proc = start_until_ready(script, ready, tmp)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert [p.name for p in tmp.iterdir() if p.name.startswith("caffe2x-")] == []
    assert _processes_naming(tmp) == []


def test_side_by_side_groups_keep_a_run_alone_target_on_its_own_and_results_in_the_order_asked(tiny_files) -> None:  # type: ignore[no-untyped-def]
    """The schedule: in-process targets first, each ``runs_alone`` one (Keras) by itself, the others two at a
    time on two cores; the report still lists the frameworks in the order they were asked for."""
    from caffe2x.targets import get
    from caffe2x.validation.validator import _Runs

    graph = caffe2x.load(*tiny_files)
    runs = _Runs(graph, tiny_files[0].parent, isolate=True)
    runs.inputs(np.zeros((1, 3, 8, 8), np.float32), np.zeros((1, 10), np.float32))
    runs._share = lambda: True  # type: ignore[method-assign]
    order = [get(n) for n in ("onnx", "keras", "numpy", "torch")]
    width = min(os.cpu_count() or 1, 2)
    groups = [[t.name for t in g] for g in runs.groups(order)]
    assert groups == [["numpy"], ["keras"], ["onnx", "torch"] if width == 2 else ["onnx"]] + ([] if width == 2 else [["torch"]])
    if not all(get(n).available() for n in ("torch", "onnx")):
        return
    report = caffe2x.validate(*tiny_files, frameworks=["onnx", "numpy", "torch"], isolate=True)
    assert report.passed, report.failures
    assert [f.name for f in report.frameworks] == ["onnx", "numpy", "torch"]


CHILD_PEAK = """
import re, sys
import numpy as np
import caffe2x

ballast = np.ones(600 * 1000 * 1000 // 8)  # the validating process grows to ~650 MB before the child starts
said = []
r = caffe2x.validate(sys.argv[1], sys.argv[2], frameworks=['onnx'], isolate=True, progress=said.append)
assert r.passed, r.failures
line, = [m for m in said if 'own process' in m]
print(re.search(r'peak RSS ([0-9]+) MB', line).group(1))
"""


def test_a_child_process_reports_its_own_peak_rss_not_the_validating_processs(tiny_files) -> None:  # type: ignore[no-untyped-def]
    """The child's peak is its VmHWM: ru_maxrss, which Linux carries over from the parent at fork across
    exec, reported the validating process's ~650 MB for a child running the tiny net in ~150 MB."""
    if not caffe2x.targets.get("onnx").available():
        pytest.skip("onnx not installed")
    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc: the child falls back to ru_maxrss")
    out = subprocess.run([sys.executable, "-c", CHILD_PEAK, *map(str, tiny_files)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert 0 < int(out.stdout.strip()) < 450


LOST_TERMINATION = """
import sys, weakref
from caffe2x.validation import isolated
from caffe2x.fileio import Terminated

sys.unraisablehook = isolated._unraisable

class Thing:
    pass

def callback(_ref):
    raise Terminated()  # what the SIGTERM handler raises, landing in a weakref callback

thing = Thing()
ref = weakref.ref(thing, callback)
del thing
print("carried on")
"""


def test_a_termination_lost_in_a_callback_stops_the_child_quietly() -> None:
    """Python prints an exception raised inside a weakref callback and carries on; the child's hook stops
    it instead (a flaky SIGTERM test showed the traceback of exactly this)."""
    out = subprocess.run([sys.executable, "-c", LOST_TERMINATION], capture_output=True, text=True, timeout=60)
    assert out.returncode == 143 and out.stdout == "" and out.stderr == "", out
