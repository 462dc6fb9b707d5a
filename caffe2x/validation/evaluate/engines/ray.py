"""The ``ray`` engine: one Ray actor per worker, each framework loaded once per actor.

``ray_address`` connects to an existing cluster (``ray.init(address=...)``); without it a Ray session
already started in this process (``ray.init`` by the caller) is used, else a local one is started with
``workers`` CPUs and shut down at the end. The model's files (caffemodel, prototxt, fork proto, mean) go
into the object store once (``ray.put``); each actor fetches them from there, writes them to its own
temporary folder and loads the frameworks. The driver reads each batch's image files and sends their
bytes with the batch, so the nodes need no shared filesystem. Actors run the same
:class:`~caffe2x.validation.evaluate.worker.Evaluator` the local engine does, with the same thread
limits, so the figures are identical. caffe2x must be importable on every node (it is, on a local
cluster: the package's folder is put on the workers' ``PYTHONPATH``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from caffe2x.errors import Caffe2xError, option
from caffe2x.validation.evaluate.engines import Done, Work


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise Caffe2xError("the ray engine needs Ray: pip install 'caffe2x[ray]'") from None
    return ray


class RayWorker:
    """The actor: an :class:`Evaluator` over files fetched from the object store."""

    def __init__(self, spec: Any, refs: dict[str, Any], workers: int) -> None:
        import ray

        from caffe2x.validation.evaluate.worker import Evaluator, limit_threads

        self.failed: str | None = None
        self.evaluator: Any = None
        self.folder = tempfile.mkdtemp(prefix="caffe2x-evaluate-ray-")
        try:
            limit_threads(workers)
            paths = {}
            for field, ref in refs.items():
                name, data = ray.get(ref)
                path = Path(self.folder) / field / name
                path.parent.mkdir()
                path.write_bytes(data)
                paths[field] = str(path)
            self.evaluator = Evaluator(spec.relocated(paths))
        except Caffe2xError as exc:
            self.failed = str(exc)

    def run(self, number: int, items: list[tuple[int, str, int | None]], data: list[bytes]
            ) -> tuple[int, int, dict[str, Any]]:
        if self.evaluator is None:
            raise Caffe2xError(self.failed or "the worker has no model")
        try:
            return number, len(items), self.evaluator.run_batch(items, data)
        except Caffe2xError as exc:
            raise Caffe2xError(str(exc)) from None

    def close(self) -> None:
        if self.evaluator is not None:
            self.evaluator.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _read(items: list[tuple[int, str, int | None]]) -> list[bytes]:
    out = []
    for _i, path, _label in items:
        try:
            out.append(Path(path).read_bytes())
        except OSError as exc:  # gone since the check: the worker reports it as undecodable
            out.append(f"caffe2x: cannot read {exc.strerror or exc}".encode())
    return out


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, Caffe2xError):
        return str(cause)
    from caffe2x.errors import one_line

    return one_line(cause or exc)


def run_ray(spec: Any, work: Sequence[Work], workers: int, done: Done, say: Callable[[str], None],
            address: str | None) -> None:
    """Run ``work`` on ``workers`` Ray actors (see the module docstring)."""
    ray = _import_ray()
    if not work:
        return
    started = False
    if address is not None or not ray.is_initialized():
        package_parent = str(Path(__file__).resolve().parents[4])  # the folder holding caffe2x/
        env = {"PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p),
               "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
        say("connecting to the Ray cluster at " + address if address else f"starting a local Ray cluster "
            f"({workers} CPUs)")
        import logging

        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
                                  "runtime_env": {"env_vars": env}}
        try:
            if address is not None:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=workers, **kwargs)
        except Exception as exc:  # noqa: BLE001 - Ray's own start-up failures, in one line
            from caffe2x.errors import one_line

            raise Caffe2xError(f"cannot start Ray{' at ' + address if address else ''}: {one_line(exc)}") from None
        started = True
    actors: list[Any] = []
    try:
        refs = {field: ray.put((Path(path).name, Path(path).read_bytes())) for field, path in spec.files().items()}
        actor_class = ray.remote(num_cpus=1)(RayWorker)
        count = min(workers, len(work))
        actors = [actor_class.remote(spec, refs, workers) for _ in range(count)]
        queue = iter(work)
        running: dict[Any, Any] = {}

        def feed(actor: Any) -> bool:
            for number, items in queue:
                running[actor.run.remote(number, items, _read(items))] = actor
                return True
            return False

        for actor in actors:  # two batches per actor in flight
            feed(actor)
            feed(actor)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(ready[0])
            try:
                number, count_, payload = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:
                raise Caffe2xError(f"a Ray worker died ({_cause(exc)}); the finished batches are in the journal: "
                                   f"rerun with {option('resume', True)}") from None
            except ray.exceptions.RayTaskError as exc:
                raise Caffe2xError(_cause(exc)) from None
            done(number, count_, payload)
            feed(actor)
    finally:
        for actor in actors:
            try:
                ray.get(actor.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a dead actor has nothing left to close
                pass
            ray.kill(actor)
        if started:
            ray.shutdown()
