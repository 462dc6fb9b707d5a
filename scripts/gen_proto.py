#!/usr/bin/env python
"""Regenerate ``caffe2x/caffe/proto/caffe_pb2.py`` from ``proto/caffe.proto``.

Runs the protoc bundled with ``grpcio-tools``, so no system protoc is needed. The output depends
only on the .proto file and the grpcio-tools version.

Which grpcio-tools: **1.65.5** (``GRPCIO_TOOLS_VERSION`` below). Its protoc writes "protobuf 5.26.1"
gencode, the newest gencode that makes no ``runtime_version`` check: the committed module imports
and passes the tests, with no warning, on every protobuf runtime from 3.20.3 to 7.36.2 (upb and
pure-Python; the measured matrix is in ``docs/protobuf.md``). grpcio-tools 1.66 and later emit a
version check that fails on runtimes older than the gencode (and warns on 6.30-6.31 for 5.x
gencode); 1.85 emits 7.35.1 gencode, which needs ``protobuf>=7.35.1``. grpcio-tools 1.63.2 and
1.64.3 write the same bytes as 1.65.5; 1.62.x writes 4.25.1 gencode with the same range.

grpcio-tools 1.65.5 itself requires ``protobuf<6`` (and has wheels for CPython up to 3.12 only), so
it cannot live in the project's test environment next to protobuf 7 / TensorFlow; regenerate in a
throwaway venv instead (this script needs only the standard library and grpc_tools)::

    python3.12 -m venv /tmp/gt && /tmp/gt/bin/pip install grpcio-tools==1.65.5
    /tmp/gt/bin/python scripts/gen_proto.py      # rewrites caffe2x/caffe/proto/caffe_pb2.py

The schema is registered as ``caffe2x/caffe/proto/caffe.proto`` in package ``caffe2x_caffe`` (see
:func:`generate`), never as pycaffe's ``caffe.proto`` / ``caffe``.

``tests/caffe/test_proto.py`` compares a regeneration byte-for-byte with the committed module when
grpcio-tools 1.65.5 is the one installed (and skips that test otherwise), and with any installed
grpcio-tools compares the schema: the serialized ``FileDescriptorProto`` embedded in the module,
which every protoc version writes the same.

Usage::

    python scripts/gen_proto.py                 # rewrites caffe2x/caffe/proto/caffe_pb2.py
    python scripts/gen_proto.py --out-dir /tmp/x
"""
from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "proto"
PROTO_FILE = PROTO_DIR / "caffe.proto"
DEFAULT_OUT_DIR = REPO_ROOT / "caffe2x" / "caffe" / "proto"
# The grpcio-tools release whose protoc made the committed caffe_pb2.py (see the docstring).
GRPCIO_TOOLS_VERSION = "1.65.5"
# The directory the schema is compiled under: its registered file name is caffe2x/caffe/proto/caffe.proto.
PRIVATE_PREFIX = ("caffe2x", "caffe", "proto")


def installed_grpcio_tools_version() -> str | None:
    """The installed grpcio-tools version, or ``None`` when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:
        return None


def generate(out_dir: Path = DEFAULT_OUT_DIR, proto_file: Path = PROTO_FILE) -> Path:
    """Compile ``proto_file`` into ``out_dir`` and return the path of the generated ``*_pb2.py``.

    The file is compiled under the private name ``caffe2x/caffe/proto/<stem>.proto`` (a copy staged in a
    temporary directory), so the module registers that name, not ``caffe.proto``, in protobuf's
    default descriptor pool: pycaffe's own ``caffe_pb2`` registers ``caffe.proto`` and the two must
    coexist in one process. The name also makes the generated classes' ``__module__``
    ``caffe2x.caffe.proto.<stem>_pb2``, where they live.

    Raises ``RuntimeError`` if protoc reports an error, and ``ImportError`` if grpcio-tools is
    missing.
    """
    import shutil
    import tempfile

    from grpc_tools import protoc  # imported lazily: only needed when regenerating

    out_dir = Path(out_dir).resolve()
    proto_file = Path(proto_file).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    with tempfile.TemporaryDirectory(prefix="caffe2x-gen-") as tmp:
        staged_dir = Path(tmp, "src", *PRIVATE_PREFIX)
        staged_dir.mkdir(parents=True)
        staged = staged_dir / proto_file.name
        shutil.copyfile(proto_file, staged)
        gen_dir = Path(tmp, "out")
        gen_dir.mkdir()
        argv = [
            "grpc_tools.protoc",  # argv[0], ignored by protoc
            f"-I{Path(tmp, 'src')}",
            f"-I{well_known}",
            f"--python_out={gen_dir}",
            str(staged),
        ]
        rc = protoc.main(argv)
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc} on {proto_file}")
        name = f"{proto_file.stem}_pb2.py"
        target = out_dir / name
        shutil.copyfile(gen_dir.joinpath(*PRIVATE_PREFIX, name), target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                        help=f"directory for caffe_pb2.py (default: {DEFAULT_OUT_DIR.relative_to(REPO_ROOT)})")
    parser.add_argument("--proto", type=Path, default=PROTO_FILE,
                        help=f"schema to compile (default: {PROTO_FILE.relative_to(REPO_ROOT)})")
    args = parser.parse_args(argv)
    try:
        path = generate(args.out_dir, args.proto)
    except (ImportError, RuntimeError) as exc:
        print(f"gen_proto: {exc}", file=sys.stderr)
        return 1
    installed = installed_grpcio_tools_version()
    if installed != GRPCIO_TOOLS_VERSION:
        print(f"gen_proto: warning: grpcio-tools {installed} is installed, but the committed caffe_pb2.py "
              f"comes from grpcio-tools {GRPCIO_TOOLS_VERSION}; this output is other gencode "
              f"(see this script's docstring)", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
