"""``caffe2x evaluate`` on the command line: exit codes, one-line errors before any work, and an
interrupted run (SIGINT, SIGTERM) resumed with ``--resume`` to the same report."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.evaluate_sets import colour_set


def evaluate_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffe2x", "evaluate", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return colour_set(tmp_path_factory.mktemp("colours"), count=20)


def base(colours, tmp_path: Path) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(colours.model), "--prototxt", str(colours.prototxt), "--images", str(colours.root),
            "--list", str(colours.listing), "--frameworks", "numpy", "--workers", "1",
            "--journal", str(tmp_path / "journal")]


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_passing_run_exits_0_and_writes_the_report(colours, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = evaluate_cli(*base(colours, tmp_path), "--json", str(tmp_path / "r.json"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("PASS")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["frameworks"][0]["counts"]["top1_correct"] == colours.top1
    assert not (tmp_path / "journal").exists()  # a finished run leaves no journal
    again = evaluate_cli(*base(colours, tmp_path), "--json", str(tmp_path / "r.json"), "--quiet")
    assert "already exists" in one_error_line(again)


def test_missing_image_is_one_line_with_its_list_line_before_any_work(colours, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    listing = tmp_path / "val.txt"
    lines = colours.listing.read_text().splitlines()
    lines.insert(2, "nowhere/gone.jpg 3")
    listing.write_text("\n".join(lines) + "\n")
    args = base(colours, tmp_path)
    args[args.index("--list") + 1] = str(listing)
    proc = evaluate_cli(*args, "--json", str(tmp_path / "r.json"))
    line = one_error_line(proc)
    assert f"{listing} line 3" in line and "'nowhere/gone.jpg' not found" in line
    assert "reading" not in proc.stderr  # refused before the model was read
    assert not (tmp_path / "journal").exists() and not (tmp_path / "r.json").exists()


def test_an_existing_journal_needs_resume_or_force(colours, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "journal.json").write_text("{}")
    line = one_error_line(evaluate_cli(*base(colours, tmp_path)))
    assert "--resume" in line and "--force" in line
    assert "not a caffe2x evaluate journal" in one_error_line(evaluate_cli(*base(colours, tmp_path), "--resume"))
    assert evaluate_cli(*base(colours, tmp_path), "--force", "-q").returncode == 0


def test_ray_engine_without_ray_names_the_extra(colours, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code = ("import sys; sys.modules['ray'] = None\nfrom caffe2x.cli import main\n"
            f"sys.exit(main({['evaluate', *base(colours, tmp_path), '--engine', 'ray']!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'caffe2x[ray]'" in one_error_line(proc)


def _many_images(tmp_path: Path, count: int):  # type: ignore[no-untyped-def]
    return colour_set(tmp_path / "many", count=count, size=(96, 128))


@pytest.mark.parametrize("sig, code, workers", [(signal.SIGINT, 130, "1"), (signal.SIGTERM, 143, "2")])
def test_interrupted_run_resumes_to_the_same_report(tmp_path: Path, sig: int, code: int, workers: str) -> None:
    many = _many_images(tmp_path, 200)
    args = [str(many.model), "--prototxt", str(many.prototxt), "--images", str(many.root), "--list",
            str(many.listing), "--frameworks", "numpy", "--batch-size", "2"]
    # numpy alone: the figures do not depend on the worker count, so one in-process worker makes the baseline
    whole = evaluate_cli(*args, "--workers", "1", "--journal", str(tmp_path / "j0"), "--json",
                         str(tmp_path / "whole.json"), "-q")
    args += ["--workers", workers]
    assert whole.returncode == 0, whole.stderr
    journal = tmp_path / "j1"
    proc = subprocess.Popen([sys.executable, "-m", "caffe2x", "evaluate", *args, "--journal", str(journal),
                             "--json", str(tmp_path / "resumed.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_dir() and len(list(journal.glob("batch-*.json"))) >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "--resume" in err.splitlines()[-1]
    done = len(list(journal.glob("batch-*.json")))
    assert 3 <= done < 100 and not (tmp_path / "resumed.json").exists()
    again = evaluate_cli(*args, "--journal", str(journal), "--json", str(tmp_path / "resumed.json"), "--resume")
    assert again.returncode == 0, again.stderr
    assert f"resuming: {2 * done} of 200 images already done" in again.stderr
    a = json.loads((tmp_path / "whole.json").read_text())
    b = json.loads((tmp_path / "resumed.json").read_text())
    assert b["resumed"] == 2 * done
    for k in ("seconds", "images_per_second", "resumed", "workers"):
        a.pop(k), b.pop(k)
    assert a == b
    assert not journal.exists()
