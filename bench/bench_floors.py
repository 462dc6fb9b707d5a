#!/usr/bin/env python
"""Every row of issue 24's table as a ratio against its floor, the two measured side by side.

Each row runs its case and its floor as fresh processes, alternately (case, floor, case, floor, ...),
after one unmeasured warm-up of each, and prints medians, the ratio (or the difference, where the floor
is a framework's import) and the load average (``os.getloadavg``) before and after the row. On a shared
machine the absolute walls move with the load; the ratios, measured in the same minutes, move far less.

=========================  =================================  ==================================
row                        case                               floor (run alternately with it)
=========================  =================================  ==================================
safetensors (per model)    ``caffe2x convert --to safetensors``  the plain script of ``bench_baselines.py``
                                                              (compiled parse -> numpy -> ``save_file``)
torch                      ``caffe2x convert --to torch``     plain parse -> ``torch.save``
onnx                       ``caffe2x convert --to onnx``      ``python -c 'import onnx'``
keras                      ``caffe2x convert --to keras``     ``python -c 'import keras'`` (and the same import
                           (``.h5`` and ``.keras``)           with the extras caffe2x hides, see LEAN_KERAS)
validate                   ``caffe2x validate`` (4 frameworks, the packaged photos; peak RSS of the tree)
reference                  ``caffe2x.run`` 1x3x224x224 in one process, median of 5 after a warm-up
import                     ``python -c 'import caffe2x'``     ``python -c 'import numpy'``
opencv                     ``cv2.dnn.readNetFromCaffe(deploy, model)``  ``python -c 'import cv2'``
mnn                        MNN's Caffe converter (``_tools.mnnconvert``), when MNN is installed
x2paddle                   X2Paddle's Caffe converter, when it and paddlepaddle are installed
=========================  =================================  ==================================

The last three are what a user would pick instead of caffe2x: they are printed next to caffe2x's own
figure for the same model (OpenCV only loads, MNN and X2Paddle convert). MNN's ``mnnconvert`` script
runs ``pip install`` and reports usage to a server when its logging package is missing, so the bench
calls the converter function itself (``--mnn-python``: an interpreter that has MNN, e.g. a venv).

Usage::

    python bench/bench_floors.py [--rows safetensors,torch,...] [--models resnet50,resnet152] [--rounds 5]
                                 [--dir DIR] [--mnn-python PY]

Targets (issue 24, synthetic ResNet-50): safetensors <= 0.6 x the plain script and peak RSS <= 1.3 x the
file (ResNet-152 too); torch <= 0.9 x; onnx and keras <= their import + 1 s, peak RSS <= the import's +
1.5 x the file; validate <= 10 s and 1 GB; reference <= 0.2 s; import caffe2x <= import numpy + 0.03 s.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_baselines import PB2, PLAIN, ensure_model, measure  # noqa: E402
from bench_validate import run as run_validate  # noqa: E402

PY = sys.executable

#: the numpy reference timed inside one process (what bench_reference.py does), printing the median
REFERENCE = r"""
import statistics, sys, time
import numpy as np
import caffe2x
g = caffe2x.load(sys.argv[1], sys.argv[2])
(shape,) = g.inputs.values()
x = (np.random.default_rng(0).standard_normal((1, *shape[1:])) * 50).astype(np.float32)
out = g.blob_name(g.logits()[0])
caffe2x.run(g, x, outputs=out)
ts = []
for _ in range(5):
    t = time.perf_counter(); caffe2x.run(g, x, outputs=out); ts.append(time.perf_counter() - t)
