"""Install caffe2x the ways README.md says, in a fresh venv, and run its set-up command and snippet.

Run by ``.ci/run``. Works on a fresh ``git clone`` of this checkout's HEAD (what a newcomer clones),
in a venv made with ``--system-site-packages`` so the heavy wheels already installed (torch,
tensorflow, onnx) satisfy the requirements instead of being downloaded again; caffe2x itself is
installed into the venv each time, so the venv's copy is the one that runs. Steps, all as README
writes them:

1. each line of "Installing it for your own use" (the git URL pointed at the clone);
2. the set-up command (``pip install -r requirements-dev.txt && caffe2x fixture … && caffe2x convert …``);
3. the runnable Python blocks, from the clone's directory (where ``demo/`` now is).

Usage: ``python scripts/fresh_venv_check.py [--keep]`` (``--keep`` leaves the temp directory).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import readme_blocks  # noqa: E402  (a sibling script, not a package)

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: str | list[str], cwd: Path, env: dict[str, str], shell: bool = False, shown: str | None = None) -> None:
    shown = shown or (cmd if isinstance(cmd, str) else " ".join(cmd))
    print(f"+ {shown}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, shell=shell, check=True, executable="/bin/bash" if shell else None)
    print(f"  ({time.perf_counter() - start:.0f}s)", flush=True)


def main(argv: list[str]) -> int:
    keep = "--keep" in argv
    tmp = Path(tempfile.mkdtemp(prefix="caffe2x-fresh-venv-"))
    try:
        clone, venv = tmp / "caffe2x", tmp / "venv"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
                   PIP_DISABLE_PIP_VERSION_CHECK="1", TF_CPP_MIN_LOG_LEVEL="2")
        text = (clone / "README.md").read_text()
        for line in readme_blocks.install_commands(text):
            if "git+https://" in line:  # README's placeholder URL -> this clone, same requirement shape
                line = line.split("git+https://", 1)[0] + f"git+file://localhost{clone}'"  # pip 23 wants a host
            run(line.replace("pip install ", "pip install -q ", 1), clone, env, shell=True)
        setup = readme_blocks.setup_commands(text)[0]
        run(setup, clone, env, shell=True)
        where = subprocess.run(["python", "-c", "import caffe2x; print(caffe2x.__file__)"], cwd=venv, env=env,
                               capture_output=True, text=True, check=True).stdout.strip()  # cwd: not beside the clone
        if not where.startswith(str(clone)):
            raise SystemExit(f"fresh venv imports caffe2x from {where}, not from the clone {clone}")
        run(["python", "-c", readme_blocks.runnable_code(text)], clone, env, shown="python -c <README's Python blocks>")
        print("fresh venv check: README's install lines, set-up command and snippet work", flush=True)
        return 0
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
