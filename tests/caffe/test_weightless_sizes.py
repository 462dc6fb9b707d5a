"""A weightless net (``caffe2x.load(None, prototxt=…)``) costs what the size limit counted: the seeded
tensors are drawn straight into float32 (no float64 draw and scaled copy, 3x the tensor at once), and a
write that copies them (ONNX, Keras) is refused before it starts when tensors + copies pass the limit."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import targets
from caffe2x.caffe import reader
from caffe2x.graph import checks

NUM_OUTPUT = 1 << 20  # weight 1048576 x 16: 64 MiB of float32


def wide_fc(num_output: int = NUM_OUTPUT) -> str:
    return ('name: "wide"\ninput: "data"\ninput_shape { dim: 1 dim: 16 }\n'
            f'layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
            f'inner_product_param {{ num_output: {num_output} }} }}\n')


def test_seeding_a_weightless_net_peaks_at_its_tensors_and_one_forward_pass() -> None:
    tracemalloc.start()
    try:
        graph = reader.graph_from_text(wide_fc())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tensors = checks.tensor_bytes(graph)
    assert tensors == (NUM_OUTPUT * 16 + NUM_OUTPUT) * 4
    calibration = checks.forward_bytes(graph, 2)
    # before: float64 draw (2x) + float64 scaled copy (2x) + the float32 result, 5x the weight at once
    assert peak < tensors + calibration + (16 << 20), (peak, tensors, calibration)


def test_chunked_seeding_gives_the_values_of_one_draw() -> None:
    """The fixtures' weights must not change: the stream does not depend on how the draws are split."""
    shape = (3, reader._INIT_CHUNK // 2 + 7)
    for kind, draw in [("he", lambda r: r.standard_normal(shape) * np.sqrt(2.0 / shape[1])),
                       ("bias", lambda r: r.standard_normal(shape) * 0.1),
                       ("gamma", lambda r: r.uniform(0.5, 1.5, shape)),
                       ("slope", lambda r: r.uniform(0.05, 0.3, shape))]:
        got = reader._init(np.random.default_rng(7), shape, kind)
        want = draw(np.random.default_rng(7)).astype(np.float32)
        assert got.dtype == np.float32 and np.array_equal(got, want), kind


@pytest.mark.parametrize("suffix,target", [(".h5", "keras"), (".keras", "keras")])
def test_a_write_whose_copies_pass_the_limit_is_refused_before_it_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, target: str) -> None:
    prototxt = tmp_path / "wide.prototxt"
    prototxt.write_text(wide_fc())
    graph = caffe2x.load(None, prototxt=prototxt)
    copies = targets.get(target).write_copies
    need = checks.write_bytes(graph, copies)
    assert need > 3 * checks.tensor_bytes(graph)
    monkeypatch.setenv(checks.MAX_BYTES_ENV, str(need - 1))
    with pytest.raises(checks.SizeLimitError, match=rf"writing 'wide' as {target} \(its 68.0 MiB of tensors and "
                                                    rf"the {copies:g} extra copies .* over the .* limit"):
        caffe2x.save(graph, tmp_path / f"wide{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.prototxt"]


def test_a_writer_that_copies_nothing_writes_under_the_same_limit(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    prototxt = tmp_path / "wide.prototxt"
    prototxt.write_text(wide_fc())
    graph = caffe2x.load(None, prototxt=prototxt)
    monkeypatch.setenv(checks.MAX_BYTES_ENV, str(checks.write_bytes(graph, targets.get("keras").write_copies) - 1))
    caffe2x.save(graph, tmp_path / "wide.safetensors")
    back = caffe2x.load(tmp_path / "wide.safetensors")
    assert np.array_equal(back.tensors["fc.weight"], graph.tensors["fc.weight"])


def test_a_reduced_dtype_counts_its_cast_and_measurement_copy(tmp_path: Path) -> None:
    graph = reader.graph_from_text(wide_fc(1024))
    held = checks.tensor_bytes(graph)
    assert checks.write_bytes(graph, 0.25, "float16") == held + int(np.ceil(held * 1.75))


MEASURE = """
import sys
import caffe2x
from caffe2x import targets
from caffe2x.graph import checks


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024


graph = caffe2x.load(None, prototxt=sys.argv[1])
targets.get(sys.argv[3]).implementation()
for name in sys.argv[4:]:
    __import__(name)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # restart the high-water mark: the load's own peak is not the save's
before = status("VmRSS")
caffe2x.save(graph, sys.argv[2])
print((status("VmHWM") - before) / checks.tensor_bytes(graph))
"""


@pytest.mark.slow
@pytest.mark.parametrize("suffix,target,imports", [
    (".safetensors", "safetensors", ["safetensors.numpy"]), (".pt", "torch", ["torch"]),
    (".onnx", "onnx", ["onnx"]), (".h5", "keras", ["keras", "h5py"]), (".keras", "keras", ["keras", "h5py"])])
def test_each_writer_copies_no_more_than_it_declares(tmp_path: Path, suffix: str, target: str,
                                                     imports: list[str]) -> None:
    """Peak RSS while saving a 256 MiB weightless net, over the RSS just before, in units of its tensors."""
    import subprocess
    import sys

    prototxt = tmp_path / "wide.prototxt"
    prototxt.write_text(wide_fc(1 << 22))
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(prototxt), str(tmp_path / f"w{suffix}"), target,
                           *imports], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = float(proc.stdout.strip().splitlines()[-1])
    assert measured <= targets.get(target).write_copies + 0.1, measured
