"""The fine-tuning examples run end to end in --quick mode: convert, new head, freeze, train, export,
reload the export and get the same outputs (the examples exit non-zero otherwise)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"caffe2x_example_{name}", EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the torch example (~3 min on 2 shared cores) runs with -m slow; its pieces (prepare, freezing,
# CaffePreprocess, the state_dict and ONNX exports) are pinned by tests/finetune/test_finetune_torch.py,
# and the keras example stays in the default run as the end-to-end representative
@pytest.mark.parametrize("name", [pytest.param("finetune_torch", marks=pytest.mark.slow), "finetune_keras"])
def test_example_runs_in_quick_mode_and_its_exports_reload_identically(name: str, tmp_path: Path) -> None:
    result = load(name).main(["--quick", "--out", str(tmp_path)])
    assert 0.0 <= result["accuracy_before"] <= 1.0 and 0.0 <= result["accuracy_after"] <= 1.0
    if name == "finetune_torch":
        assert result["state_dict_max_diff"] == 0.0 and result["onnx_same_predictions"]
        assert (tmp_path / "resnet50_shapes.pt").exists() and (tmp_path / "resnet50_shapes.onnx").exists()
    else:
        assert result["keras_max_diff"] == 0.0 and (tmp_path / "resnet50_shapes.keras").exists()
