"""The commands and code README.md promises, pulled out so that tests and CI run exactly those.

One reader for three users: ``tests/e2e/test_readme.py`` (the set-up commands, and every Python block run
against the session's fixture model), and ``scripts/fresh_venv_check.py`` (the install lines, the
set-up command and the snippet in a fresh venv). A Python block runs unless the line before it is
``<!-- readme-test: no-run (why) -->``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
NO_RUN = re.compile(r"<!-- readme-test: no-run \((?P<why>[^)]*)\) -->\n$")


@dataclass
class PythonBlock:
    """A fenced ```python block: its code, the line it starts on and why it is not run (None: it runs)."""

    code: str
    line: int
    no_run: str | None


def section(text: str, title: str) -> str:
    """The body of ``## title`` (up to the next ``## ``)."""
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def bash_blocks(text: str) -> list[str]:
    """The stripped contents of the ```bash blocks in ``text``."""
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def setup_commands(text: str | None = None) -> list[str]:
    """README's set-up commands: install + main job, then the tests."""
    return bash_blocks(section(text if text is not None else README.read_text(), "Set-up"))


def install_commands(text: str | None = None) -> list[str]:
    """The lines of the 'Installing it for your own use' section's command block."""
    body = section(text if text is not None else README.read_text(), "Installing it for your own use")
    return [line for block in bash_blocks(body) for line in block.splitlines() if line.strip()]


def python_blocks(text: str | None = None) -> list[PythonBlock]:
    """Every ```python block of the README, in order."""
    text = text if text is not None else README.read_text()
    blocks = []
    for match in re.finditer(r"```python\n(.*?)```", text, re.S):
        before = text[:match.start()]
        marker = NO_RUN.search(before)
        blocks.append(PythonBlock(match.group(1), before.count("\n") + 1, marker.group("why") if marker else None))
    return blocks


def runnable_code(text: str | None = None) -> str:
    """The runnable Python blocks joined in README order: what a reader pasting them one by one runs."""
    return "\n".join(b.code for b in python_blocks(text) if b.no_run is None)
