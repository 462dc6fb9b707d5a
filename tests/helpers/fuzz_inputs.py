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
  or deleted.

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
