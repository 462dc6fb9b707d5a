"""``--full-model`` says nothing the user cannot act on: with the real TensorFlow, neither saving the
``.h5`` (Keras' absl line calling HDF5 'legacy', which is what was asked for) nor loading it the way
caffe2x's note says (``compile=False``: "No training configuration found") prints a line about it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_full_model_h5_saves_and_loads_without_keras_advice_on_stderr(tiny_files, tmp_path: Path) -> None:
    model, deploy = tiny_files
    out = tmp_path / "tiny.h5"
    conv = subprocess.run([sys.executable, "-m", "caffe2x", "convert", str(model), "-p", str(deploy), "-o", str(out),
                           "--full-model"], capture_output=True, text=True, timeout=600)
    assert conv.returncode == 0, conv.stderr
    assert "considered legacy" not in conv.stderr and "HDF5 file via" not in conv.stderr, conv.stderr
    assert "keras.models.load_model(path, compile=False)" in conv.stderr
    code = (f"import caffe2x.targets.keras, keras\n"
            f"m = keras.models.load_model({str(out)!r}, compile=False)\n"
            f"print(len(m.layers))\n")
    load = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert load.returncode == 0 and int(load.stdout.strip()) > 1, load.stderr
    assert "No training configuration" not in load.stderr, load.stderr
