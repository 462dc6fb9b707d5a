"""The images of an evaluation: a folder (recursive, sorted), a file of paths, or Caffe's list format.

Caffe's list format is what ``ImageData``'s ``source`` and ``convert_imageset``'s LISTFILE read: one
``path label`` a line, the label after the **last** space (so names may contain spaces), paths relative
to the image root (``--images DIR``). Every line is checked before any image is decoded, and a bad line
is one error naming the file and the line: no label, a label that is not a non-negative integer, a path
that is absolute or climbs out of the root (``..``), a NUL byte, bytes that are not UTF-8, a line over
:data:`MAX_LINE` bytes. Windows line ends (CRLF) and blank lines are accepted (Caffe's ``atoi`` reads
``"3\\r"`` as 3). Then every image must exist: the first one missing is an error naming it and its line.

Paths are checked lexically, not resolved: a symlinked folder inside the root (a common way to lay out
ImageNet) is taken as it is.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from caffe2x.errors import Caffe2xError, option
from caffe2x.validation.preprocess import IMAGE_SUFFIXES

PathLike = str | os.PathLike[str]

#: the longest list line read (a path plus a label; Linux paths stop at 4096 bytes)
MAX_LINE = 16384
#: the largest label taken (Caffe stores labels as int; ImageNet has 1000 classes)
MAX_LABEL = 2**31 - 1
_LABEL = re.compile(r"[0-9]{1,10}")


class ListError(Caffe2xError):
    """A bad line of an image list (the message names the file and the line)."""


@dataclass(frozen=True)
class Entry:
    """One image of the evaluation: its position, path as given, file, label and source line."""

    index: int
    name: str               # as written in the list (or relative to the folder)
    path: Path              # the file to read
    label: int | None
    line: int | None        # 1-based line of the list file (None: found in a folder)


@dataclass(frozen=True)
class ImageSet:
    """Where the images come from (``describe`` goes into the report and the journal's hash)."""

    root: Path
    listing: Path | None    # the list file (Caffe list or a file of paths), None for a folder
    labelled: bool
    entries: list[Entry]

    def where(self, entry: Entry) -> str:
        """``val.txt line 12`` or ``folder DIR``: where an entry came from, for messages."""
        if self.listing is not None and entry.line is not None:
            return f"{self.listing} line {entry.line}"
        return f"folder {self.root}"


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without its line end) of a list file, checked for NUL bytes, UTF-8 and length."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise ListError(f"{path}: cannot read the image list: {exc.strerror or exc}") from None
    with f:
        number = 0
        while True:
            raw = f.readline(MAX_LINE + 2)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                raise ListError(f"{path} line {number}: longer than {MAX_LINE} bytes; not an image list")
            if b"\0" in raw:
                raise ListError(f"{path} line {number}: contains a NUL byte; not an image list")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ListError(f"{path} line {number}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            yield number, text.rstrip("\r\n")


def _relative(name: str, where: str, root: Path) -> str:
    """``name`` normalised, refused when it is empty, absolute or leaves ``root``."""
    if not name:
        raise ListError(f"{where}: no image path")
    posix = name.replace("\\", "/") if os.sep == "\\" else name
    pure = PurePosixPath(posix)
    if pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ListError(f"{where}: path {name!r} is absolute; list paths are relative to the image root {root}")
    parts: list[str] = []
    for part in pure.parts:
        if part == "..":
            if not parts:
                raise ListError(f"{where}: path {name!r} leaves the image root {root}")
            parts.pop()
        elif part != ".":
            parts.append(part)
    if not parts:
        raise ListError(f"{where}: path {name!r} names no file")
    return "/".join(parts)


def parse_caffe_list(listing: PathLike, root: PathLike) -> list[Entry]:
    """Entries of a Caffe ``path label`` list, paths under ``root`` (see the module docstring)."""
    listing, root = Path(listing), Path(root)
    entries: list[Entry] = []
    for number, text in _lines(listing):
        line = text.rstrip(" \t")
        if not line.strip():
            continue
        where = f"{listing} line {number}"
        cut = max(line.rfind(" "), line.rfind("\t"))
        if cut < 0:
            raise ListError(f"{where}: no label (Caffe's list format is 'path label', the label after the last "
                            f"space): {line[:80]!r}")
        name, label_text = line[:cut], line[cut + 1:]
        if label_text.startswith("-") and _LABEL.fullmatch(label_text[1:]):
            raise ListError(f"{where}: negative label {label_text}")
        if not _LABEL.fullmatch(label_text) or int(label_text) > MAX_LABEL:
            raise ListError(f"{where}: label {label_text[:40]!r} is not a non-negative integer")
        rel = _relative(name, where, root)
        entries.append(Entry(len(entries), name, root / rel, int(label_text), number))
    if not entries:
        raise ListError(f"{listing}: the image list names no image")
    return entries


def parse_path_list(listing: PathLike) -> list[Entry]:
    """Entries of a file listing one image path a line (relative to the file's folder), no labels."""
    listing = Path(listing)
    root = listing.parent
    entries: list[Entry] = []
    for number, text in _lines(listing):
        name = text.strip()
        if not name:
            continue
        rel = _relative(name, f"{listing} line {number}", root)
        entries.append(Entry(len(entries), name, root / rel, None, number))
    if not entries:
        raise ListError(f"{listing}: the file names no image")
    return entries


def scan_folder(root: PathLike) -> list[Entry]:
    """Image files under ``root``, recursively, sorted by their path relative to it (hidden entries
    skipped), following symlinked folders once (a folder already seen is not entered again)."""
    root = Path(root)
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root)
        for f in filenames:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                found.append((rel_dir / f).as_posix())
    found.sort()
    if not found:
        raise Caffe2xError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder or below")
    return [Entry(i, name, root / name, None, None) for i, name in enumerate(found)]


