"""``validate --against`` judges a file by the conversion that wrote it: every target x {plain,
--fold-bn, --dtype float16, --dtype bfloat16} passes, and a flipped weight in a folded or rounded file
still fails naming that tensor (the expected tensors are folded / rounded like the file's)."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import caffe2x
from caffe2x import convert
from caffe2x.validation.artifacts import logits_rtol
from caffe2x.validation.validator import validate

pytest.importorskip("torch")
pytest.importorskip("keras")
pytest.importorskip("onnx")

SUFFIXES = {"torch": ".pt", "keras-h5": ".h5", "keras-keras": ".keras", "onnx": ".onnx", "safetensors": ".safetensors"}
VARIANTS = {"plain": {}, "fold": {"fold_bn": True}, "fp16": {"dtype": "float16"}, "bf16": {"dtype": "bfloat16"}}
#: (artifact, tensor flipped): a folded torch file, a float16 onnx file, a bfloat16 safetensors file,
#: a folded float16 .h5
TAMPERED = {"torch-fold": "res2a_branch2a.weight", "onnx-fp16": "conv1.weight",
            "safetensors-bf16": "fc10.weight", "keras-h5-foldfp16": "res2a_branch1.weight"}


def _flip(path: Path, key: str, out: Path) -> None:
    """Negate the largest value of tensor ``key`` (graph key) in the file, in its own format."""
    if path.suffix == ".pt":
        import torch

        sd = torch.load(path, weights_only=True)
        t = sd[key]
        t.view(-1)[int(t.abs().argmax())] *= -1
        torch.save(sd, out)
    elif path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        m = onnx.load(str(path))
        for i, init in enumerate(m.graph.initializer):
            if init.name == key:
                arr = numpy_helper.to_array(init).copy()
                arr.reshape(-1)[int(np.abs(arr).argmax())] *= -1
                m.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, key))
        onnx.save(m, str(out))
    elif path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.numpy import save_file

        with safe_open(str(path), "np") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        arr = tensors[key].copy()
        arr.reshape(-1)[int(np.abs(arr.astype(np.float32)).argmax())] *= -1
        tensors[key] = arr
        save_file(tensors, str(out), metadata=meta)
    else:
        import h5py

        shutil.copy(path, out)
        layer = key.split(".")[0]
        with h5py.File(out, "r+") as f:
            ds = f[f"{layer}/{layer}/kernel"]
            arr = ds[...]
            arr.reshape(-1)[int(np.abs(arr.astype(np.float32)).argmax())] *= -1
            ds[...] = arr


#: module fixtures kept on one xdist worker (tests/conftest.py): each builds a ResNet-50 run
XDIST_SHARED_FIXTURES = ("run",)


@pytest.fixture(scope="module")
def run(tiny_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Twenty files written by convert and four tampered ones, checked by one validation."""
    graph = caffe2x.load(*tiny_files)
    d = tmp_path_factory.mktemp("against-conversions")
    files = {}
    for fmt, suffix in SUFFIXES.items():
        for variant, options in VARIANTS.items():
            path = d / f"{fmt}-{variant}{suffix}"
            convert.write(graph, path, fmt.split("-")[0], **options)
            files[f"{fmt}-{variant}"] = path
    files["keras-h5-foldfp16"] = d / "keras-h5-foldfp16.h5"
    convert.write(graph, files["keras-h5-foldfp16"], "keras", fold_bn=True, dtype="float16")
    tampered = {}
    for name, key in TAMPERED.items():
        src = files[name]
        tampered[name] = d / f"tampered-{src.name}"
        _flip(src, key, tampered[name])
    report = validate(graph, frameworks=["numpy"], against=[*files.values(), *tampered.values()])
    by_path = {Path(a.path).name: a for a in report.artifacts}
    return SimpleNamespace(files=files, tampered=tampered, by_path=by_path, report=report)


@pytest.mark.parametrize("fmt", list(SUFFIXES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_conversion_passes_against_with_its_dtype_and_fold_recognised(run: SimpleNamespace, fmt: str,
                                                                            variant: str) -> None:
    a = run.by_path[run.files[f"{fmt}-{variant}"].name]
    assert a.status == "PASS", a.messages
    dtype = VARIANTS[variant].get("dtype", "float32")
    assert a.conversion == {"fold_bn": variant == "fold", "dtype": dtype, "logits_rtol": logits_rtol(dtype, 1e-4)}
    assert a.tensors_checked > 0 and not a.differing and not a.missing and not a.extra
    assert a.comparison is not None and a.comparison.top1_agree == len(a.comparison.topk)


@pytest.mark.parametrize("name", list(TAMPERED))
def test_one_flipped_weight_in_a_folded_or_rounded_file_fails_naming_that_tensor(run: SimpleNamespace,
                                                                                  name: str) -> None:
    a = run.by_path[run.tampered[name].name]
    assert a.status == "FAIL"
    assert [d.tensor for d in a.differing] == [TAMPERED[name]]
    assert f"tensor {TAMPERED[name]!r}" in a.messages[0]
    assert not run.report.passed


def test_reduced_precision_bound_follows_the_unit_roundoff() -> None:
    assert logits_rtol("float32", 1e-4) == 1e-4
    assert logits_rtol("float16", 1e-4) == pytest.approx(16 * 2.0 ** -11)
    assert logits_rtol("bfloat16", 1e-4) == pytest.approx(16 * 2.0 ** -8)
