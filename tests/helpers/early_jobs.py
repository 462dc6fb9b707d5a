"""A job for :mod:`caffe2x.validation.isolated`'s children that reports what its process had imported, and a
module that marks the moment it is imported (tests/validation/test_early_children.py)."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ImportsJob:
    """Reports the graph's node count and which of ``watch`` the child had imported when the job began."""

    watch: tuple[str, ...]

    def execute(self, graph: Any, x: np.ndarray, ref_logits: np.ndarray, say: Callable[[str], None],
                tick: Callable[[int], None]) -> dict[str, Any]:
        import gc

        return {"nodes": len(graph.nodes), "imported": [m for m in self.watch if m in sys.modules],
                "batch": list(x.shape), "frozen": gc.get_freeze_count() > 0, "collecting": gc.isenabled()}

    def failed(self, reason: str) -> dict[str, Any]:
        return {"reason": reason}


def mark_imported() -> None:
    """Touch the file ``CAFFE2X_TEST_IMPORT_MARK`` names (called by :mod:`tests.helpers.marks_its_import`)."""
    mark = os.environ.get("CAFFE2X_TEST_IMPORT_MARK")
    if mark:
        Path(mark).touch()
