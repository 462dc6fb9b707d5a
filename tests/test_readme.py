"""README's two set-up commands are the project's contract with a newcomer: keep them true."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", setup, re.S)]


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)


def test_ci_runs_readmes_test_command_after_installing_from_project_files() -> None:
    install, test = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci
    assert "python -m pip install -q -r requirements-dev.txt" in ci
    assert install.startswith("pip install -r requirements-dev.txt")
    assert "torch==2.13.0" in (ROOT / "requirements-dev.txt").read_text()