def image_set(images: PathLike, listing: PathLike | None = None, limit: int | None = None) -> ImageSet:
    """The evaluation's images: ``images`` a folder (scanned, or the root of the Caffe list ``listing``)
    or a file of paths; the first ``limit`` only. Every file is checked to exist before returning."""
    images = Path(images)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise Caffe2xError(f"limit must be a positive number of images, got {limit!r}")
    if listing is not None:
        if not images.is_dir():
            raise Caffe2xError(f"{images}: with a list ({option('list_file')}) the images must be the folder its paths are "
                               f"relative to")
        if not Path(listing).is_file():
            raise Caffe2xError(f"{listing}: no such image list")
        entries = parse_caffe_list(listing, images)
        result = ImageSet(images, Path(listing), True, entries)
    elif images.is_dir():
        result = ImageSet(images, None, False, scan_folder(images))
    elif images.is_file():
        if images.suffix.lower() in IMAGE_SUFFIXES:
            raise Caffe2xError(f"{images} is an image; give the folder of images or a file listing them")
        result = ImageSet(images.parent, images, False, parse_path_list(images))
    else:
        raise Caffe2xError(f"{images}: no such folder or image list")
    if limit is not None:
        result = ImageSet(result.root, result.listing, result.labelled, result.entries[:limit])
    for entry in result.entries:
        if not entry.path.is_file():
            what = "not found" if not entry.path.exists() else "not a file"
            raise Caffe2xError(f"{result.where(entry)}: image {entry.name!r} {what} ({entry.path})")
    return result


def check_labels(images: ImageSet, classes: int) -> None:
    """Every label names one of the net's ``classes`` (the first one past them is an error with its line)."""
    for entry in images.entries:
        if entry.label is not None and entry.label >= classes:
            raise ListError(f"{images.where(entry)}: label {entry.label} but the net has {classes} classes "
                            f"(0..{classes - 1})")
