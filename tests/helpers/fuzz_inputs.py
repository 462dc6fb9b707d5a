"""Fuzz caffe2x's readers with hypothesis; run as a script (``tests/test_fuzz.py`` starts it in a child
process under an address-space limit, ``bench/fuzz.py`` runs it longer).

Every case must end in success or a :class:`caffe2x.Caffe2xError`; any other exception (MemoryError
included: the child runs under RLIMIT_AS) fails the run, and no file may be left in the output
directory by a failed case. Mutations:

- caffemodel: byte flips, truncation at every protobuf field boundary (top level and nested), length
  varints inflated to huge values, keys rewritten to the wrong wire type;
- prototxt: numbers replaced by extreme values, lines deleted or duplicated, layer types swapped,
  random bytes inserted;
- graph JSON (safetensors metadata): any node of the JSON tree replaced by an arbitrary JSON value,
  or deleted;
- caffemodel blob dims: negative pairs whose product is the payload's, zero, huge, an int64-wrapping
  product, arbitrary ints, in the modern and the legacy spelling;
- input shapes: ``input_shape=`` of load (any value: zero, negative, huge, floats, strings, bools) and
  a run at any array shape and dtype the caller gives (broadcast views: a huge shape costs nothing
  until caffe2x would copy it);
- a Python Proposal layer's ``param_str``: known and unknown keys with hostile values (inf, nan, past
  int64, YAML object tags, calls), and arbitrary text.

Prints one line per kind with the number of cases tried, and a total line.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe import reader
from caffe2x.errors import Caffe2xError

COUNTS: dict[str, int] = {}
OUT = Path(tempfile.mkdtemp(prefix="caffe2x-fuzz-"))
atexit.register(shutil.rmtree, OUT, ignore_errors=True)  # the fuzz child leaves nothing in /tmp


# --------------------------------------------------------------------------- protobuf wire walking
def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("bad varint")
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        shift += 7
        if not b & 0x80:
            return value, i


def fields(data: bytes, base: int = 0, depth: int = 0) -> list[tuple[int, int, int, int]]:
    """(start, key_end, value_start, end) of every field, recursing into nested messages."""
    out: list[tuple[int, int, int, int]] = []
    i = 0
    while i < len(data):
        start = i
        key, i = _varint(data, i)
        wire = key & 7
        key_end = i
        if wire == 0:
            _, i = _varint(data, i)
            value_start = key_end
        elif wire == 1:
            value_start, i = i, i + 8
        elif wire == 5:
            value_start, i = i, i + 4
        elif wire == 2:
            n, value_start = _varint(data, i)
            i = value_start + n
        else:
            raise ValueError("unknown wire type")
        if i > len(data):
            raise ValueError("field past the end")
        out.append((base + start, base + key_end, base + value_start, base + i))
        if wire == 2 and depth < 3 and i - value_start > 1:
            try:
                out += fields(data[value_start:i], base + value_start, depth + 1)
            except ValueError:
                pass  # not a message (a string or packed floats)
    return out


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


# --------------------------------------------------------------------------- seeds
TEXT = fixtures.prototxt_for("tiny")
MODEL = fixtures.synthesize(TEXT, 0)
FIELDS = fields(MODEL)
LENGTH_FIELDS = [f for f in FIELDS if f[2] != f[1] and MODEL[f[0]] & 7 == 2]
GRAPH = reader.read_bytes(MODEL, TEXT)
STRUCTURE = GRAPH.structure()
TENSORS = dict(GRAPH.tensors)
X = np.zeros((1, *GRAPH.inputs["data"][1:]), np.float32)
TINY = (OUT.parent / f"{OUT.name}-tiny.caffemodel", OUT.parent / f"{OUT.name}-tiny.prototxt")
TINY[0].write_bytes(MODEL)
TINY[1].write_text(TEXT)
for _path in TINY:
    atexit.register(_path.unlink, missing_ok=True)


def attempt(kind: str, fn: Any) -> None:
    """Run one case: success or Caffe2xError, and nothing left in the output directory on failure."""
    COUNTS[kind] = COUNTS.get(kind, 0) + 1
    for p in OUT.iterdir():
        p.unlink()
    try:
        fn()
    except Caffe2xError as exc:
        assert "\n" not in str(exc), f"multi-line message: {exc!r}"
        left = [p.name for p in OUT.iterdir()]
        assert not left, f"files left after an error: {left}"
        return
    left = [p.name for p in OUT.iterdir() if ".part" in p.name]
    assert not left, f"temporary files left: {left}"


def _use(graph: Any) -> None:
    """What a user does next with a graph that loaded: run it and save it."""
    caffe2x.run(graph, np.zeros((1, *next(iter(graph.inputs.values()))[1:]), np.float32))
    caffe2x.save(graph, OUT / "g.safetensors")


def from_model(data: bytes) -> None:
    """The caffemodel as the blobs of the prototxt's net, then as a net of its own."""
    _use(reader.read_bytes(data, TEXT, model_name="fuzz.caffemodel"))
    for p in OUT.iterdir():
        p.unlink()
    _use(reader.read_bytes(data, None, (1, 3, 32, 32), model_name="fuzz.caffemodel"))


