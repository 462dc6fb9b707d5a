"""``caffe2x validate``: every framework against the numpy reference, artifacts checked tensor by tensor,
a wrong framework caught at the right layer, and the reports it writes."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.cli.main import main
import caffe2x.targets
from caffe2x.targets import REGISTRY, Target
from caffe2x.targets.numpy_reference import ReferenceRunner
from caffe2x.validation.preprocess import default_image_dir
import caffe2x.validation.validator

V = caffe2x.validation.validator
DOCS = Path(__file__).resolve().parents[2] / "docs" / "validate-report-schema.md"
PHOTO = default_image_dir() / "chelsea_cat.jpg"


def run_main(*args: str) -> SimpleNamespace:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["validate", *map(str, args)])
    return SimpleNamespace(rc=rc, out=out.getvalue(), err=err.getvalue())


def expected_frameworks() -> list[str]:
    return [n for n in ("numpy", "torch", "keras", "onnx") if caffe2x.targets.get(n).available()]


# --------------------------------------------------------------------------- JSON Schema (the doc's)
def documented_schema() -> dict[str, Any]:
    text = DOCS.read_text(encoding="utf-8")
    block = re.search(r"## JSON Schema.*?```json\n(.*?)```", text, re.S)
    assert block, "docs/validate-report-schema.md has no JSON Schema block"
    return json.loads(block.group(1))


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(value: Any, t: str) -> bool:
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[t])


def check_schema(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """The draft 2020-12 subset the doc uses: type, const, enum, required, properties, items."""
    errors = []
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, t) for t in types):
            return errors + [f"{path}: {type(value).__name__} is not {types}"]
    if isinstance(value, dict):
        errors += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        for k, sub in schema.get("properties", {}).items():
            if k in value:
                errors += check_schema(value[k], sub, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += check_schema(item, schema["items"], f"{path}[{i}]")
    return errors


def test_schema_checker_rejects_a_report_with_a_wrong_type() -> None:
    schema = documented_schema()
    assert check_schema({"schema": "caffe2x.validate/1", "passed": "yes"}, schema)
    assert any("passed" in e for e in check_schema({"schema": "caffe2x.validate/1", "passed": "yes"}, schema))


#: module fixtures kept on one xdist worker (tests/conftest.py): each builds a ResNet-50 run
XDIST_SHARED_FIXTURES = ("full_run", "against_run", "wrong_run")


# --------------------------------------------------------------------------- the full validation, once
@pytest.fixture(scope="module")
def full_run(resnet50_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """``caffe2x validate`` of the synthetic ResNet-50 on the default photos, every installed framework."""
    model, deploy = resnet50_files
    d = tmp_path_factory.mktemp("validate")
    r = run_main(model, "--prototxt", deploy, "--json", d / "report.json", "--keep-artifacts", d / "artifacts")
    r.report = json.loads((d / "report.json").read_text())
    r.artifacts = d / "artifacts"
    return r


def test_every_installed_framework_agrees_with_the_reference_on_the_photos(full_run: SimpleNamespace) -> None:
    report = full_run.report
    assert full_run.rc == 0, full_run.out + full_run.err
    assert report["passed"] is True and report["failures"] == []
    assert {"numpy", "torch", "keras"} <= set(expected_frameworks())
    by_name = {f["name"]: f for f in report["frameworks"]}
    assert [f["name"] for f in report["frameworks"] if f["status"] != "SKIP"] == expected_frameworks()
    for name in expected_frameworks():
        f = by_name[name]
        assert f["status"] == "PASS", f
        assert f["max_rel"] <= 1e-4
        assert f["top1_agree"] == 4 and f["top5_agree"] == 4
        assert f["top5"] == report["reference"]["top5"]
    assert report["logits"]["blob"] == "fc1000"
    assert report["input"]["kind"] == "images" and report["input"]["shape"] == [4, 3, 224, 224]
    assert [Path(p).name for p in report["input"]["images"]] == sorted(p.name for p in default_image_dir().glob("*.jpg"))
    assert len(report["pairwise"]) == len(expected_frameworks()) * (len(expected_frameworks()) - 1) // 2
    assert all(p["max_rel"] <= 1e-4 for p in report["pairwise"])


def test_printed_table_shows_a_row_per_framework_and_top5_per_photo(full_run: SimpleNamespace) -> None:
    lines = full_run.out.splitlines()
    for name in expected_frameworks():
        row = next(l for l in lines if l.startswith(name + " "))
        assert re.search(r"\bPASS\b.*\b4/4\s+4/4\b", row), row
    for photo, top5 in zip(full_run.report["input"]["images"], full_run.report["reference"]["top5"]):
        row = next(l for l in lines if l.strip().startswith(Path(photo).name))
        assert row.split()[1:] == [str(i) for i in top5]
    assert lines[-1].startswith("PASS:")
    assert "writing and loading back" in full_run.err  # progress on stderr


def test_json_report_matches_the_documented_schema(full_run: SimpleNamespace) -> None:
    report = full_run.report
    assert report["schema"] == "caffe2x.validate/1"
    assert check_schema(report, documented_schema()) == []
    assert report["tolerance"]["rtol"] == 1e-4 and report["tolerance"]["atol"] == 0


def test_converted_files_are_kept_when_asked(full_run: SimpleNamespace) -> None:
    names = {f["name"]: f["artifact"] for f in full_run.report["frameworks"] if f["status"] == "PASS"}
    suffix = {"numpy": ".safetensors", "torch": ".pt", "keras": ".h5", "onnx": ".onnx"}
    for name, artifact in names.items():
        assert artifact == "resnet50" + suffix[name]
        assert (full_run.artifacts / artifact).stat().st_size > 100_000_000


# --------------------------------------------------------------------------- artifacts (--against)
PERTURBED = {"pt": "res3a_branch2b.weight", "safetensors": "res4a_branch2a.weight", "h5": "res3b_branch2c.weight"}


@pytest.fixture(scope="module")
def against_run(full_run: SimpleNamespace, resnet50_files: tuple[Path, Path],
                tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One validation (numpy, one photo) against good, perturbed and broken artifacts."""
    import h5py
    import torch
    from safetensors import safe_open
    from safetensors.numpy import save_file

    src = full_run.artifacts
    d = tmp_path_factory.mktemp("against")
    bad = {}
    # .pt: one weight + 1e-3
    sd = torch.load(src / "resnet50.pt", weights_only=True)
    sd[PERTURBED["pt"]][0, 0, 1, 1] += 1e-3
    torch.save(sd, d / "bad.pt")
    bad["pt"] = d / "bad.pt"
    # .safetensors: one weight + 1e-3, metadata (the graph) kept
    with safe_open(src / "resnet50.safetensors", "np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors[PERTURBED["safetensors"]] = tensors[PERTURBED["safetensors"]].copy()
    tensors[PERTURBED["safetensors"]][3, 2, 0, 0] += 1e-3
    save_file(tensors, d / "bad.safetensors", metadata=meta)
    bad["safetensors"] = d / "bad.safetensors"
    # .h5: one Keras kernel + 1e-3
    shutil.copy(src / "resnet50.h5", d / "bad.h5")
    with h5py.File(d / "bad.h5", "r+") as f:
        layer = PERTURBED["h5"].split(".")[0]
        ds = f[f"{layer}/{layer}/kernel"]
        arr = ds[...]
        arr[0, 0, 5, 7] += 1e-3
        ds[...] = arr
    bad["h5"] = d / "bad.h5"
    # .safetensors with a tensor missing, one extra and one of the wrong shape
    broken = dict(tensors)
    broken[PERTURBED["safetensors"]] = tensors[PERTURBED["safetensors"]]
    del broken["fc1000.bias"]
    broken["bogus.weight"] = np.zeros(3, np.float32)
    broken["conv1.bias"] = broken["conv1.bias"].reshape(1, -1)
    save_file(broken, d / "broken.safetensors", metadata=meta)

    good = [src / "resnet50.pt", src / "resnet50.safetensors", src / "resnet50.h5"]
    if (src / "resnet50.onnx").exists():
        good.append(src / "resnet50.onnx")
    model, deploy = resnet50_files
    paths = [bad["pt"], bad["safetensors"], bad["h5"], d / "broken.safetensors", *good]
    # each artifact is checked in this process: these tests pin the tensor-by-tensor comparison; a child
    # process per artifact (the default for a model this big) would import torch, Keras or onnxruntime
    # seven times (~25 s of CPU), and tests/validation/test_validate_memory.py pins the children
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys.modules["caffe2x.validation.validator"], "ISOLATE_BYTES", 1 << 62)
        r = run_main(model, "--prototxt", deploy, "--frameworks", "numpy", "--images", PHOTO,
                     "--against", ",".join(map(str, paths[:2])), *[w for a in paths[2:] for w in ("--against", a)],
                     "--json", d / "report.json")
    r.report = json.loads((d / "report.json").read_text())
    r.by_path = {Path(a["path"]).name: a for a in r.report["artifacts"]}
    r.bad, r.good, r.broken = bad, good, d / "broken.safetensors"
    return r