print(statistics.median(ts))
"""

#: ``import keras`` as caffe2x's own processes do it (caffe2x.targets.keras.quiet.without_unused_extras)
#: (the names of ``UNUSED_EXTRAS`` written out: importing that module would import the package, and keras)
#: and with the collector paused during the import and its objects frozen, as the command imports a framework
#: (caffe2x._command.import_frozen: the exit's collection skips them)
LEAN_KERAS = ("import gc, sys\nfor m in ('jax', 'IPython', 'cv2'): sys.modules[m] = None\n"
              "gc.disable()\nimport keras\ngc.freeze()\ngc.enable()")
#: the plain torch floor's import done the same way (frozen), to show what the frozen import alone gives
FROZEN_TORCH = "import gc\ngc.disable()\nimport torch\ngc.freeze()\ngc.enable()"

OPENCV = "import sys, cv2; cv2.dnn.readNetFromCaffe(sys.argv[1], sys.argv[2])"
MNN = ("import sys, _tools; _tools.mnnconvert(['mnnconvert', '-f', 'CAFFE', '--modelFile', sys.argv[1], "
       "'--prototxt', sys.argv[2], '--MNNModel', sys.argv[3], '--bizCode', 'bench'])")


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def alternate(cases: dict[str, list[str]], rounds: int, scratch: Path,
              samples: dict[str, list[tuple[float, float]]] | None = None) -> dict[str, tuple[float, float]]:
    """Median (wall s, peak RSS MiB) per case, the cases run in turn each round after a warm-up;
    ``samples`` (when given) gets every round's figures, in order, for paired ratios."""
    samples = {} if samples is None else samples
    samples.update({k: [] for k in cases})
    for cmd in cases.values():
        measure(cmd)
    for _ in range(rounds):
        for case, cmd in cases.items():
            for old in scratch.iterdir():  # a fresh write every time
                if old.is_file():
                    old.unlink()
            samples[case].append(measure(cmd))
    return {k: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v)) for k, v in samples.items()}


def paired(samples: dict[str, list[tuple[float, float]]], case: str, floor: str) -> str:
    """The ratio of each round's case to the floor run just after it: its quartiles, which say how far
    the floor's own noise moves the ratio of medians (the floor varies far more than caffe2x does)."""
    ratios = sorted(c[0] / f[0] for c, f in zip(samples[case], samples[floor]))
    if len(ratios) < 4:
        return f"per round {ratios[0]:.2f}-{ratios[-1]:.2f}"
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return f"per round: quartiles {q1:.2f}-{q3:.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}"


def show(row: str, med: dict[str, tuple[float, float]], before: str, verdict: str) -> None:
    print(f"\n[{row}] load {before} -> {load()}")
    for case, (wall, rss) in med.items():
        print(f"  {case:<34} {wall:7.3f} s {rss:8.0f} MiB")
    print(f"  => {verdict}")


