"""The engines that run an evaluation's batches: ``local`` (a pool of worker processes on this machine)
and ``ray`` (actors on a Ray cluster). Both take the same work list and hand each finished batch's
payload (:meth:`caffe2x.validation.evaluate.worker.Evaluator.run_batch`) to the same callback, in the
order batches finish; the caller journals them."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: one batch of work: (batch number, [(image index, path, label), ...])
Work = tuple[int, list[tuple[int, str, int | None]]]
#: called with (batch number, number of images, payload) as each batch finishes
Done = Callable[[int, int, dict[str, Any]], None]

ENGINES = ("local", "ray")