@pytest.mark.parametrize("kind", ["pt", "safetensors", "h5"])
def test_artifact_with_one_tensor_perturbed_by_1e_3_fails_naming_that_tensor(against_run: SimpleNamespace,
                                                                           kind: str) -> None:
    a = against_run.by_path[against_run.bad[kind].name]
    tensor = PERTURBED[kind]
    assert a["status"] == "FAIL"
    assert [d["tensor"] for d in a["differing"]] == [tensor]
    assert a["differing"][0]["max_abs"] == pytest.approx(1e-3, rel=1e-3)
    message = a["messages"][0]
    assert message.startswith(f"bad.{kind}: tensor '{tensor}'")
    assert "differs: max abs 1.0e-03" in message and "(rtol 1e-4" in message
    assert a["missing"] == [] and a["extra"] == [] and a["shape_mismatches"] == []
    assert message in against_run.out  # printed too
    assert against_run.rc == 1


def test_h5_tensor_is_compared_in_keras_layout_and_named_after_the_graph(against_run: SimpleNamespace) -> None:
    diff = against_run.by_path["bad.h5"]["differing"][0]
    assert diff["stored_as"] == "res3b_branch2c/res3b_branch2c/kernel"


def test_unperturbed_artifacts_pass_tensor_by_tensor_and_by_logits(against_run: SimpleNamespace,
                                                                  resnet50_graph: caffe2x.Graph) -> None:
    for path in against_run.good:
        a = against_run.by_path[path.name]
        assert a["status"] == "PASS", a["messages"]
        assert a["tensors_checked"] == len(resnet50_graph.tensors)
        assert a["differing"] == [] and a["messages"] == []
        assert a["logits"]["within_tolerance"] and a["logits"]["top5_agree"] == 1
    assert check_schema(against_run.report, documented_schema()) == []