# --------------------------------------------------------------------------- strategies
@st.composite
def flipped(draw: Any) -> bytes:
    data = bytearray(MODEL)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data)


@st.composite
def truncated(draw: Any) -> bytes:
    field = draw(st.sampled_from(FIELDS))
    cut = draw(st.sampled_from(field))  # at the field's start, after its key, its value start or its end
    return MODEL[:cut]


@st.composite
def inflated(draw: Any) -> bytes:
    start, key_end, value_start, end = draw(st.sampled_from(LENGTH_FIELDS))
    n = draw(st.sampled_from([end - value_start + 1, 2**31 - 1, 2**31, 2**32 + 5, 2**62, 2**63 - 1]))
    return MODEL[:key_end] + encode_varint(n) + MODEL[value_start:]


@st.composite
def wrong_wire(draw: Any) -> bytes:
    start, key_end, _, _ = draw(st.sampled_from(FIELDS))
    key, _ = _varint(MODEL, start)
    wire = draw(st.sampled_from([w for w in (0, 1, 2, 3, 4, 5, 6, 7) if w != key & 7]))
    return MODEL[:start] + encode_varint((key & ~7) | wire) + MODEL[key_end:]


NUMBER = re.compile(r"(?<=: )-?\d+(\.\d+)?(e-?\d+)?")
EXTREMES = ["0", "-1", "1", "2", "3", "65536", "2147483647", "2147483648", "4294967296", "9223372036854775807",
            "-2147483648", "1e9", "1e40", "0.0", "-0.5", "nan", "inf", "1000000000"]
TYPES = ["Convolution", "Pooling", "InnerProduct", "Concat", "Eltwise", "Split", "Flatten", "Softmax", "LRN",
         "BatchNorm", "Scale", "ReLU", "Deconvolution", "Input", "Data", "Bogus", "PReLU", "Dropout"]


@st.composite
def prototxt(draw: Any) -> str:
    lines = TEXT.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["number", "number", "delete", "duplicate", "type", "garbage"]))
        if how == "number" and NUMBER.search(lines[i]):
            lines[i] = NUMBER.sub(draw(st.sampled_from(EXTREMES)), lines[i], count=1)
        elif how == "delete":
            del lines[i]
        elif how == "duplicate":
            lines.insert(i, lines[i])
        elif how == "type" and "type:" in lines[i]:
            lines[i] = f'\ttype: "{draw(st.sampled_from(TYPES))}"'
        elif how == "garbage":
            lines[i] = lines[i] + draw(st.text(alphabet='{}":# \n\t0123456789abz-_.', max_size=8))
        if not lines:
            lines = ["x"]
    return "\n".join(lines)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:  # type: ignore[type-arg]
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(STRUCTURE)
NODE_PATHS = [p for p in PATHS if p[:1] == ("nodes",) and len(p) > 2]


@st.composite
def graph_json(draw: Any) -> str:
    data = json.loads(json.dumps(STRUCTURE))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(NODE_PATHS if draw(st.booleans()) else PATHS))
        parent, node = None, data
        try:
            for k in path:
                parent, node = node, node[k]
        except (KeyError, IndexError, TypeError):
            continue
        if parent is None:
            data = draw(JSON_VALUES)
            continue
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return json.dumps(data)


