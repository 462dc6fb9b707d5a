"""safetensors target: every tensor in one file, and the graph itself in the header metadata.

Keys are the graph's tensor keys, ``<caffe layer name>.<role>``:

=============  =========================================================
Caffe layer    keys
=============  =========================================================
Convolution    ``<layer>.weight`` (O, C/group, kh, kw), ``<layer>.bias`` (O)
InnerProduct   ``<layer>.weight`` (O, I) in Caffe's C,H,W input order, ``<layer>.bias``
BatchNorm      ``<layer>.running_mean``, ``<layer>.running_var`` (moving-average factor divided out)
Scale          ``<layer>.weight`` (gamma), ``<layer>.bias`` (beta)
=============  =========================================================

``__metadata__`` holds ``caffe2x.graph`` (the graph's JSON, see :meth:`caffe2x.graph.ir.Graph.structure`), so :func:`read_graph` rebuilds the exact graph with no caffemodel at hand: the
neutral graph is itself a file format. Written as the bytes the safetensors library's ``save_file``
writes (pinned against it by the tests), streamed from the graph's arrays, views of the mapped
caffemodel: no copy, and each written chunk's pages released; read by the library (``safe_open`` for
the metadata, ``deserialize`` for the tensors); no torch or tensorflow is imported.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.graph.pages import file_span, mapping, release_map, unwritten
from caffe2x.graph.numeric import dtype_name, from_bfloat16_bits

SUFFIXES = (".safetensors",)


def _cast(arr: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        import ml_dtypes  # numpy has no bfloat16; ml_dtypes gives safetensors a dtype named 'bfloat16'

        return np.ascontiguousarray(arr, dtype=np.float32).astype(ml_dtypes.bfloat16)
    return np.ascontiguousarray(arr, dtype=np.dtype(dtype))


def write(graph: Graph, path: Path, options) -> list[str]:  # type: ignore[no-untyped-def]
    """Write all tensors (cast to ``options.dtype``) and the graph's JSON into one safetensors file."""
    if options.profile is not None:
        raise Caffe2xError(f"the safetensors target has no naming profile {options.profile!r}")
    # One metadata key: safetensors writes ``__metadata__`` in hash order (safetensors issue #584), so two
    # keys would make two runs' files differ; the per-tensor dtypes are in the header already.
    metadata = {"caffe2x.graph": graph.to_json()}
    write_tensors(path, graph.tensors, metadata, options.dtype)
    return []


#: safetensors' dtype tags of the dtypes caffe2x writes, in the library's tensor order (its dtype enum,
#: highest first: F32, BF16, F16; then by name)
_TAGS = {"float32": ("F32", 0), "bfloat16": ("BF16", 1), "float16": ("F16", 2)}
#: bytes handed to one ``os.write`` (and then released from the mapping) at a time
CHUNK = 16 << 20
#: the buffer a mapped file's bytes are read into and written out of: small enough to stay in the CPU's
#: cache, large enough for few calls (ResNet-50: 1-4 MiB 0.040 s, 64 KiB 0.060 s, 16 MiB 0.047 s)
BOUNCE = 1 << 20


