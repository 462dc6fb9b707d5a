"""``caffe2x convert`` imports a slow framework with the cyclic GC paused and freezes what the import
built (caffe2x/cli/frozen_import.py), only in the command's own process and only for a target that
declares a slow import; the collector is running again afterwards.

The conversions run in fresh ``python -c`` processes (a pytest worker has imported torch already, and
freezing its heap would outlive the test); ``_command.is_command`` is what ``python -m caffe2x`` sets.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from caffe2x import _command
from caffe2x.cli.frozen_import import applies
from caffe2x.targets import Target, get

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import gc, json, os, sys
from caffe2x import _command
from caffe2x.cli.main import main
seen = []
for command, argv in json.loads(sys.argv[1]):
    _command.is_command = command
    code = main(argv)
    seen.append({"code": code, "frozen": gc.get_freeze_count() > 0, "collecting": gc.isenabled(),
                 "torch": "torch" in sys.modules})
print(json.dumps(seen), flush=True)
os._exit(0)  # without the freeze, torch's teardown at exit alone is ~0.5 s, and it is not what is tested
"""


def _runs(runs: list[tuple[bool, list[str]]]) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    r = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(runs)], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _convert(model: tuple[Path, Path], out: Path, to: str) -> list[str]:
    return ["convert", str(model[0]), "--prototxt", str(model[1]), "--to", to, "-q", "-o", str(out)]


def test_the_command_freezes_what_the_torch_import_built_and_collects_again(tiny_files, tmp_path: Path) -> None:
    """safetensors first (nothing slow to import: nothing frozen), then torch in the same process."""
    assert _runs([(True, _convert(tiny_files, tmp_path / "m.safetensors", "safetensors")),
                  (True, _convert(tiny_files, tmp_path / "m.pt", "torch"))]) == [
        {"code": 0, "frozen": False, "collecting": True, "torch": False},
        {"code": 0, "frozen": True, "collecting": True, "torch": True}]
    assert (tmp_path / "m.pt").stat().st_size > 0


def test_a_library_call_leaves_the_collector_alone(tiny_files, tmp_path: Path) -> None:
    """``main()`` called by a program (not the command's own process) imports torch but freezes nothing
    of the program's."""
    assert _runs([(False, _convert(tiny_files, tmp_path / "m.pt", "torch"))]) == [
        {"code": 0, "frozen": False, "collecting": True, "torch": True}]


@pytest.mark.parametrize("command, name, expected", [
    (True, "torch", True), (True, "keras", True), (True, "onnx", True), (True, "safetensors", False),
    (False, "torch", False)])
def test_which_imports_are_frozen(monkeypatch, command: bool, name: str, expected: bool) -> None:
    """The framework targets declare a slow import; a module already imported is not imported again
    (here it is asked about a module name nobody imported, the target's own being loaded in this worker)."""
    monkeypatch.setattr(_command, "is_command", command)
    target = get(name)
    fresh = Target(target.name, target.suffixes, module="tests.cli.never_imported_module",
                   slow_import=target.slow_import)
    assert applies(fresh) is expected
    assert not applies(Target("loaded", (".x",), module=__name__, slow_import=True))
