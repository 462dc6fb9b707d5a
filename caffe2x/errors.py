"""The one exception type users of caffe2x need to catch.

Every problem caused by the user's input (a broken caffemodel, a prototxt that does not match it, an
unsupported layer, an unwritable output path) is raised as :class:`Caffe2xError` with a one-line
message. The CLI prints it as ``error: <message>`` and exits non-zero; anything else escaping is a bug.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: a library parameter a message may name, as ``(keyword, flag)``: the API's word and the command
#: line's. ``True`` after the keyword marks a switch (``overwrite=True`` is ``--force``).
OPTIONS: dict[str, tuple[str, str]] = {
    "model": ("model", "MODEL"),
    "prototxt": ("prototxt", "--prototxt"),
    "input_shape": ("input_shape", "--input-shape"),
    "outputs": ("outputs", "--outputs"),
    "proto": ("proto", "--proto"),
    "to": ("to", "--to"),
    "dtype": ("dtype", "--dtype"),
    "profile": ("profile", "--profile"),
    "profiles": ("profiles", "--profile"),
    "overwrite": ("overwrite", "--force"),
    "fold_bn": ("fold_bn", "--fold-bn"),
    "emit_code": ("emit_code", "--emit-code"),
    "full_model": ("full_model", "--full-model"),
    "frameworks": ("frameworks", "--frameworks"),
    "images": ("images", "--images"),
    "against": ("against", "--against"),
    "caffe_blobs": ("caffe_blobs", "--caffe-blobs"),
    "inputs": ("inputs", "--inputs"),
    "oracles": ("oracles", "--oracle"),
    # caffe2x.evaluate
    "force": ("force", "--force"),
    "resume": ("resume", "--resume"),
    "engine": ("engine", "--engine"),
    "ray_address": ("ray_address", "--ray-address"),
    "list_file": ("list_file", "--list"),
}

_OPTION = re.compile("\x00([a-z_]+)\x1f([^\x00\x1f]*)\x1f([^\x00\x1f]*)\x00")
_MISSING = object()


def option(name: str, value: Any = _MISSING, *, api: str | None = None) -> str:
    """A place in an error message that names the option ``name`` (a key of :data:`OPTIONS`), with an
    optional value: :class:`Caffe2xError` renders it as the library spells it (``overwrite=True``,
    ``outputs=['res4f']``, ``prototxt=``) in ``str(error)`` and as the command line does (``--force``,
    ``--outputs res4f``, ``--prototxt``) in :func:`cli_message`. So one message serves both faces.
    ``api`` spells a placeholder value the library's way (``'N,C,H,W'`` is ``(N, C, H, W)`` there)."""
    keyword, flag = OPTIONS[name]
    if value is _MISSING:
        api, cli = (keyword if flag == "MODEL" else f"{keyword}="), flag
    elif value is True:
        api, cli = f"{keyword}=True", flag
    else:
        shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        api, cli = f"{keyword}={repr(value) if api is None else api}", f"{flag} {shown}"
    return f"\x00{name}\x1f{_clean(api)}\x1f{_clean(cli)}\x00"


def _clean(text: str) -> str:
    return text.replace("\x00", "").replace("\x1f", "")


def _render(template: str, cli: bool) -> str:
    return _OPTION.sub(lambda m: m.group(3 if cli else 2), template)


class Caffe2xError(Exception):
    """A user-facing error: the message is one line and names what is wrong and where.

    A message may name options through :func:`option`: ``str(error)`` then speaks the library's words
    (``pass overwrite=True``), :func:`cli_message` the command line's (``pass --force``)."""

    def __init__(self, message: Any = "", *args: Any) -> None:
        if isinstance(message, str) and "\x00" in message:
            self.template = message
            message = _render(message, cli=False)
        super().__init__(message, *args)


def template(exc: BaseException) -> str:
    """The message of ``exc`` with its option places kept, for wrapping it in another
    :class:`Caffe2xError` (``raise Caffe2xError(f"{template(exc)} (while ...)")``) without losing the
    command line's wording."""
    return getattr(exc, "template", None) or str(exc)


def prefix(exc: BaseException, text: str) -> None:
    """Put ``text`` (``"model.caffemodel: "``) before the message of ``exc``, in both wordings."""
    exc.args = (f"{text}{exc}", *exc.args[1:])
    if getattr(exc, "template", None):
        exc.template = f"{text}{exc.template}"  # type: ignore[attr-defined]


def cli_message(exc: BaseException) -> str:
    """The message of ``exc`` as the command line prints it: options named by their flags."""
    text = getattr(exc, "template", None)
    return _render(text, cli=True) if text else str(exc)



class UnsupportedLayerError(Caffe2xError):
    """A Caffe layer type caffe2x has no handler for (the message names the layer and its type)."""

    def __init__(self, layer: str, layer_type: str, what: str = "layer type") -> None:
        super().__init__(f"unsupported {what} {layer_type!r} in layer {layer!r}")
        self.layer = layer
        self.layer_type = layer_type


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (at most 300 characters): third-party
    libraries raise multi-line messages; caffe2x reports one line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class Caffe2xWarning(UserWarning):
    """A warning of caffe2x's own: the command line prints it as one ``warning: …`` line on stderr (not
    Python's ``file:line: Category: …`` and source line), and a library caller can filter them all by
    this class."""


class ForkRuleWarning(Caffe2xWarning):
    """A net whose shapes do not fit upstream Caffe's rules was read with a fork's rule under which they do
    (the YOLOv3-tiny ports' pooling size: :mod:`caffe2x.layers.yolo_pooling`)."""


class DuplicateLayerNameWarning(Caffe2xWarning):
    """A net names two layers alike (HED's two ``crop`` layers): Caffe allows it; caffe2x follows Caffe's
    weight copying and renames the later ones (:mod:`caffe2x.caffe.layernames`)."""


class PluginWarning(Caffe2xWarning):
    """An installed ``caffe2x.targets`` entry point could not be loaded: the other targets still work."""