def header(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> tuple[bytes, list[str]]:
    """The safetensors header the library's ``save_file`` writes for these arrays, and the tensor order.

    The format (safetensors' README): an 8-byte little-endian length, then a JSON object padded with
    spaces to a multiple of 8 bytes: ``__metadata__`` first, then each tensor's dtype, shape and byte
    range of the data that follows, in the order the data is laid out. The library orders tensors by
    dtype (F32, BF16, F16) and then name, and its JSON escapes like Python's ``ensure_ascii=False``;
    ``tests/targets/test_safetensors_header.py`` pins these bytes against ``save_file`` itself.
    """
    import json

    order = sorted(tensors, key=lambda k: (_TAGS[dtype_name(tensors[k].dtype)][1], k.encode("utf-8", "surrogatepass")))
    entries: dict[str, dict[str, Any]] = {}
    offset = 0
    for key in order:
        arr = tensors[key]
        end = offset + arr.nbytes
        entries[key] = {"dtype": _TAGS[dtype_name(arr.dtype)][0], "shape": list(arr.shape), "data_offsets": [offset, end]}
        offset = end
    # two calls of the C encoder rather than one per tensor; the tensors' object spliced in after the metadata
    compact: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":")}
    body = json.dumps(entries, **compact)
    joined = '{"__metadata__":' + json.dumps(metadata, **compact) + ("," + body[1:] if entries else "}")
    try:
        text = joined.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (from an untrusted graph's JSON escapes)
        raise Caffe2xError(f"a tensor name or the metadata is not valid Unicode text: {exc.reason}") from None
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text, order


def write_tensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str],
                  dtype: str = "float32") -> None:
    """One safetensors file, the bytes ``save_file`` writes, streamed straight from the arrays (see
    :func:`stream`): the model is never resident all at once (ResNet-50: peak RSS 38 MiB, where the
    library's one call kept the whole 98 MiB resident). float16/bfloat16 are cast first (one cast copy,
    at half size)."""
    stream(path, {key: _cast(arr, dtype) for key, arr in tensors.items()}, metadata)


