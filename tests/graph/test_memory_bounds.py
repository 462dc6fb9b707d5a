"""Small hostile files must not take large memory: each case runs the real command line in a child
process under an address-space limit (RLIMIT_AS) and must end in one clear error, not a MemoryError,
a kill or an 8 GB allocation."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

#: address space for the child: python + numpy + protobuf + onnx fit in ~400 MB
LIMIT = 1536 << 20


def limited(*args: str, limit: int = LIMIT) -> subprocess.CompletedProcess[str]:
    """``caffe2x convert MODEL -p PROTO -o OUT`` (MODEL '-': the weightless library call) under RLIMIT_AS."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    model, proto, out = args
    code = f"""
import sys, caffe2x
from caffe2x.cli import main
if {model!r} != "-":
    sys.exit(main(["convert", {model!r}, "-p", {proto!r}, "-o", {out!r}]))
try:
    caffe2x.save(caffe2x.load(None, {proto!r}), {out!r})
except caffe2x.Caffe2xError as exc:
    print(f"error: {{exc}}", file=sys.stderr)
    sys.exit(2)
"""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          preexec_fn=cap, env=env)


def one_error(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and pattern in errors[0], proc.stderr


@pytest.mark.parametrize("weights,net,suffix,pattern", [
    # input_dim: 1000000000 converted to ONNX reached 7.7 GB
    (True, 'input: "data"\ninput_dim: 1000000000\ninput_dim: 3\ninput_dim: 224\ninput_dim: 224\n'
     'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n', ".onnx", "input 'data' of shape"),
    # a weightless num_output: 16777216 reached 6.2 GB
    (False, 'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\nlayer { name: "c" type: "Convolution" '
     'bottom: "data" top: "c" convolution_param { num_output: 16777216 kernel_size: 7 } }\n',
     ".safetensors", "layer 'c' weight tensor [16777216, 3, 7, 7]"),
    # a 512 GiB weightless InnerProduct
    (False, 'input: "data"\ninput_shape { dim: 1 dim: 65536 }\nlayer { name: "fc" type: "InnerProduct" bottom: "data" '
     'top: "fc" inner_product_param { num_output: 2097152 } }\n', ".onnx", "512.0 GiB"),
    # a forward pass (the weightless net's calibration) far over the limit, every value small on its own
    (False, 'input: "data"\ninput_shape { dim: 1 dim: 16 dim: 4096 dim: 4096 }\n'
     + "".join(f'layer {{ name: "r{i}" type: "ReLU" bottom: "data" top: "r{i}" }}\n' for i in range(16)),
     ".safetensors", "forward pass"),
])
def test_memory_hungry_nets_fail_fast_under_an_address_space_limit(tiny_files, tmp_path: Path, weights: bool,
                                                                   net: str, suffix: str, pattern: str) -> None:
    proto = tmp_path / "net.prototxt"
    proto.write_text(net)
    proc = limited(str(tiny_files[0]) if weights else "-", str(proto), str(tmp_path / f"net{suffix}"))
    one_error(proc, pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.prototxt"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (the pixels are never reached)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_huge_image_is_refused_by_its_header_before_decoding(tiny_files, tmp_path: Path) -> None:
    """A 20000 x 20000 image took 2 GB before failing; now its header is enough to refuse it."""
    image = tmp_path / "huge.png"
    image.write_bytes(_png_header(20000, 20000))

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

    proc = subprocess.run([sys.executable, "-m", "caffe2x", "validate", str(tiny_files[0]), "-p", str(tiny_files[1]),
                           "--frameworks", "numpy", "--images", str(image)], capture_output=True, text=True,
                          timeout=300, preexec_fn=cap, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    one_error(proc, "huge.png: image is over the pixel limit: Image size (400000000 pixels)")
    image.write_bytes(_png_header(10000, 10000))  # under Pillow's own limit, over caffe2x's
    proc = subprocess.run([sys.executable, "-m", "caffe2x", "validate", str(tiny_files[0]), "-p", str(tiny_files[1]),
                           "--frameworks", "numpy", "--images", str(image)], capture_output=True, text=True,
                          timeout=300, preexec_fn=cap, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    one_error(proc, "image of 10000x10000 (100,000,000 pixels) is over the 67,108,864-pixel limit")
