"""The resume journal of an evaluation: one file per finished batch, tied to the run by a hash.

Layout of the journal folder::

    journal.json          what run this is: the hash and its parts, image and batch counts
    batch-0000012.json    the records of batch 12 (one per image) and its undecodable images

Every file is written to a temporary name in the folder, flushed to disk and renamed into place
(``os.replace``), so a file either exists whole or not at all, whatever instant the process dies.
Each batch file carries the run's hash and a SHA-256 digest of its own content; on ``--resume`` every
file is checked: a journal of another model, prototxt, image list or flags is refused naming what
differs, and a truncated, edited or misplaced file is refused naming the file, so no figure in a
resumed report comes from anything but this run's own arithmetic.

The hash covers the model, prototxt, fork proto and mean files (their bytes), the image list (every
path and label, in order), and the flags that change a number (frameworks, batch size, mean values,
input shape, outputs, limit, caffe2x's version). Not the engine nor the worker count: an evaluation
started locally may be finished on Ray.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from caffe2x.errors import Caffe2xError, option

SCHEMA = "caffe2x.evaluate-journal/1"
HEADER = "journal.json"
_BATCH = re.compile(r"batch-(\d{7})\.json")
_TMP = re.compile(r"\.(journal|batch-\d{7})\.json\.\d+\.tmp")


class JournalError(Caffe2xError):
    """A journal that cannot be resumed (another run's, or damaged); the message says which and why."""


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB pieces."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for piece in iter(lambda: f.read(1 << 20), b""):
                h.update(piece)
    except OSError as exc:
        raise Caffe2xError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return h.hexdigest()


def entries_digest(entries: Iterable[tuple[str, int | None]]) -> str:
    """SHA-256 of an image list: every (path, label) in order."""
    h = hashlib.sha256()
    for name, label in entries:
        h.update(json.dumps([name, label]).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True).encode("utf-8")


def run_hash(parts: Mapping[str, Any]) -> str:
    """The run's hash: SHA-256 over its parts (each a digest or a flag value)."""
    return hashlib.sha256(_canonical(dict(parts))).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise Caffe2xError(f"cannot write the journal file {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise JournalError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise JournalError(f"{path}: the {what} is truncated or not JSON (damaged); remove the journal "
                           f"{path.parent} to start again") from None


class Journal:
    """One run's journal folder (see the module docstring)."""

    def __init__(self, directory: Path, parts: dict[str, Any], images: int, batches: int) -> None:
        self.directory = directory
        self.parts = parts
        self.hash = run_hash(parts)
        self.images = images
        self.batches = batches

    def _batch_path(self, batch: int) -> Path:
        return self.directory / f"batch-{batch:07d}.json"

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, directory: str | os.PathLike[str], parts: dict[str, Any], images: int, batches: int, *,
             resume: bool, force: bool) -> tuple["Journal", list[int]]:
        """The journal in ``directory`` and the batches already done in it.

        ``resume``: continue the journal there (refused when it is another run's or damaged; an absent
        one starts afresh). Otherwise an existing journal is refused unless ``force`` (then replaced)."""
        journal = cls(Path(directory), parts, images, batches)
        header = journal.directory / HEADER
        if journal.directory.exists() and not journal.directory.is_dir():
            raise Caffe2xError(f"{journal.directory}: the journal path exists and is not a folder")
        if header.exists() or (journal.directory.is_dir() and any(journal._batch_files())):
            if resume:
                return journal, journal._check_existing()
            if not force:
                raise Caffe2xError(f"{journal.directory} holds the journal of an unfinished evaluation: add {option('resume', True)} "
                                   f"to continue it, or {option('force', True)} to start again")
            journal.remove()
        try:
            journal.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Caffe2xError(f"cannot create the journal folder {journal.directory}: {exc.strerror or exc}") from None
        _write_atomic(header, _canonical({"schema": SCHEMA, "hash": journal.hash, "parts": parts,
                                          "images": images, "batches": batches}))
        return journal, []

    def _batch_files(self) -> Iterator[tuple[int, Path]]:
        for p in self.directory.iterdir():
            m = _BATCH.fullmatch(p.name)
            if m:
                yield int(m.group(1)), p

    def _check_existing(self) -> list[int]:
        header = self.directory / HEADER
        if not header.exists():
            raise JournalError(f"{self.directory}: the journal has batch files but no {HEADER} (damaged); remove "
                               f"it to start again")
        data = _read_json(header, "journal header")
        if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("parts"), dict):
            raise JournalError(f"{header}: not a caffe2x evaluate journal ({SCHEMA})")
        theirs = data["parts"]
        if data.get("hash") != run_hash(theirs):
            raise JournalError(f"{header}: the journal header was edited (its hash does not match its content); "
                               f"remove {self.directory} to start again")
        if data.get("hash") != self.hash:
            differ = [k for k in sorted(set(theirs) | set(self.parts)) if theirs.get(k) != self.parts.get(k)]
            raise JournalError(f"{self.directory} is the journal of another evaluation ({', '.join(differ)} "
                               f"differ{'s' if len(differ) == 1 else ''}); resume with the same model, prototxt, "
                               f"images and options, or start again with {option('force', True)}")
        done = []
        for batch, _path in sorted(self._batch_files()):
            self.read(batch)  # checks it
            done.append(batch)
        return done

    # ------------------------------------------------------------------ batches
    def record(self, batch: int, payload: dict[str, Any]) -> None:
        """Write one finished batch (atomically)."""
        body = {"hash": self.hash, "batch": batch, "payload": payload}
        digest = hashlib.sha256(_canonical(body)).hexdigest()
        _write_atomic(self._batch_path(batch), _canonical({**body, "digest": digest}))

    def read(self, batch: int) -> dict[str, Any]:
        """The payload of a finished batch, checked against its digest, the run's hash and its name."""
        path = self._batch_path(batch)
        data = _read_json(path, "journal batch file")
        if not isinstance(data, dict) or not {"hash", "batch", "payload", "digest"} <= set(data):
            raise JournalError(f"{path}: not a journal batch file (damaged); remove the journal {self.directory} "
                               f"to start again")
        body = {k: data[k] for k in ("hash", "batch", "payload")}
        if hashlib.sha256(_canonical(body)).hexdigest() != data["digest"]:
            raise JournalError(f"{path}: the journal batch file was edited (its digest does not match its "
                               f"content); remove the journal {self.directory} to start again")
        if data["hash"] != self.hash:
            raise JournalError(f"{path}: a batch file of another evaluation; remove the journal {self.directory} "
                               f"to start again")
        if data["batch"] != batch or not 0 <= batch < self.batches:
            raise JournalError(f"{path}: holds batch {data['batch']!r} of a {self.batches}-batch run (renamed or "
                               f"edited); remove the journal {self.directory} to start again")
        payload = data["payload"]
        if not isinstance(payload, dict) or not isinstance(payload.get("records"), list) \
                or not isinstance(payload.get("unreadable"), list):
            raise JournalError(f"{path}: malformed journal batch file; remove the journal {self.directory}")
        return payload

    def remove(self) -> None:
        """Delete the journal's own files, and its folder when nothing else is left in it (the run is
        complete and reported, or being restarted): a folder the user shares with other files keeps them."""
        if not self.directory.is_dir():
            return
        for p in self.directory.iterdir():
            if p.name == HEADER or _BATCH.fullmatch(p.name) or _TMP.fullmatch(p.name):
                p.unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:
            pass
