"""``validate --against`` on naming-profile files (``--profile torchvision`` ``.pt``,
``--profile keras-applications`` ``.h5``), whose architecture differs from Caffe's: the tensors are
compared with what that profile conversion stores (torchvision / keras.applications names, BN and Scale
merged), and the profile net's logit difference on the converter's seeded input must stay within the
bound the converter printed: recorded in the ``.h5``'s attributes, re-measured from the model for a
``.pt`` (which cannot record it), and only when ``--profile torchvision`` says the file is one."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import caffe2x
from caffe2x.validation.artifacts import logits_rtol
from caffe2x.validation.preprocess import default_image_dir
from caffe2x.validation.validator import validate

torch = pytest.importorskip("torch")
pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

#: module fixtures kept on one xdist worker (tests/conftest.py): each builds a ResNet-50 run
XDIST_SHARED_FIXTURES = ("run",)


#: one tensor flipped in each tampered copy (its name in the file)
TV_TAMPERED = "layer2.0.conv2.weight"
APPS_TAMPERED = "conv3_block1_2_conv/conv3_block1_2_conv/kernel"


def _flip_pt(src: Path, key: str, out: Path) -> None:
    sd = torch.load(src, weights_only=True)
    t = sd[key]
    t.view(-1)[int(t.abs().argmax())] *= -1
    torch.save(sd, out)


def _flip_h5(src: Path, name: str, out: Path) -> None:
    shutil.copy(src, out)  # keeps the recorded profile and bound
    with h5py.File(out, "r+") as f:
        arr = f[name][...]
        arr.reshape(-1)[int(np.abs(arr).argmax())] *= -1
        f[name][...] = arr


def _printed_bound(notes: list[str], pattern: str) -> float:
    m = re.search(pattern, " ".join(notes))
    assert m is not None, notes
    return float(m.group(1))


@pytest.fixture(scope="module")
def run(resnet50_graph_session, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The synthetic ResNet-50 written with both profiles, a tampered copy of each, all checked in one
    validation (one photo, no framework besides the artifacts) with ``--profile torchvision``; and the
    torchvision file once more without it."""
    graph = resnet50_graph_session
    d = tmp_path_factory.mktemp("against-profiles")
    tv, apps = d / "resnet50-tv.pt", d / "resnet50-apps.h5"
    tv_notes = caffe2x.save(graph, tv, profile="torchvision")
    apps_notes = caffe2x.save(graph, apps, profile="keras-applications")
    tv16, tv_fold = d / "resnet50-tv-fp16.pt", d / "resnet50-tv-folded.pt"
    caffe2x.save(graph, tv16, profile="torchvision", dtype="float16")
    caffe2x.save(graph, tv_fold, profile="torchvision", fold_bn=True)
    tv_bad, apps_bad = d / "tampered-tv.pt", d / "tampered-apps.h5"
    _flip_pt(tv, TV_TAMPERED, tv_bad)
    _flip_h5(apps, APPS_TAMPERED, apps_bad)
    apps_old = d / "unrecorded-apps.h5"  # as written before the bound was recorded
    shutil.copy(apps, apps_old)
    with h5py.File(apps_old, "r+") as f:
        del f.attrs["caffe2x_profile"], f.attrs["caffe2x_profile_max_rel"]
    photo = [default_image_dir() / "chelsea_cat.jpg"]
    # in this process (isolate=False): these tests pin the profile bounds; a child per artifact would
    # import torch or Keras seven times over (~70 s of CPU on 2 cores). The second run keeps the default,
    # a child process for the big model, so a profile file is also checked the way the CLI checks it
    report = validate(graph, frameworks=[], images=photo,
                      against=[tv, apps, tv16, tv_fold, tv_bad, apps_bad, apps_old], profiles=["torchvision"],
                      isolate=False)
    unflagged = validate(graph, frameworks=[], images=photo, against=[tv])
    by_name = {Path(a.path).name: a for a in report.artifacts}
    return SimpleNamespace(report=report, unflagged=unflagged, by_name=by_name, tv=tv, apps=apps,
                           tv_bound=_printed_bound(tv_notes, r"\(relative ([0-9.e+-]+)\)"),
                           apps_bound=_printed_bound(apps_notes, r"by ([0-9.e+-]+) max relative error"))