def convert_cmd(model: Path, deploy: Path, out: Path, to: str) -> list[str]:
    return [PY, "-m", "caffe2x", "convert", str(model), "--prototxt", str(deploy), "-q", "-o", str(out), "--to", to]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="safetensors,torch,onnx,keras,validate,reference,import,opencv,mnn,x2paddle")
    ap.add_argument("--models", default="resnet50,resnet152", help="models of the safetensors row")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--validate-rounds", type=int, default=3)
    ap.add_argument("--dir", help="where the models are generated and kept")
    ap.add_argument("--mnn-python", help="a Python that has MNN installed (default: this one)")
    opts = ap.parse_args()
    rows = opts.rows.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(opts.dir or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        scratch = Path(tmp) / "out"
        scratch.mkdir()
        model, deploy = ensure_model("resnet50", directory)
        mib = model.stat().st_size / 2**20
        print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; ResNet-50 {mib:.0f} MiB; "
              f"medians of {opts.rounds} alternating runs")
        if "safetensors" in rows:
            for name in opts.models.split(","):
                m, d = ensure_model(name, directory)
                size = m.stat().st_size / 2**20
                before = load()
                rounds: dict[str, list[tuple[float, float]]] = {}
                med = alternate({"caffe2x -> safetensors": convert_cmd(m, d, scratch / "c.safetensors", "safetensors"),
                                 "plain -> save_file (floor)": [PY, "-c", PLAIN, str(m), str(scratch / "p.safetensors"),
                                                                "safetensors", PB2]}, opts.rounds, scratch, rounds)
                (cw, cr), (pw, _) = med.values()
                show(f"safetensors {name} {size:.0f} MiB", med, before,
                     f"wall {cw / pw:.2f} x the plain script [<= 0.6] ({paired(rounds, *med)}), "
                     f"peak RSS {cr / size:.2f} x the file [<= 1.3]")
        if "torch" in rows:
            before = load()
            med = alternate({"caffe2x -> torch": convert_cmd(model, deploy, scratch / "c.pt", "torch"),
                             "plain -> torch.save (floor)": [PY, "-c", PLAIN, str(model), str(scratch / "p.pt"),
                                                             "torch", PB2],
                             "import torch, frozen": [PY, "-c", FROZEN_TORCH]}, opts.rounds, scratch)
            (cw, cr), (pw, pr), (fw_, _) = med.values()
            show("torch", med, before, f"wall {cw / pw:.2f} x the plain script [<= 0.9], peak RSS {cr / pr:.2f} x its; "
                                       f"caffe2x = the frozen import + {cw - fw_:.2f} s")
        if "keras" in rows:
            # the default .h5 and the .keras file, against ``import keras`` as a user's environment does it and
            # as caffe2x's own processes do it (the optional extras TF/Keras import for features caffe2x never
            # uses hidden, caffe2x.targets.keras.quiet.UNUSED_EXTRAS): what caffe2x adds beyond the lean import
            before = load()
            med = alternate({"caffe2x -> keras (.h5, default)": convert_cmd(model, deploy, scratch / "c.h5", "keras"),
                             "caffe2x -> keras (.keras)": convert_cmd(model, deploy, scratch / "c.keras", "keras"),
                             "import keras (floor)": [PY, "-c", "import keras"],
                             "import keras, lean (extras hidden, frozen)": [PY, "-c", LEAN_KERAS]}, opts.rounds, scratch)
            (hw, hr), (kw, kr), (iw, ir), (lw, lr) = med.values()
            show("keras", med, before,
                 f"wall import + {hw - iw:.2f} s (.h5), + {kw - iw:.2f} s (.keras) [<= + 1 s]; beyond the lean import "
                 f"+ {hw - lw:.2f} s / + {kw - lw:.2f} s; peak RSS import + {(hr - ir) / mib:.2f} x / "
                 f"+ {(kr - ir) / mib:.2f} x the file [<= + 1.5 x] (lean import + {(hr - lr) / mib:.2f} x / "
                 f"+ {(kr - lr) / mib:.2f} x)")
        for fw, suffix in (("onnx", "onnx"),):
            if fw in rows:
                before = load()
                med = alternate({f"caffe2x -> {fw}": convert_cmd(model, deploy, scratch / f"c.{suffix}", fw),
                                 f"import {fw} (floor)": [PY, "-c", f"import {fw}"]}, opts.rounds, scratch)
                (cw, cr), (iw, ir) = med.values()
                show(fw, med, before, f"wall import + {cw - iw:.2f} s [<= + 1 s], peak RSS import + "
                                      f"{(cr - ir) / mib:.2f} x the file [<= + 1.5 x]")
        if "validate" in rows:
            before = load()
            walls, peaks = [], []
            for i in range(opts.validate_rounds):
                report = scratch / "v.json"
                wall, tree, single, _cpu, rc, err = run_validate(
                    ["validate", str(model), "--prototxt", str(deploy), "--json", str(report), "-q", "--force"])
                if rc != 0:
                    print(f"\n[validate] exit {rc}: {err.strip().splitlines()[-1:]}")
                    break
                walls.append(wall)
                peaks.append(max(tree, single))
            if walls:
                print(f"\n[validate, 4 frameworks, default photos] load {before} -> {load()}")
                print(f"  runs: {' '.join(f'{w:.1f}s/{p:.0f}MB' for w, p in zip(walls, peaks))}")
                print(f"  => median {statistics.median(walls):.1f} s [<= 10 s], peak RSS "
                      f"{statistics.median(peaks):.0f} MB [<= 1000 MB] (process tree)")
        if "reference" in rows:
            before = load()
            secs = [float(subprocess.run([PY, "-c", REFERENCE, str(model), str(deploy)], check=True,
                                         capture_output=True, text=True).stdout) for _ in range(3)]
            print(f"\n[reference] load {before} -> {load()}")
            print(f"  => numpy reference 1x3x224x224: {statistics.median(secs):.3f} s (medians of 5 in 3 processes: "
                  f"{' '.join(f'{s:.3f}' for s in secs)}) [<= 0.2 s]")
        if "import" in rows:
            before = load()
            med = alternate({"import caffe2x": [PY, "-c", "import caffe2x"],
                             "import numpy (floor)": [PY, "-c", "import numpy"]}, opts.rounds * 4, scratch)
            (cw, cr), (nw, nr) = med.values()
            show("import", med, before, f"import caffe2x = import numpy + {cw - nw:.3f} s [<= + 0.03 s], "
                                        f"+ {cr - nr:.0f} MiB")
        if "opencv" in rows:
            if importlib.util.find_spec("cv2") is None:
                print("\n[opencv] skipped: cv2 (opencv-python) is not installed")
            else:
                before = load()
                med = alternate({"cv2.dnn.readNetFromCaffe": [PY, "-c", OPENCV, str(deploy), str(model)],
                                 "import cv2 (floor)": [PY, "-c", "import cv2"],
                                 "caffe2x -> safetensors": convert_cmd(model, deploy, scratch / "c.safetensors",
                                                                       "safetensors")}, opts.rounds, scratch)
                (ow, orss), (iw, _), (cw, _) = med.values()
                show("opencv (loads the net, converts nothing)", med, before,
                     f"readNetFromCaffe = import cv2 + {ow - iw:.2f} s; caffe2x's whole conversion is "
                     f"{cw / ow:.2f} x OpenCV's load")
        if "mnn" in rows:
            mnn_py = opts.mnn_python or PY
            probe = subprocess.run([mnn_py, "-c", "import _tools"], capture_output=True)
            if probe.returncode != 0:
                print(f"\n[mnn] skipped: {mnn_py} cannot import MNN's converter (`pip install MNN`, a 17 MB wheel; "
                      f"pass --mnn-python)")
            else:
                before = load()
                med = alternate({"MNN convert (Caffe -> .mnn)": [mnn_py, "-c", MNN, str(model), str(deploy),
                                                                 str(scratch / "m.mnn")],
                                 "caffe2x -> onnx": convert_cmd(model, deploy, scratch / "c.onnx", "onnx"),
                                 "caffe2x -> safetensors": convert_cmd(model, deploy, scratch / "c.safetensors",
                                                                       "safetensors")}, opts.rounds, scratch)
                (mw, _), (ow, _), (sw, _) = med.values()
                show("mnn", med, before, f"caffe2x -> onnx {ow / mw:.2f} x MNN's conversion, -> safetensors "
                                         f"{sw / mw:.2f} x")
        if "x2paddle" in rows:
            if importlib.util.find_spec("x2paddle") is None or importlib.util.find_spec("paddle") is None:
                print("\n[x2paddle] skipped: X2Paddle converts Caffe only with paddlepaddle installed "
                      "(a 195 MB wheel plus its dependencies, not a quick install)")
            else:
                before = load()
                med = alternate({"x2paddle (Caffe -> Paddle)": ["x2paddle", "--framework=caffe", f"--prototxt={deploy}",
                                                                f"--weight={model}", f"--save_dir={scratch / 'pd'}"]},
                                opts.rounds, scratch)
                show("x2paddle", med, before, "for comparison with the rows above")


if __name__ == "__main__":
    main()
