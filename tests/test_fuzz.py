"""Fuzzing: mutated caffemodels, prototxts and graph JSON end in success or one Caffe2xError, never
another exception, never past the memory bound, never leaving a file (see tests/helpers/fuzz_inputs.py).

The default run is derandomised and small (a fixed set of cases, ~15 s); set CAFFE2X_FUZZ_EXAMPLES
for more, or run the slow-marked long mode / ``python bench/fuzz.py`` (random seeds) nightly.
"""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).parent / "helpers" / "fuzz_inputs.py"
#: address space for the child; CAFFE2X_MAX_BYTES keeps what a case may allocate far below it
ADDRESS_SPACE = 1536 << 20


def run_fuzz(examples: int, seed: int = 0) -> str:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    # the driver runs as a script: put this checkout first, whatever caffe2x is installed
    repo = str(DRIVER.resolve().parents[2])
    env = {**os.environ, "CAFFE2X_MAX_BYTES": "256M", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(DRIVER), "--examples", str(examples), "--seed", str(seed)],
                          capture_output=True, text=True, timeout=1800, preexec_fn=cap, env=env)
    print(proc.stdout)  # the case counts, shown with -s and in the report of a failure
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    return proc.stdout


def check_counts(out: str, examples: int) -> None:
    kinds = re.findall(r"^fuzz: (.+): (\d+) cases$", out, re.M)
    assert len(kinds) == 9, out
    assert all(int(n) >= examples for _, n in kinds), out
    assert re.search(r"^fuzz: total \d+ cases, 0 escaped", out, re.M), out


def test_fuzzed_inputs_give_caffe2x_errors_or_success() -> None:
    examples = int(os.environ.get("CAFFE2X_FUZZ_EXAMPLES", "60"))
    check_counts(run_fuzz(examples), examples)


@pytest.mark.slow
def test_fuzz_long_mode_with_a_random_seed() -> None:
    seed = int.from_bytes(os.urandom(4), "little") | 1
    print(f"seed {seed}")
    check_counts(run_fuzz(500, seed), 500)