def test_keras_applications_h5_passes_against_the_bound_recorded_in_it(run: SimpleNamespace) -> None:
    a = run.by_name["resnet50-apps.h5"]
    assert a.status == "PASS", a.messages
    c = a.conversion
    assert c["profile"] == "keras-applications" and c["profile_bound_source"] == "recorded in the file"
    assert c["profile_bound"] == pytest.approx(run.apps_bound, rel=0.01)  # the number the converter printed
    # re-running the converter's measurement on the file reproduces it: far above 1e-4, not above the bound
    assert 1e-3 < c["profile_max_rel"] <= c["logits_rtol"]
    assert c["profile_max_rel"] == pytest.approx(c["profile_bound"], rel=1e-3)
    assert a.tensors_checked == 320 and not a.differing and not a.missing and not a.extra
    assert a.comparison is not None and a.comparison.max_rel > 1e-3  # the batch's difference is reported
    with h5py.File(run.apps, "r") as f:
        assert f.attrs["caffe2x_profile"] in ("keras-applications", b"keras-applications")


def test_torchvision_pt_with_profile_flag_passes_against_the_re_measured_bound(run: SimpleNamespace) -> None:
    a = run.by_name["resnet50-tv.pt"]
    assert a.status == "PASS", a.messages
    c = a.conversion
    assert c["profile"] == "torchvision" and c["profile_bound_source"] == "re-measured from the model (--profile)"
    assert c["profile_bound"] == pytest.approx(run.tv_bound, rel=0.01)
    assert c["profile_max_rel"] == pytest.approx(c["profile_bound"], rel=1e-3) and c["profile_max_rel"] > 1e-3
    assert a.tensors_checked == 267 and not a.differing and not a.missing and not a.extra
    table = run.report.table()
    assert "torchvision profile: seeded-input logits" in table


def test_a_float16_torchvision_pt_passes_with_its_rounding_added_to_the_bound(run: SimpleNamespace) -> None:
    a = run.by_name["resnet50-tv-fp16.pt"]
    assert a.status == "PASS", a.messages
    c = a.conversion
    assert c["dtype"] == "float16" and c["profile"] == "torchvision"
    assert c["logits_rtol"] == pytest.approx(c["profile_bound"] + logits_rtol("float16", 1e-4))
    assert c["profile_max_rel"] <= c["logits_rtol"] and not a.differing


def test_a_folded_torchvision_pt_is_recognised(run: SimpleNamespace) -> None:
    a = run.by_name["resnet50-tv-folded.pt"]
    assert a.status == "PASS", a.messages
    assert a.conversion["fold_bn"] is True and a.conversion["profile"] == "torchvision"
    assert a.conversion["profile_max_rel"] == pytest.approx(a.conversion["profile_bound"], rel=1e-3)


@pytest.mark.parametrize(("name", "tensor"), [("tampered-tv.pt", TV_TAMPERED), ("tampered-apps.h5", APPS_TAMPERED)])
def test_a_tampered_profile_file_fails_naming_the_tensor(run: SimpleNamespace, name: str, tensor: str) -> None:
    a = run.by_name[name]
    assert a.status == "FAIL"
    assert [d.tensor for d in a.differing] == [tensor]
    assert a.messages[0].startswith(f"{name}: tensor {tensor!r} differs")
    assert not run.report.passed


def test_a_torchvision_pt_without_the_profile_flag_is_refused_in_one_line(run: SimpleNamespace) -> None:
    (a,) = run.unflagged.artifacts
    assert a.status == "FAIL" and not run.unflagged.passed
    assert a.messages == ["resnet50-tv.pt: holds the tensors of a --profile torchvision conversion, and a .pt "
                          "file cannot record the logit bound that conversion printed: pass --profile "
                          "torchvision to check it against that bound"]


def test_a_keras_applications_h5_without_the_record_asks_for_the_profile_flag(run: SimpleNamespace) -> None:
    a = run.by_name["unrecorded-apps.h5"]
    assert a.status == "FAIL"
    assert a.messages == ["unrecorded-apps.h5: holds the tensors of a --profile keras-applications conversion but "
                          "records no logit bound for it (written before caffe2x recorded one?): pass --profile "
                          "keras-applications to check it against that bound"]


def test_validate_takes_profile_on_the_command_line() -> None:
    from caffe2x.cli.main import build_parser

    args = build_parser().parse_args(["validate", "m.caffemodel", "--against", "a.pt", "--profile", "torchvision"])
    assert args.profile == ["torchvision"]
    with pytest.raises(caffe2x.Caffe2xError, match="unknown naming profile 'resnet'"):
        validate(caffe2x.fixtures.graph("tiny"), frameworks=[], profiles=["resnet"])