def test_missing_extra_and_reshaped_tensors_are_reported(against_run: SimpleNamespace) -> None:
    a = against_run.by_path["broken.safetensors"]
    assert a["status"] == "FAIL"
    assert a["missing"] == ["fc1000.bias"]
    assert a["extra"] == ["bogus.weight"]
    assert a["shape_mismatches"] == [{"tensor": "conv1.bias", "stored_as": "conv1.bias", "expected": [64],
                                      "found": [1, 64]}]
    text = " | ".join(a["messages"])
    assert "missing, first 'fc1000.bias'" in text and "'bogus.weight'" in text and "'conv1.bias' has shape" in text


# --------------------------------------------------------------------------- a wrong framework
class ForgotBNFactor(Target):
    """The numpy reference on the graph read from the ``.safetensors`` file, but with ``bn_conv1``'s
    statistics not divided by Caffe's moving-average factor (the classic converter bug the synthetic
    model's factor of 999.982 exposes)."""

    def load(self, path: Path, graph: caffe2x.Graph) -> ReferenceRunner:
        node = graph.node("bn_conv1")
        tensors = dict(caffe2x.load(path).tensors)
        for role in ("running_mean", "running_var"):
            key = node.params[role]
            tensors[key] = tensors[key] * fixtures.BN_FACTOR
        return ReferenceRunner(graph.copy(tensors=tensors))


FORGOT_BN_FACTOR = ForgotBNFactor("forgot_bn_factor", (".safetensors",), writes=False)


