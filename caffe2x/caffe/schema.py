"""A user's own fork ``caffe.proto`` (``--proto``): compiled at run time, read onto caffe2x's schema.

caffe2x's built-in schema knows upstream Caffe and the widely used forks (``docs/forks.md``). For the
long tail, ``caffe2x.load(..., proto="their/caffe.proto")`` / ``--proto`` compiles the fork's own schema
with the protoc bundled in ``grpcio-tools`` (no system protoc; imported only here, and run in a child
process because it crashes beside other C++ protobuf users such as onnx and torch). The result, a
``FileDescriptorSet``, is cached by the file's content hash under ``$CAFFE2X_CACHE_DIR`` (default
``~/.cache/caffe2x/proto``) and loaded into a *private* descriptor pool, so any number of fork schemas
(all called ``caffe.proto``, package ``caffe``) and pycaffe's own can live in one process.

The model and prototxt are parsed with the fork's classes, so the fork's field numbers and names are
authoritative, then copied **by field name** onto caffe2x's schema, which the reader and its layer
handlers use. What the fork has and caffe2x lacks:

- a field of ``LayerParameter`` itself (a fork layer's ``my_param``): kept, and layer handlers (a
  registered handler for the fork's layer type) see it as an attribute of the layer;
- a field inside a message caffe2x knows (``pooling_param { fancy_mode: 1 }``): an error naming the layer
  and the field, because caffe2x's handler would silently ignore something that may change the numbers.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caffe2x.caffe.forkfix import has_field, is_repeated
from caffe2x.errors import Caffe2xError, option

# --------------------------------------------------------------------------- compiling


def cache_dir() -> Path:
    """Where compiled fork schemas are kept: ``$CAFFE2X_CACHE_DIR`` or ``~/.cache/caffe2x/proto``."""
    env = os.environ.get("CAFFE2X_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "caffe2x" / "proto"


_PROTOC = """
import sys
from importlib import resources
from grpc_tools import protoc
well_known = str(resources.files("grpc_tools") / "_proto")
sys.exit(protoc.main(["protoc", "-I" + sys.argv[1], "-I" + well_known, "--include_imports",
                      "--descriptor_set_out=" + sys.argv[2], sys.argv[3]]))
"""


def compile_proto(path: str | Path) -> bytes:
    """The serialized ``FileDescriptorSet`` of ``path`` (and its imports), compiled once per content."""
    proto = Path(path)
    if not proto.is_file():
        raise Caffe2xError(f"{proto}: no such .proto file")
    try:
        text = proto.read_bytes()
    except OSError as exc:
        raise Caffe2xError(f"cannot read {proto}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(text).hexdigest()[:24]
    cached = cache_dir() / f"{proto.stem}-{digest}.desc"
    if cached.is_file():
        return cached.read_bytes()
    try:
        import grpc_tools  # noqa: F401  (only to fail early with a clear message)
    except ImportError:
        raise Caffe2xError(f"{option('proto')} needs grpcio-tools to compile the schema: pip install 'caffe2x[proto]'") from None
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    result = subprocess.run([sys.executable, "-c", _PROTOC, str(proto.resolve().parent), str(tmp),
                             str(proto.resolve())], capture_output=True, text=True, timeout=300)
    if result.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        detail = " ".join((result.stderr or result.stdout).split())[:400]
        raise Caffe2xError(f"{proto} does not compile: {detail or f'protoc exit code {result.returncode}'}")
    os.replace(tmp, cached)
    return cached.read_bytes()


@dataclass
class ForkSchema:
    """The message classes of a fork schema, from a private descriptor pool."""

    source: str
    pool: Any
    package: str
    classes: dict[str, Any] = field(default_factory=dict)

    def message(self, name: str) -> Any:
        """The class of top-level message ``name`` (``NetParameter``, ``BlobProto``, ...)."""
        if name not in self.classes:
            full = f"{self.package}.{name}" if self.package else name
            try:
                descriptor = self.pool.FindMessageTypeByName(full)
            except KeyError:
                raise Caffe2xError(f"{self.source} defines no message {name} (is it a Caffe schema?)") from None
            self.classes[name] = _message_class(descriptor)
        return self.classes[name]


def _message_class(descriptor: Any) -> Any:
    try:
        from google.protobuf.message_factory import GetMessageClass
    except ImportError:  # protobuf < 4.22
        from google.protobuf import message_factory

        return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)
    return GetMessageClass(descriptor)


_SCHEMAS: dict[str, ForkSchema] = {}


def load_schema(path: str | Path) -> ForkSchema:
    """Compile (or take from the cache) and load the fork schema at ``path``."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    data = compile_proto(path)
    key = hashlib.sha256(data).hexdigest()
    if key in _SCHEMAS:
        return _SCHEMAS[key]
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    pool = descriptor_pool.DescriptorPool()
    package = None
    for file_proto in files.file:
        pool.Add(file_proto)
        if any(m.name == "NetParameter" for m in file_proto.message_type):
            package = file_proto.package
    if package is None:
        raise Caffe2xError(f"{path} defines no NetParameter message (is it a Caffe schema?)")
    schema = ForkSchema(str(path), pool, package)
    _SCHEMAS[key] = schema
    return schema


# --------------------------------------------------------------------------- parsing


def parse_binary(schema: ForkSchema, data: Any, source: str) -> Any:
    from google.protobuf.message import DecodeError

    net = schema.message("NetParameter")()
    try:
        net.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise Caffe2xError(f"{source} is not a Caffe model for {schema.source} (protobuf decoding failed: {exc})") from None
    return net


def parse_text(schema: ForkSchema, text: str, source: str) -> Any:
    from google.protobuf import text_format

    net = schema.message("NetParameter")()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as exc:
        raise Caffe2xError(f"{source} is not a valid prototxt for {schema.source}: "
                           f"{describe_parse_error(exc, schema.package)}") from None
    return net