def from_graph_json(text: str) -> None:
    from safetensors.numpy import save_file

    src = OUT.parent / f"{OUT.name}-in.safetensors"
    save_file(TENSORS, src, metadata={"caffe2x.graph": text})
    try:
        _use(caffe2x.load(src))
    finally:
        src.unlink(missing_ok=True)


# --------------------------------------------------------------------------- blob dims
def _blob_dims_model(dims: list[int], legacy: bool, layer: str, blob: int) -> bytes:
    from caffe2x.caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter.FromString(MODEL)
    target = [l for l in net.layer if len(l.blobs) > blob and l.name == layer][0]
    b = target.blobs[blob]
    b.ClearField("shape")
    for f in ("num", "channels", "height", "width"):
        b.ClearField(f)
    if legacy:
        b.num, b.channels, b.height, b.width = (dims + [1, 1, 1, 1])[:4]
    else:
        b.shape.dim.extend(dims)
    return net.SerializeToString()


BLOBS = [(l.name, i, len(b.data)) for l in __import__("caffe2x.caffe.proto.caffe_pb2", fromlist=["x"]).NetParameter
         .FromString(MODEL).layer for i, b in enumerate(l.blobs)]


@st.composite
def blob_dims(draw: Any) -> bytes:
    """A blob's dims rewritten: negative pairs whose product is the payload's, zero, huge, wrapping int64."""
    layer, index, count = draw(st.sampled_from(BLOBS))
    legacy = draw(st.booleans())
    bound = 2**31 - 1 if legacy else 2**63 - 1  # legacy dims are int32 fields
    how = draw(st.sampled_from(["negated", "zero", "huge", "wrapping", "any"]))
    if how == "negated":
        dims = [-count, -1] if count > 1 else [-1, -1]
    elif how == "zero":
        dims = [count, 0]
    elif how == "huge":
        dims = [count, draw(st.integers(2**31, bound))] if not legacy else [count, 2**31 - 1]
    elif how == "wrapping" and not legacy and count & (count - 1) == 0:
        dims = [count, 2**64 // count + 1]  # numpy's int64 product wraps around to ``count``
        dims = [d if d < 2**63 else 2**63 - 1 for d in dims]
    else:
        dims = draw(st.lists(st.integers(-(bound + 1), bound), min_size=1, max_size=4))
    return _blob_dims_model(dims, legacy, layer, index)


# --------------------------------------------------------------------------- input shapes (any-size nets)
SHAPE_VALUES = st.one_of(
    st.lists(st.integers(-2**33, 2**33), min_size=0, max_size=5),
    st.lists(st.sampled_from([0, -1, 1, 2, 3, 32, 33, 2**31 - 1, 2**31, 2**63]), min_size=4, max_size=4),
    st.lists(st.one_of(st.floats(allow_nan=True), st.booleans(), st.text(max_size=3), st.none()), max_size=4),
    st.text(max_size=12), st.none(), st.floats(), st.integers(),
)


@st.composite
def run_shapes(draw: Any) -> tuple[Any, tuple[int, ...] | None, str]:
    """``input_shape=`` of load (any value), then a run at an array shape of the caller's (zero-size,
    other sizes, huge: broadcast views, so the caller's array itself costs nothing) and dtype."""
    given = draw(SHAPE_VALUES)
    dims = draw(st.one_of(st.none(), st.tuples(st.integers(0, 4096), st.integers(0, 8), st.integers(0, 70_000),
                                               st.integers(0, 70_000)),
                          st.lists(st.integers(0, 64), min_size=0, max_size=6).map(tuple)))
    dtype = draw(st.sampled_from(["float32", "float64", "int64", "bool", "complex64", "U3", "object"]))
    return given, dims, dtype


def from_run_shape(case: tuple[Any, tuple[int, ...] | None, str]) -> None:
    given, dims, dtype = case
    graph = caffe2x.load(TINY[0], TINY[1], input_shape=given) if given is not None else GRAPH
    if dims is not None:
        x = np.broadcast_to(np.zeros((), dtype=dtype), dims)
        caffe2x.run(graph, x)
    caffe2x.save(graph, OUT / "g.safetensors")


# --------------------------------------------------------------------------- Python layers' param_str
PROPOSAL_NET = ('name: "rpn"\ninput: "cls"\ninput_shape {{ dim: 1 dim: 18 dim: 4 dim: 4 }}\n'
                'input: "bbox"\ninput_shape {{ dim: 1 dim: 36 dim: 4 dim: 4 }}\n'
                'input: "im_info"\ninput_shape {{ dim: 1 dim: 3 }}\n'
                'layer {{ name: "proposal" type: "Python" bottom: "cls" bottom: "bbox" bottom: "im_info" '
                'top: "rois" python_param {{ module: "rpn.proposal_layer" layer: "ProposalLayer" '
                'param_str: {param} }} }}\n')
PARAM_KEYS = ["feat_stride", "scales", "ratios", "pre_nms_topN", "post_nms_topN", "nms_thresh", "min_size",
              "__import__", "os", "bogus", ""]
PARAM_VALUES = ["16", "0", "-16", "1e999", "-1e999", "nan", "2**64", "10**10", "[8, 16, 32]", "[]", "[0]", "[-1]",
                "!!python/tuple [4, 8]", "!!python/object/apply:os.system ['true']", "__import__('os')",
                "'text'", "True", "None", "(1,)", "[[1]]", "1" * 5000, "[" * 300 + "]" * 300, "{}", "0.7",
                "2147483648", "9223372036854775808"]


@st.composite
def param_str(draw: Any) -> str:
    if draw(st.integers(0, 4)) == 0:  # anything at all, protobuf-escaped into the prototxt
        text = draw(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40))
    else:
        entries = draw(st.lists(st.tuples(st.sampled_from(PARAM_KEYS), st.sampled_from(PARAM_VALUES)),
                                min_size=0, max_size=5))
        sep = draw(st.sampled_from([", ", "\n", "; ", ","]))
        text = sep.join(f"'{k}': {v}" for k, v in entries)
        if draw(st.booleans()):
            text = "{" + text + "}"
    return PROPOSAL_NET.format(param=json.dumps(text))


