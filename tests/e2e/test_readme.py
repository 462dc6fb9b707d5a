"""README's commands and code are the project's contract with a newcomer: keep them true.

The set-up commands are checked here and run by CI (``.ci/run``: the test command verbatim, and
``scripts/fresh_venv_check.py`` the install lines, the set-up command and the snippet in a fresh
venv). Every Python block that does not say it cannot run is run here, as written, from a directory
holding what the set-up command writes (the session's fixture ResNet-50, so nothing is regenerated).
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_readme_blocks():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("caffe2x_readme_blocks", ROOT / "scripts" / "readme_blocks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


blocks = _load_readme_blocks()


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = blocks.setup_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)


def test_ci_runs_readmes_test_command_after_installing_from_project_files() -> None:
    install, test = blocks.setup_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci
    assert "python -m pip install -q -r requirements-dev.txt" in ci
    assert install.startswith("pip install -r requirements-dev.txt")
    assert "torch==2.13.0" in (ROOT / "requirements-dev.txt").read_text()


def test_ci_checks_the_install_lines_setup_and_snippet_in_a_fresh_venv() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "python scripts/fresh_venv_check.py" in ci
    install = blocks.install_commands()
    assert install[0] == "pip install -e '.[torch]'"
    assert re.fullmatch(r"pip install 'caffe2x\[[a-z,]+\] @ git\+https://\S+'", install[1]), install[1]
    assert "not on PyPI yet" in blocks.section(blocks.README.read_text(), "Installing it for your own use")


def test_every_python_block_runs_or_says_why_not() -> None:
    found = blocks.python_blocks()
    assert [b for b in found if b.no_run is None], "README has no runnable Python block"
    for b in found:
        assert b.no_run is None or len(b.no_run.strip()) > 10, f"README line {b.line}: no-run needs a reason"
        compile(b.code, f"README.md:{b.line}", "exec")


def test_python_blocks_run_as_written_after_the_setup_command(resnet50_files, tmp_path: Path) -> None:
    """The snippet reads the files the set-up command writes (``caffe2x fixture resnet50 -o demo``)."""
    setup = blocks.setup_commands()[0]
    assert "caffe2x fixture resnet50 -o demo " in setup
    demo = tmp_path / "demo"
    demo.mkdir()
    for f in resnet50_files:  # the same bytes the set-up command writes (same code, seed 0)
        (demo / f.name).symlink_to(f)
    code = blocks.runnable_code()
    for path in re.findall(r'"(demo/[^"]+)"', code):
        assert (tmp_path / path).exists() or re.search(rf"save\([^)]*\"{re.escape(path)}\"", code), \
            f"README's Python reads {path}, which the set-up command does not write"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert re.search(r"^torch: max relative error .*\nkeras: max relative error ", proc.stdout, re.M), proc.stdout