@pytest.fixture(scope="module")
def wrong_run(resnet50_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    model, deploy = resnet50_files
    d = tmp_path_factory.mktemp("wrong")
    labels = d / "synset_words.txt"
    labels.write_text("".join(f"n{i:08d} class_{i}, alias {i}\n" for i in range(1000)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(REGISTRY, "forgot_bn_factor", FORGOT_BN_FACTOR)
        names = ["numpy", "forgot_bn_factor"] + (["torch"] if caffe2x.targets.get("torch").available() else [])
        r = run_main(model, "--prototxt", deploy, "--frameworks", ",".join(names), "--per-layer",
                     "--images", PHOTO, "--labels", labels, "--json", d / "report.json", "--html", d / "report.html")
    r.report = json.loads((d / "report.json").read_text())
    r.html = d / "report.html"
    r.by_name = {f["name"]: f for f in r.report["frameworks"]}
    return r


def test_framework_without_the_bn_factor_fails_and_per_layer_names_bn_conv1(wrong_run: SimpleNamespace) -> None:
    assert wrong_run.rc == 1
    wrong = wrong_run.by_name["forgot_bn_factor"]
    assert wrong["status"] == "FAIL"
    assert wrong["max_rel"] > 1e-4
    assert wrong["first_divergent_layer"] == "bn_conv1"
    layers = [l["name"] for l in wrong_run.report["layers"]]
    curve = wrong["per_layer_max_rel"]
    assert curve[layers.index("conv1")] == 0.0 and curve[layers.index("bn_conv1")] > 1e-4
    assert "first layer past tolerance: bn_conv1" in wrong["reason"]
    assert any("forgot_bn_factor" in f and "bn_conv1" in f for f in wrong_run.report["failures"])
    assert "first layer past tolerance: bn_conv1" in wrong_run.out
    assert wrong_run.out.splitlines()[-1].startswith("FAIL: forgot_bn_factor")


def test_correct_frameworks_have_every_layer_within_tolerance(wrong_run: SimpleNamespace) -> None:
    n_layers = len(wrong_run.report["layers"])
    assert n_layers == 228
    for name in ("numpy", "torch"):
        if name not in wrong_run.by_name:
            continue
        f = wrong_run.by_name[name]
        assert f["status"] == "PASS", f
        assert f["first_divergent_layer"] is None
        # every layer, including the first value of in-place chains (conv1 before bn_conv1 rewrites it)
        assert len(f["per_layer_max_rel"]) == n_layers and max(f["per_layer_max_rel"]) <= 1e-4


def test_html_report_is_self_contained_and_plots_the_divergence(wrong_run: SimpleNamespace) -> None:
    page = wrong_run.html.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    svg_text = re.search(r"<svg\b.*?</svg>", page, re.S).group(0)
    svg = ET.fromstring(svg_text)  # well-formed XML
    ns = {"s": "http://www.w3.org/2000/svg"}
    group = svg.find(".//s:g[@data-framework='forgot_bn_factor']", ns)
    assert group is not None
    points = [tuple(map(float, p.split(","))) for p in group.find("s:polyline", ns).get("points").split()]
    assert len(points) == 228
    dashed = [l for l in svg.findall(".//s:line", ns) if l.get("stroke-dasharray")]
    tol_y = float(dashed[0].get("y1"))
    assert points[0][1] > tol_y > points[1][1]  # conv1 below the tolerance line, bn_conv1 above it
    assert "first past tolerance: bn_conv1" in svg_text
    assert "FAIL" in page and "forgot_bn_factor" in page


def test_labels_file_names_the_top5(wrong_run: SimpleNamespace) -> None:
    ref = wrong_run.report["reference"]
    assert ref["top5_labels"][0] == [f"class_{i}" for i in ref["top5"][0]]
    assert f"class_{ref['top5'][0][0]} ({ref['top5'][0][0]})" in wrong_run.out


def test_every_framework_runs_the_weights_of_the_file_it_wrote(tiny_files: tuple[Path, Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The converter (``caffe2x.convert.write``, behind ``caffe2x.save``) made to write a graph with one
    BatchNorm off: a framework that ran the in-memory graph instead of the file it wrote and loaded back
    would still pass."""
    real_save = caffe2x.convert.write

    def save_wrong(graph: caffe2x.Graph, path: Any, to: str | None = None, **kw: Any) -> list[str]:
        node = graph.node("bn_conv1")
        tensors = dict(graph.tensors)
        tensors[node.params["running_var"]] = tensors[node.params["running_var"]] * fixtures.BN_FACTOR
        return real_save(graph.copy(tensors=tensors), path, to, **kw)

    monkeypatch.setattr(caffe2x.convert, "write", save_wrong)
    report = caffe2x.validate(*tiny_files, frameworks=expected_frameworks(), per_layer=True)
    assert not report.passed
    for name in expected_frameworks():
        f = report.framework(name)
        assert f.status == "FAIL" and f.first_divergent == "bn_conv1", (name, f.reason)


# --------------------------------------------------------------------------- availability, usage
#: a framework whose package is not installed
GHOST = Target("ghost", (".ghost",), extra="ghost", requires=("caffe2x_no_such_package",))


def test_framework_named_but_not_installed_fails_with_a_clear_message(tiny_files: tuple[Path, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "ghost", GHOST)
    r = run_main(tiny_files[0], "--prototxt", tiny_files[1], "--frameworks", "numpy,ghost", "-q")
    assert r.rc == 1
    assert r.out.strip() == ("FAIL: ghost: requested but caffe2x_no_such_package not installed: "
                             "pip install 'caffe2x[ghost]'")


def test_framework_not_named_and_not_installed_is_skipped(tiny_files: tuple[Path, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    caffe2x.targets.load_entry_points()  # before the registry is replaced
    monkeypatch.setattr(caffe2x.targets, "REGISTRY", {n: REGISTRY[n] for n in ("safetensors", "numpy")} | {"ghost": GHOST})
    report = caffe2x.validate(*tiny_files)
    assert report.passed
    assert report.framework("ghost").status == "SKIP"
    assert "not installed" in report.framework("ghost").reason
    assert report.framework("numpy").status == "PASS"


def test_unknown_framework_is_a_usage_error(tiny_files: tuple[Path, Path]) -> None:
    r = run_main(tiny_files[0], "--prototxt", tiny_files[1], "--frameworks", "numpy,caffe")
    assert r.rc == 2
    assert r.err.strip().splitlines()[-1].startswith("error: unknown framework 'caffe'; choose from numpy,")


def test_quiet_prints_only_the_verdict(tiny_files: tuple[Path, Path]) -> None:
    r = run_main(tiny_files[0], "--prototxt", tiny_files[1], "--frameworks", "numpy", "--quiet")
    assert r.rc == 0 and r.err == ""
    assert r.out.count("\n") == 1 and r.out.startswith("PASS: numpy agrees with the reference")


def test_net_without_image_input_is_validated_on_seeded_gaussian_input() -> None:
    graph = fixtures.graph("conv_group_dilation")  # 4-channel input, ends in a convolution
    report = caffe2x.validate(graph, frameworks=["numpy", "torch"] if caffe2x.targets.get("torch").available() else ["numpy"])
    d = report.to_dict()
    assert report.passed, d["failures"]
    assert d["input"]["kind"] == "gaussian" and "not 3-channel" in d["input"]["note"]
    assert d["logits"]["blob"] == "conv_b" and "does not end in a Softmax" in d["logits"]["note"]
    assert check_schema(d, documented_schema()) == []


def test_caffe2x_validate_stays_the_function_after_the_validator_is_imported(tiny_files) -> None:
    code = (f"import caffe2x, caffe2x.validation.validator, caffe2x.cli; r = caffe2x.validate({str(tiny_files[0])!r}, "
            f"{str(tiny_files[1])!r}, frameworks=['numpy']); print(r.passed, caffe2x.validation.validator.SCHEMA)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "caffe2x.validate/1"], out.stdout + out.stderr


# --------------------------------------------------------------------------- the pass rule
def test_pass_rule_needs_the_tolerance_and_identical_ordered_top5() -> None:
    ref = np.array([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 0.0]], np.float32)
    ref_top = V.topk(ref)
    assert ref_top == [[0, 1, 2, 3, 4]]
    close = ref + np.float32(8e-4)                       # max rel 8e-4/9 < 1e-4
    assert V.compare_logits(close, ref, ref_top, 1e-4, 0.0).passed
    far = ref.copy()
    far[0, 6] += 1e-2                                    # 1.1e-3 relative, top-5 unchanged
    assert not V.compare_logits(far, ref, ref_top, 1e-4, 0.0).passed
    assert V.compare_logits(far, ref, ref_top, 1e-4, 1e-2).passed   # atol widens it
    swapped = ref.copy()
    swapped[0, 3], swapped[0, 4] = 5.0, 6.0              # 4th and 5th exchange places
    c = V.compare_logits(swapped, ref, ref_top, 1.0, 0.0)
    assert c.within and c.topk_agree == 0 and not c.passed
    nan = ref.copy()
    nan[0, 0] = np.nan
    assert not V.compare_logits(nan, ref, ref_top, 1.0, 0.0).passed


def test_logits_are_the_input_of_the_final_softmax(resnet50_graph: caffe2x.Graph) -> None:
    blob, value, note = V.logits_blob(resnet50_graph)
    assert (blob, value) == ("fc1000", "fc1000") and "Softmax 'prob'" in note


def test_validate_module_imports_no_framework() -> None:
    code = ("import sys, caffe2x.validation.validator, caffe2x.validation.preprocess, caffe2x.validation.report; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'onnx', 'onnxruntime', 'h5py', 'PIL') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
