#!/usr/bin/env python
"""Regenerate ``caffe2x/proto/caffe_pb2.py`` from ``proto/caffe.proto``.

Runs the protoc bundled with ``grpcio-tools`` (``pip install grpcio-tools``), so no system protoc is
needed. The output depends only on the .proto file and the grpcio-tools version, which lets
``tests/test_proto.py`` regenerate into a temporary directory and compare byte-for-byte with the
committed module.

Usage::

    python scripts/gen_proto.py                 # rewrites caffe2x/proto/caffe_pb2.py
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
DEFAULT_OUT_DIR = REPO_ROOT / "caffe2x" / "proto"


def generate(out_dir: Path = DEFAULT_OUT_DIR, proto_file: Path = PROTO_FILE) -> Path:
    """Compile ``proto_file`` into ``out_dir`` and return the path of the generated ``*_pb2.py``.

    Raises ``RuntimeError`` if protoc reports an error, and ``ImportError`` if grpcio-tools is
    missing.
    """
    from grpc_tools import protoc  # imported lazily: only needed when regenerating

    out_dir = Path(out_dir).resolve()
    proto_file = Path(proto_file).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    argv = [
        "grpc_tools.protoc",  # argv[0], ignored by protoc
        f"-I{proto_file.parent}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        str(proto_file),
    ]
    rc = protoc.main(argv)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(argv)}")
    return out_dir / f"{proto_file.stem}_pb2.py"


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
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