def from_param_str(text: str) -> None:
    graph = reader.read_bytes(None, text, prototxt_name="fuzz.prototxt")
    caffe2x.run(graph, {name: np.zeros(shape, np.float32) + (1 if name == "im_info" else 0)
                        for name, shape in graph.inputs.items()})
    caffe2x.save(graph, OUT / "g.safetensors")


# --------------------------------------------------------------------------- driver
def _case(kind: str, fn: Any) -> Any:
    def case(value: Any) -> None:
        attempt(kind, lambda: fn(value))
    return case


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=int(os.environ.get("CAFFE2X_FUZZ_EXAMPLES", "60")),
                    help="hypothesis examples per mutation kind")
    ap.add_argument("--seed", type=int, default=0, help="0: derandomised (the same cases every run)")
    args = ap.parse_args()
    opts = dict(max_examples=args.examples, deadline=None, database=None, derandomize=args.seed == 0,
                suppress_health_check=list(HealthCheck))
    kinds = {
        "caffemodel byte flips": (flipped(), from_model),
        "caffemodel truncated at a field boundary": (truncated(), from_model),
        "caffemodel inflated length varints": (inflated(), from_model),
        "caffemodel wrong wire types": (wrong_wire(), from_model),
        "prototxt mutations": (prototxt(), lambda t: _use(reader.read_bytes(None, t, prototxt_name="fuzz.prototxt"))),
        "graph JSON mutations": (graph_json(), from_graph_json),
        "caffemodel blob dims": (blob_dims(), from_model),
        "input shapes of load and run": (run_shapes(), from_run_shape),
        "Python layer param_str": (param_str(), from_param_str),
    }
    started = time.perf_counter()
    for kind, (strategy, fn) in kinds.items():
        run = settings(**opts)(given(strategy)(_case(kind, fn)))
        if args.seed:
            run = __import__("hypothesis").seed(args.seed)(run)
        run()
        print(f"fuzz: {kind}: {COUNTS.get(kind, 0)} cases", flush=True)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fuzz: total {sum(COUNTS.values())} cases, 0 escaped, peak RSS {peak:.0f} MB, "
          f"{time.perf_counter() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