def describe_parse_error(exc: Exception, package: str) -> str:
    """protobuf's text-format error as ``line L, column C: ...``, without the schema's package name
    (and without the offending line protobuf sometimes quotes, which can be very long)."""
    import re

    text = str(exc).replace(f"{package}.", "") if package else str(exc)
    match = re.match(r"^(\d+):(\d+) : (?:'.*': )?(.*)$", text, re.S)
    return f"line {match[1]}, column {match[2]}: {match[3]}" if match else text


# --------------------------------------------------------------------------- onto caffe2x's schema


class ForkLayer:
    """A layer in caffe2x's schema that also answers the fork-only fields of the fork's layer.

    It records which fork-only fields the layer's handler read: one that is set but never read would
    be silently ignored, so :meth:`check_fork_fields_read` makes it an error naming the field.
    """

    __slots__ = ("_ours", "_fork", "_extra", "_read")

    def __init__(self, ours: Any, fork: Any, extra: set[str]) -> None:
        self._ours, self._fork, self._extra = ours, fork, extra
        self._read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name in self._extra:
            self._read.add(name)
            return getattr(self._fork, name)
        return getattr(self._ours, name)

    def HasField(self, name: str) -> bool:  # noqa: N802 (protobuf's spelling)
        if name in self._extra:
            self._read.add(name)
            return bool(self._fork.HasField(name))
        return bool(self._ours.HasField(name))

    @property
    def fork_layer(self) -> Any:
        """The layer as the fork's own message."""
        return self._fork

    def check_fork_fields_read(self) -> None:
        """Raise if the handler left a fork-only field of this layer unread."""
        unread = sorted(self._extra - self._read)
        if unread:
            raise Caffe2xError(f"layer {self._ours.name!r} ({self._ours.type}) sets {', '.join(unread)} from the "
                               f"{option('proto')} schema, which its caffe2x handler does not read; it may change the "
                               f"numbers, so caffe2x stops (register a handler for {self._ours.type!r} that reads it)")


@dataclass
class NetView:
    """caffe2x's ``NetParameter`` with its layers replaced by :class:`ForkLayer` where the fork has more."""

    net: Any
    layer: list[Any]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.net, name)


#: Messages every fork keeps byte-compatible with upstream: copied through the wire format, which is
#: much faster than field by field for millions of weights.
_WIRE_COPIED = {"BlobProto", "BlobShape"}


def _copy(src: Any, dst: Any, where: str, strict: bool, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy ``src`` onto ``dst`` by field name; return the names of set fields ``dst`` lacks.

    With ``strict`` a missing field (or an enum value ``dst`` lacks) is an error naming ``where``.
    """
    missing: list[str] = []
    if src.DESCRIPTOR.name in _WIRE_COPIED and dst.DESCRIPTOR.name == src.DESCRIPTOR.name:
        dst.MergeFromString(src.SerializeToString())
        return missing
    for fd, value in src.ListFields():
        if fd.name in skip:
            continue
        target = dst.DESCRIPTOR.fields_by_name.get(fd.name)
        if target is None or (target.message_type is None) != (fd.message_type is None):
            if strict:
                raise Caffe2xError(f"{where}.{fd.name} is a field caffe2x does not know; it may change the "
                                   f"numbers, so caffe2x stops (register a handler that reads it, or drop it)")
            missing.append(fd.name)
            continue
        sub = f"{where}.{fd.name}"
        if fd.message_type is not None:
            if is_repeated(fd):
                for item in value:
                    _copy(item, getattr(dst, fd.name).add(), sub, True)
            else:
                _copy(value, getattr(dst, fd.name), sub, True)
            continue
        values = list(value) if is_repeated(fd) else [value]
        if fd.enum_type is not None:
            values = [_enum_value(fd, target, v, sub) for v in values]
        try:
            if is_repeated(fd):
                getattr(dst, fd.name).extend(values)
            else:
                setattr(dst, fd.name, values[0])
        except (TypeError, ValueError) as exc:
            raise Caffe2xError(f"{sub} has a type caffe2x's schema does not ({exc})") from None
    return missing


def _enum_value(fd: Any, target: Any, value: int, where: str) -> int:
    name = fd.enum_type.values_by_number[value].name if value in fd.enum_type.values_by_number else None
    if target.enum_type is None:
        raise Caffe2xError(f"{where} is an enum in the fork schema but not in caffe2x's")
    ours = target.enum_type.values_by_name.get(name) if name is not None else None
    if ours is None:
        raise Caffe2xError(f"{where}: value {name or value} is not one caffe2x knows")
    return int(ours.number)


def to_caffe2x(fork_net: Any, source: str) -> Any:
    """``fork_net`` (parsed with a fork schema) as caffe2x's ``NetParameter`` (a :class:`NetView` when
    some layer has fork-only fields)."""
    from caffe2x.caffe.proto import caffe_pb2

    ours = caffe_pb2.NetParameter()
    # net-level fields caffe2x lacks are the fork's bookkeeping (they name no layer settings): skipped
    _copy(fork_net, ours, source, False, skip=("layer",))
    layers = list(fork_net.layer) if "layer" in fork_net.DESCRIPTOR.fields_by_name else []
    view_layers: list[Any] = []
    for fork_layer in layers:
        layer = ours.layer.add()
        name = fork_layer.name if has_field(fork_layer, "name") else "?"
        extra = _copy(fork_layer, layer, f"{source}: layer {name!r}", False)
        view_layers.append(ForkLayer(layer, fork_layer, set(extra)) if extra else layer)
    if any(isinstance(l, ForkLayer) for l in view_layers):
        return NetView(ours, view_layers)
    return ours
