#!/usr/bin/env python
"""``caffe2x convert`` against the plain way of doing the same, run alternately, medians and ratios.

For each model (the synthetic ResNet-50, 102 MB, ``layer`` format; and VGG-16, 553 MB, V1 ``layers``
format with legacy blob dims, 138,357,544 parameters) every round runs, as fresh processes (imports
included, as a user waits for them), in this order:

========================  =====================================================================
case                      what runs
========================  =====================================================================
``cat``                   ``cat model > /dev/null``: reading the file once, the floor
``plain → safetensors``   compiled protobuf parse → ``np.array(blob.data)`` → ``safetensors.numpy.save_file``
``caffe2x → safetensors`` ``caffe2x convert model --prototxt deploy --to safetensors``
``import torch``          ``python -c 'import torch'``: the part of the torch cases' memory that is torch
``plain → torch``         compiled parse → ``torch.from_numpy(np.array(blob.data))`` → ``torch.save``
``caffe2x → torch``       ``caffe2x convert model --prototxt deploy --to torch``
========================  =====================================================================

Wall time and peak RSS (``wait4`` rusage) per run; the table gives medians over ``--rounds`` (>= 5)
and the issue's ratios are printed last. Usage::

    python bench/bench_baselines.py [--models resnet50,vgg16] [--rounds 5] [--dir DIR]

``--dir`` keeps the generated models between invocations (generating VGG-16 takes a while).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the plain script: what anyone would write with the compiled schema and no caffe2x reader
PLAIN = r"""
import importlib.util, sys
import numpy as np
# the compiled schema alone (the generated module), without importing the caffe2x package around it
spec = importlib.util.spec_from_file_location("caffe_pb2", sys.argv[4])
caffe_pb2 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(caffe_pb2)

model, out, to = sys.argv[1:4]
net = caffe_pb2.NetParameter()
with open(model, "rb") as f:
    net.ParseFromString(f.read())
tensors = {}
for layer in list(net.layer) or list(net.layers):
    for i, b in enumerate(layer.blobs):
        shape = tuple(b.shape.dim) if b.HasField("shape") else (b.num, b.channels, b.height, b.width)
        tensors[f"{layer.name}.{i}"] = np.array(b.data, dtype=np.float32).reshape(shape)
del net
if to == "torch":
    import torch
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, out)
else:
    from safetensors.numpy import save_file
    save_file(tensors, out)
"""


#: children may cache bytecode as an installed package does (some shells set PYTHONDONTWRITEBYTECODE,
#: which would make every caffe2x run of an editable install compile its modules from source)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err}")
    return wall, usage.ru_maxrss / 1024


def ensure_model(name: str, directory: Path) -> tuple[Path, Path]:
    model, deploy = directory / f"{name}.caffemodel", directory / f"{name}-deploy.prototxt"
    if not (model.exists() and deploy.exists()):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "caffe2x", "fixture", name, "-o", str(directory), "-q"], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"generated {name}: {model.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.1f}s")
    return model, deploy


#: caffe2x's generated schema module, run by the plain script as a file of its own
PB2 = str(Path(__file__).resolve().parent.parent / "caffe2x" / "caffe" / "proto" / "caffe_pb2.py")


def cases(model: Path, deploy: Path, out: Path) -> dict[str, list[str]]:
    py = sys.executable
    convert = [py, "-m", "caffe2x", "convert", str(model), "--prototxt", str(deploy), "-q", "-o"]
    return {
        "cat": ["cat", str(model)],
        "plain → safetensors": [py, "-c", PLAIN, str(model), str(out / "plain.safetensors"), "safetensors", PB2],
        "caffe2x → safetensors": [*convert, str(out / "caffe2x.safetensors"), "--to", "safetensors"],
        "import torch": [py, "-c", "import torch"],
        "plain → torch": [py, "-c", PLAIN, str(model), str(out / "plain.pt"), "torch", PB2],
        "caffe2x → torch": [*convert, str(out / "caffe2x.pt"), "--to", "torch"],
    }


def bench(name: str, directory: Path, rounds: int, only: set[str] | None) -> dict[str, tuple[float, float]]:
    model, deploy = ensure_model(name, directory)
    size = model.stat().st_size / 2**20
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        runs = {k: v for k, v in cases(model, deploy, Path(tmp)).items() if only is None or k in only}
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
        for case, cmd in runs.items():  # one unmeasured warm-up round: page cache, bytecode caches
            measure(cmd)
        for r in range(rounds):
            for case, cmd in runs.items():  # alternate: every case once per round
                for old in Path(tmp).iterdir():  # a fresh write each time, not caffe2x's identical-rerun check
                    old.unlink()
                samples[case].append(measure(cmd))
            print(f"  {name}: round {r + 1}/{rounds} done", file=sys.stderr)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v)) for k, v in samples.items()}
    print(f"\n{name}: {model.name} {size:.0f} MiB, medians of {rounds} alternating runs")
    print(f"  {'case':<24} {'wall s':>8} {'peak RSS MiB':>13} {'RSS / file':>11}")
    for case, (wall, rss) in med.items():
        print(f"  {case:<24} {wall:>8.2f} {rss:>13.0f} {rss / size:>11.2f}")
    return {**med, "_size": (size, size)}


def ratios(name: str, med: dict[str, tuple[float, float]]) -> list[str]:
    size = med["_size"][0]
    lines = []
    if "caffe2x → safetensors" in med and "plain → safetensors" in med:
        c, p = med["caffe2x → safetensors"], med["plain → safetensors"]
        lines.append(f"{name} safetensors: wall {c[0] / p[0]:.2f} x plain script (target <= 0.6), "
                     f"peak RSS {c[1] / size:.2f} x file (target <= 1.3)"
                     + (f", {c[0] / med['cat'][0]:.1f} x cat" if "cat" in med else ""))
    if "caffe2x → torch" in med and "plain → torch" in med:
        c, p = med["caffe2x → torch"], med["plain → torch"]
        torch_rss = med.get("import torch", (0.0, 0.0))[1]
        lines.append(f"{name} torch: wall {c[0] / p[0]:.2f} x plain torch.save script (target <= 1.2), "
                     f"peak RSS {c[1]:.0f} MiB = file x {(c[1] - torch_rss) / size:.2f} + import torch "
                     f"{torch_rss:.0f} MiB (target <= 1.3 x file + import torch)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,vgg16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cases", help="comma-separated subset of the cases (default: all)")
    ap.add_argument("--dir", help="where the models are generated and kept (default: a temporary directory)")
    opts = ap.parse_args()
    only = set(opts.cases.split(",")) if opts.cases else None
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(opts.dir or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        results = {name: bench(name, directory, opts.rounds, only) for name in opts.models.split(",")}
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} "
          f"(after the runs), Python {sys.version.split()[0]}")
    print("ratios (medians):")
    for name, med in results.items():
        for line in ratios(name, med):
            print("  " + line)


if __name__ == "__main__":
    main()
