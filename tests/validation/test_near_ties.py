"""validate on a net that unpools by a MAX pooling's mask (ENet, SegNet): a framework whose windows pick
another cell between near-equal values passes only when the reference, run with the framework's
choices pinned, agrees with it (caffe2x.validation.ties); a flip between values that are not near-equal,
a mask index outside its window, or a wrong layer after the pooling still fails."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import caffe2x
from caffe2x.caffe.reader import graph_from_text
from caffe2x.graph.ir import Graph, Node
from caffe2x.graph.reference import execute
from caffe2x.validation.ties import NEAR_TIE_FACTOR, TieRun, check_ties, masked_poolings
from tests.helpers.tie_pooling import perturbed_forward

#: conv-free before the pooling so the tied input values stay exact ties in the reference
NET = """name: "enet_shaped"
input: "data" input_shape { dim: 1 dim: 2 dim: 8 dim: 12 }
layer { name: "relu0" type: "ReLU" bottom: "data" top: "act" }
layer { name: "pool" type: "Pooling" bottom: "act" top: "pool" top: "pool_mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "mid" type: "Convolution" bottom: "pool" top: "mid" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "up" type: "Upsample" bottom: "mid" bottom: "pool_mask" top: "up" upsample_param { scale: 2 } }
layer { name: "head" type: "Convolution" bottom: "up" top: "head"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
"""


def tied(seed: int = 0) -> np.ndarray:
    """Values in {0, 1, 2}: most 2x2 windows hold an exact tie for their maximum."""
    return np.random.default_rng(seed).choice(np.array([0, 1, 2], np.float32), (1, 2, 8, 12))


@pytest.fixture(scope="module")
def graph() -> Graph:
    return graph_from_text(NET, seed=3)


def last_max_pool(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    """An independent MAX pooling that takes each 2x2 window's *last* maximum (another tie rule)."""
    (x,) = ins
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    arg = 3 - win[..., ::-1].argmax(-1)
    rows = np.arange(h // 2)[:, None] * 2 + arg // 2
    cols = np.arange(w // 2)[None, :] * 2 + arg % 2
    return [win.max(-1), (rows * w + cols).astype(np.float32)]


def framework_like(graph: Graph, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, mask) of a 'framework' whose pooling breaks ties the other way."""
    out = execute(graph, x, override={"pool": last_max_pool})
    return out[graph.value("head")], out[graph.value("pool_mask")]


def test_the_tied_net_has_flips_that_move_the_logits(graph: Graph) -> None:
    x = tied()
    ref = execute(graph, x)
    logits, mask = framework_like(graph, x)
    assert [n.name for n in masked_poolings(graph)] == ["pool"]
    assert np.count_nonzero(mask != ref[graph.value("pool_mask")]) > 10
    head = ref[graph.value("head")]
    assert np.abs(logits - head).max() > 1e-2 * np.abs(head).max()  # the flips alone fail the comparison


def test_exact_tie_flips_pass_with_the_pinned_reference(graph: Graph) -> None:
    x = tied()
    logits, mask = framework_like(graph, x)
    check = check_ties(graph, x, graph.value("head"), [TieRun(0, 1, logits, {graph.value("pool_mask"): mask})],
                       1e-4, 0.0)
    assert check.passed, check.problem()
    (p,) = check.poolings
    assert p.flips > 10 and p.max_gap == 0.0 and p.bound == pytest.approx(NEAR_TIE_FACTOR * 1e-4 * 2)
    assert check.pinned is not None and check.pinned.max_rel <= 1e-6
    assert "near-tie flip" in check.summary() and check.to_dict()["poolings"][0]["flips"] == p.flips


def test_a_flip_to_a_cell_that_is_not_a_near_maximum_fails(graph: Graph) -> None:
    x = tied()
    ref = execute(graph, x)
    mask = ref[graph.value("pool_mask")].copy()
    flat = x.reshape(1, 2, -1)
    # a window whose maximum is 2 and holds a 0: point its mask at the 0
    for c, i, j in np.ndindex(2, 4, 6):
        cells = [(2 * i + a) * 12 + 2 * j + b for a in range(2) for b in range(2)]
        lows = [k for k in cells if flat[0, c, k] == 0]
        if flat[0, c, int(mask[0, c, i, j])] == 2 and lows:
            mask[0, c, i, j] = lows[0]
            break
    logits = execute(graph, x, override={"pool": lambda node, ins, g: [
        np.take_along_axis(ins[0].reshape(1, 2, -1), mask.reshape(1, 2, -1).astype(int), 2).reshape(mask.shape),
        mask]})[graph.value("head")]
    check = check_ties(graph, x, graph.value("head"), [TieRun(0, 1, logits, {graph.value("pool_mask"): mask})],
                       1e-4, 0.0)
    assert check.pinned is not None and check.pinned.passed  # the pinned run reproduces it exactly...
    assert not check.passed and check.poolings[0].not_near == 1  # ...but the flip is no near-tie
    assert "not near-ties" in check.problem() and "2" in check.problem()


def test_a_mask_index_outside_its_window_fails(graph: Graph) -> None:
    x = tied()
    logits, mask = framework_like(graph, x)
    mask = mask.copy()
    mask[0, 0, 0, 0] = 5 * 12 + 7  # a cell of another window
    check = check_ties(graph, x, graph.value("head"), [TieRun(0, 1, logits, {graph.value("pool_mask"): mask})],
                       1e-4, 0.0)
    assert not check.passed and check.poolings[0].bad_index == 1 and "outside their window" in check.problem()


def test_logits_off_after_pinning_fail(graph: Graph) -> None:
    x = tied()
    logits, mask = framework_like(graph, x)
    check = check_ties(graph, x, graph.value("head"),
                       [TieRun(0, 1, logits * np.float32(1.01), {graph.value("pool_mask"): mask})], 1e-4, 0.0)
    assert not check.passed and "still differs" in check.problem()


# --------------------------------------------------------------------------- end to end, torch
def perturbed_torch_pooling(monkeypatch: pytest.MonkeyPatch, eps: float) -> None:
    """torch's masked pooling breaks exact ties the other way (small ``eps``; tests/helpers/tie_pooling.py)."""
    from caffe2x.targets.torch.resample import CaffeMaxPoolWithMask

    monkeypatch.setattr(CaffeMaxPoolWithMask, "forward", perturbed_forward(CaffeMaxPoolWithMask.forward, eps))


def run_validate(graph: Graph, tmp_path: Path) -> caffe2x.validation.validator.Report:
    inputs = tmp_path / "x.npy"
    np.save(inputs, tied())
    return caffe2x.validate(graph, frameworks=["torch"], inputs=inputs, isolate=False)


def test_validate_passes_torch_up_to_exact_tie_flips(graph: Graph, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    perturbed_torch_pooling(monkeypatch, 1e-3)
    report = run_validate(graph, tmp_path)
    f = report.framework("torch")
    assert report.passed and f.status == "PASS", f.reason
    assert not f.comparison.passed  # against the unpinned reference it is off
    from tests.validation.test_validate import check_schema, documented_schema

    assert check_schema(report.to_dict(), documented_schema()) == []
    ties = report.to_dict()["frameworks"][0]["near_ties"]
    assert ties["passed"] and ties["flips"] > 10 and ties["poolings"][0]["max_gap"] == 0
    assert ties["pinned"]["max_rel"] <= 1e-6
    text = report.table()
    assert "agrees up to near-tie flips" in text
    assert text.splitlines()[-1] == ("PASS: torch agrees within rtol 1e-4 with identical top-5 on 1 input(s) with the "
                                     "reference run on its own cell choices of masked MAX pooling, every differing "
                                     "choice a near-tie")
    assert "near-tie flip(s) of masked MAX pooling" in report.html()


def test_validate_fails_torch_on_flips_between_values_not_near_equal(graph: Graph, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    perturbed_torch_pooling(monkeypatch, 0.6)  # a 1 in the last cell beats a 2 in the first
    report = run_validate(graph, tmp_path)
    f = report.framework("torch")
    assert not report.passed and f.status == "FAIL" and "are not near-ties" in f.reason, f.reason
    assert report.to_dict()["frameworks"][0]["near_ties"]["poolings"][0]["not_near_ties"] > 0


def test_validate_fails_torch_with_a_wrong_layer_after_the_pooling(graph: Graph, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Near-tie flips and the head convolution's weights off by 1% in the written file: pinning the
    masks explains the flips, not the head."""
    pytest.importorskip("torch")
    import caffe2x.convert

    perturbed_torch_pooling(monkeypatch, 1e-3)
    real_write = caffe2x.convert.write

    def write_wrong(g: Graph, path: Any, to: str | None = None, **kw: Any) -> list[str]:
        tensors = dict(g.tensors)
        key = g.node("head").params["weight"]
        tensors[key] = tensors[key] * np.float32(1.01)
        return real_write(g.copy(tensors=tensors), path, to, **kw)

    monkeypatch.setattr(caffe2x.convert, "write", write_wrong)
    report = run_validate(graph, tmp_path)
    f = report.framework("torch")
    assert not report.passed and f.status == "FAIL", f.reason
    assert "mask choices pinned the reference still differs" in f.reason
    assert report.to_dict()["frameworks"][0]["near_ties"]["poolings"][0]["not_near_ties"] == 0


def test_a_masked_net_that_agrees_is_not_re_run(graph: Graph, tmp_path: Path) -> None:
    """Torch's own tie rule is the reference's: it passes outright, with no re-run and no near-tie check."""
    pytest.importorskip("torch")
    messages: list[str] = []
    inputs = tmp_path / "x.npy"
    np.save(inputs, tied())
    report = caffe2x.validate(graph, frameworks=["torch"], inputs=inputs, isolate=False, progress=messages.append)
    f = report.framework("torch")
    assert report.passed and f.comparison.passed and f.near_ties is None
    assert not any("re-running" in m or "pinned" in m for m in messages)


#: run by every Python process with ``site`` on its PYTHONPATH: the same tie rule in validate's child
SITECUSTOMIZE = """import os
if os.environ.get("CAFFE2X_TEST_TIE_EPS"):
    from tests.helpers.tie_pooling import install
    install(float(os.environ["CAFFE2X_TEST_TIE_EPS"]))
"""


def test_torch_in_its_own_process_re_runs_with_the_masks_and_passes_up_to_exact_tie_flips(
        graph: Graph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The path of a big model: torch's child process (isolate=True) re-runs the failing input with the
    masks exposed and sends them back, and the pinned reference in this process explains the flips. The
    child's pooling breaks ties the other way through a ``sitecustomize`` on its PYTHONPATH."""
    pytest.importorskip("torch")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), str(root), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("CAFFE2X_TEST_TIE_EPS", "1e-3")
    inputs = tmp_path / "x.npy"
    np.save(inputs, tied())
    said: list[str] = []
    report = caffe2x.validate(graph, frameworks=["torch"], inputs=inputs, isolate=True, progress=said.append)
    f = report.framework("torch")
    assert any(line.startswith("torch: PASS") and "own process" in line for line in said), said
    assert report.passed and f.status == "PASS", f.reason
    assert not f.comparison.passed  # the child's own logits are off against the unpinned reference
    ties = report.to_dict()["frameworks"][0]["near_ties"]
    assert ties["passed"] and ties["flips"] > 10 and ties["poolings"][0]["max_gap"] == 0
    assert ties["pinned"]["max_rel"] <= 1e-6
