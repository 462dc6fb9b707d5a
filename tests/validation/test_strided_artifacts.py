"""A ``.pt`` tensor is a view of its storage: one float with stride 0 claims 2**40 elements in a 23 KB
file, and torch.load builds that view without allocating. Such a file is a FAIL of that artifact naming
the tensor and its claimed size, judged before anything copies the view; the rest of the run goes on."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import caffe2x  # noqa: E402
from caffe2x.graph.checks import SizeLimitError  # noqa: E402
from caffe2x.targets.torch.target import read_state  # noqa: E402


def strided_bomb(tiny_files: tuple[Path, Path], out: Path, key: str = "conv1.weight",
                 shape: tuple[int, ...] = (2**40,)) -> Path:
    good = out.with_name("good.pt")
    caffe2x.save(caffe2x.load(*tiny_files), good, overwrite=True)
    state = torch.load(good, weights_only=True)
    state[key] = torch.zeros(1).expand(*shape)  # stride 0: 4 bytes of storage
    torch.save(state, out)
    return out


def test_a_stride_0_view_is_refused_by_its_claimed_size(tiny_files, tmp_path: Path) -> None:
    bomb = strided_bomb(tiny_files, tmp_path / "bomb.pt")
    assert bomb.stat().st_size < 64 << 10
    graph = caffe2x.load(*tiny_files)
    with pytest.raises(SizeLimitError, match=r"bomb.pt: tensor 'conv1.weight' claims shape \[1099511627776\] "
                                             r"\(1,099,511,627,776 float32 values, 4.0 TiB\) from 4 B of storage"):
        read_state(bomb, graph, mapped=True)


def test_a_stride_0_view_of_a_plausible_size_is_still_read(tiny_files, tmp_path: Path) -> None:
    """Stride 0 itself is legal torch: only the claimed size is judged (the values then compare as usual)."""
    bomb = strided_bomb(tiny_files, tmp_path / "broadcast.pt", shape=(8, 3, 7, 7))
    state = read_state(bomb, caffe2x.load(*tiny_files), mapped=True)
    assert state["conv1.weight"].stride() == (0, 0, 0, 0) and state["conv1.weight"].shape == (8, 3, 7, 7)


def test_many_views_together_over_the_budget_name_the_one_that_passes_it(tiny_files, tmp_path: Path) -> None:
    graph = caffe2x.load(*tiny_files)
    good = tmp_path / "good.pt"
    caffe2x.save(graph, good)
    state = torch.load(good, weights_only=True)
    each = torch.zeros(1).expand(1 << 20)  # 4 MiB claimed per tensor: none alone is over the budget
    for i in range(8):
        state[f"extra{i}"] = each
    torch.save(state, tmp_path / "many.pt")
    with pytest.raises(SizeLimitError, match=r"tensor 'extra\d' claims shape \[1048576\] .* with the tensors "
                                             r"before it that is over the"):
        read_state(tmp_path / "many.pt", graph)


def test_validate_against_reports_the_bomb_and_checks_the_next_artifact(tiny_files, tmp_path: Path) -> None:
    bomb = strided_bomb(tiny_files, tmp_path / "bomb.pt")
    good = tmp_path / "good.pt"
    limit = 1536 << 20

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "caffe2x", "validate", str(tiny_files[0]), "-p", str(tiny_files[1]),
                           "--frameworks", "numpy", "--against", str(bomb), "--against", str(good)],
                          capture_output=True, text=True, timeout=300, preexec_fn=cap,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # a difference found, not an error
    assert "out of memory" not in out and "Traceback" not in out
    (bomb_row,) = [l for l in proc.stdout.splitlines() if l.startswith("bomb.pt ")]
    assert " FAIL " in bomb_row and "tensor 'conv1.weight' claims shape [1099511627776]" in bomb_row
    assert "4.0 TiB" in bomb_row and "bomb.pt: bomb.pt:" not in out
    (good_row,) = [l for l in proc.stdout.splitlines() if l.startswith("good.pt ")]
    assert " PASS " in good_row
