"""Every path where a tensor's byte count comes from numbers in a file or a call (the audit table of
docs/hostile-inputs.md): each case of tests/helpers/user_sizes.py is refused before allocating, or is
an error naming its layer, in one child process under an address-space limit and a 256 MiB size limit."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.user_sizes import CASES

DRIVER = Path(__file__).resolve().parents[1] / "helpers" / "user_sizes.py"
REPO = DRIVER.parents[2]
ADDRESS_SPACE = 1536 << 20


@lru_cache(maxsize=1)
def results() -> dict[str, dict[str, Any]]:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    env = {**os.environ, "CAFFE2X_MAX_BYTES": "256M", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(DRIVER)], capture_output=True, text=True, timeout=600,
                          preexec_fn=cap, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["case"]: r for r in map(json.loads, proc.stdout.splitlines())}


@pytest.mark.parametrize("case", CASES)
def test_user_numbers_are_checked_before_allocation(case: str) -> None:
    got = results()[case]
    want = CASES[case]
    assert got["outcome"] == want["expect"], got
    assert "\n" not in got["message"]
    if "match" in want:
        assert want["match"] in got["message"], got
    if "rows" in want:
        assert got["message"] == f"rows {want['rows']}", got


def test_the_whole_corpus_stays_within_the_size_limit() -> None:
    peak = max(r["peak_rss_mb"] for r in results().values())
    assert peak < 256 + 400, peak  # the limit, plus python + numpy + protobuf