def stream(path: str | Path, out: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write contiguous float32/float16/bfloat16 arrays as one safetensors file (see :func:`write_tensors`).

    An array that is an untouched view of a mapped caffemodel is read from the model file itself
    (:func:`caffe2x.graph.pages.file_span`) into a ``BOUNCE``-byte buffer and written from it: none of
    the map's pages is faulted into this process, where writing straight from the map faults each one
    (ResNet-50's 98 MiB: 0.040 s against 0.07-0.09 s; ``sendfile`` per tensor, 0.052 s: the kernel copies
    unaligned ranges page piece by page piece). Any other array goes out of memory ``CHUNK`` bytes at a time.
    """
    head, order = header(out, metadata)
    # No O_TRUNC: on ext4, truncating even an empty file (atomic_output's fresh temporary) makes close()
    # flush the whole file (auto_da_alloc's replace-via-truncate rule: 7-35 ms for ResNet-50's 98 MiB);
    # a longer existing file is cut to size after the write instead.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        _write_all(fd, head)
        writer = _Writer(fd)
        for key in order:
            writer.array(out[key])
        size = len(head) + sum(arr.nbytes for arr in out.values())
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)
    finally:
        os.close(fd)


class _Writer:
    """Appends arrays to an open file: a view that still shows its mapped file's bytes is read from that
    file into one small reused buffer and written from there; any other array from memory."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer: memoryview | None = None
        self.maps: dict[int, Any] = {}  # the maps written from memory, released as the write goes on
        self.since_release = 0
        self.clean: dict[int, bool] = {}  # per map: no page of it written since mapping (checked once)

    def array(self, arr: np.ndarray) -> None:
        if not arr.nbytes:
            return
        mm = mapping(arr)
        span = None
        if mm is not None and hasattr(os, "preadv"):  # preadv: POSIX systems (not Windows)
            if id(mm) not in self.clean:
                self.clean[id(mm)] = unwritten(mm)
            span = file_span(arr, mm) if self.clean[id(mm)] else None
        if span is None:
            self._write(arr, mm)
        else:
            self._copy(*span, arr.nbytes)

    def _copy(self, source: int, offset: int, count: int) -> None:
        if self.buffer is None:
            self.buffer = memoryview(bytearray(BOUNCE))
        done = 0
        while done < count:
            n = os.preadv(source, [self.buffer[:min(count - done, BOUNCE)]], offset + done)
            if n == 0:  # the model file is shorter than when it was mapped
                raise Caffe2xError("the caffemodel got shorter while it was being converted (another program "
                                   "is writing it?)")
            _write_all(self.fd, self.buffer[:n])
            done += n

    def _write(self, arr: np.ndarray, mm: Any) -> None:
        if mm is not None:
            self.maps.setdefault(id(mm), mm)
        flat = arr.reshape(-1).view(np.uint8)
        for begin in range(0, flat.size, CHUNK):
            part = flat[begin:begin + CHUNK]
            _write_all(self.fd, memoryview(part))  # type: ignore[arg-type]
            self.since_release += part.size
            if self.since_release >= CHUNK and self.maps:
                # whole maps, not just this chunk: a fault maps whole page-cache folios (up to 2 MB)
                # around what it reads, beyond the chunk and into tensors written before
                for m in self.maps.values():
                    release_map(m)
                self.since_release = 0


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view.nbytes:
        view = view[os.write(fd, view):]


def read_graph(path: str | Path, max_bytes: int | None = None) -> Graph:
    """The graph stored in a caffe2x safetensors file (tensors come back as float32).

    The metadata is untrusted: its JSON nesting is measured before parsing, its structure and then
    the whole graph go through :mod:`caffe2x.graph.checks` like a graph read from Caffe, and every tensor
    the graph names must be in the file with the shape the graph records.
    """
    import json

    from safetensors import SafetensorError, deserialize, safe_open

    from caffe2x.graph import checks

    p = Path(path)
    if not p.is_file():
        raise Caffe2xError(f"{p}: no such file")
    try:
        with safe_open(str(p), framework="numpy") as f:  # the header only: metadata before any tensor
            header_meta = f.metadata() or {}
        entries = deserialize(p.read_bytes())
    except (SafetensorError, ValueError) as exc:
        raise Caffe2xError(f"{p} is not a valid safetensors file: {exc}") from None
    if "caffe2x.graph" not in header_meta:
        raise Caffe2xError(f"{p} has no caffe2x graph in its metadata (a plain state dict cannot be "
                           f"loaded as a graph; convert from the caffemodel instead)")
    text = header_meta["caffe2x.graph"]
    if not isinstance(text, str):
        raise checks.GraphError(f"{p}: the caffe2x.graph metadata is not a string")
    depth = checks.json_depth(text)
    if depth > checks.MAX_JSON_DEPTH:
        raise checks.GraphError(f"{p}: the caffe2x.graph metadata is nested {depth} deep (a graph needs 5)")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise checks.GraphError(f"{p}: the caffe2x.graph metadata is not valid JSON: {exc}") from None
    checks.check_structure(data, str(p))
    tensors = {name: _decode(info) for name, info in entries}
    try:
        graph = Graph.from_structure(data, tensors)
    except Caffe2xError as exc:
        raise checks.GraphError(f"{p}: {exc}") from None
    for key, info in data["tensors"].items():
        if list(graph.tensors[key].shape) != info["shape"]:
            raise checks.GraphError(f"{p}: tensor {key!r} has shape {list(graph.tensors[key].shape)} in the file, "
                                    f"the graph records {info['shape']}")
    checks.check_graph(graph, str(p), limit=max_bytes)
    return graph


def read_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of any safetensors file, as float32 numpy arrays (for artifact checks)."""
    from safetensors import SafetensorError, deserialize

    try:
        return {name: _decode(info) for name, info in deserialize(Path(path).read_bytes())}
    except (SafetensorError, ValueError, OSError) as exc:
        raise Caffe2xError(f"{path} is not a readable safetensors file: {exc}") from None


def _decode(info: dict) -> np.ndarray:  # type: ignore[type-arg]
    dtype, shape, data = info["dtype"], info["shape"], info["data"]
    if dtype in ("F32", "float32"):
        arr = np.frombuffer(data, dtype="<f4")
    elif dtype in ("F16", "float16"):
        arr = np.frombuffer(data, dtype="<f2").astype(np.float32)
    elif dtype in ("BF16", "bfloat16"):
        arr = from_bfloat16_bits(np.frombuffer(data, dtype="<u2"))
    else:
        raise Caffe2xError(f"tensor dtype {dtype} is not a float type caffe2x reads")
    return arr.astype(np.float32).reshape(shape)
