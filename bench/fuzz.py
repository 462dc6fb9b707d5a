"""Long fuzzing run (nightly): ``python bench/fuzz.py [EXAMPLES] [SEED]``; prints the case counts.

Runs tests/helpers/fuzz_inputs.py with a random seed (or SEED) and EXAMPLES cases per mutation kind
(default 2000) under the same address-space limit as the test suite.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_fuzz import run_fuzz  # noqa: E402

if __name__ == "__main__":
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else int.from_bytes(os.urandom(4), "little") | 1
    print(f"seed {seed}, {examples} examples per kind", flush=True)
    run_fuzz(examples, seed)
