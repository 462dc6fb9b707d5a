"""What a newcomer's mistakes produce: one line that says what is wrong and what to do, exit 2, no file.

Each test pins the message text of one mistake (issue 14): swapped or truncated files, a missing
format, a directory as output, a wrong input rank, options the chosen target would ignore, list
options that swallowed the model path. Also: help for every option, the README synopsis listing every
option, progress bars only on a terminal, and what ``--fold-bn`` reports.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.cli.main import build_parser, main
from tests.helpers.terminal import stderr_on_a_terminal

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def tiny(tiny_files: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """The session's tiny model, copied so that outputs written beside it land in this test's directory."""
    model, deploy = tmp_path / "tiny.caffemodel", tmp_path / "tiny-deploy.prototxt"
    model.write_bytes(tiny_files[0].read_bytes())
    deploy.write_text(tiny_files[1].read_text())
    return model, deploy


def fails(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """Run the CLI in-process; assert exit 2 and exactly one ``error:`` line; return that line."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def new_files(directory: Path, before: set[Path]) -> set[Path]:
    return set(directory.rglob("*")) - before


# --------------------------------------------------------------------------- which file is which
def test_prototxt_given_as_the_model_is_named_as_text(tiny, capsys) -> None:
    model, deploy = tiny
    before = set(model.parent.rglob("*"))
    line = fails(capsys, "convert", deploy, "--to", "onnx")
    assert f"{deploy} is a text prototxt, not a binary caffemodel: give it as the prototxt (--prototxt)" in line
    assert not new_files(model.parent, before)


def test_caffemodel_given_as_the_prototxt_is_named_as_binary(tiny, capsys) -> None:
    model, _ = tiny
    before = set(model.parent.rglob("*"))
    line = fails(capsys, "convert", model, "--prototxt", model, "--to", "onnx")
    assert f"{model} is a binary file (a caffemodel?), not a text prototxt" in line
    assert not new_files(model.parent, before)


def test_swapped_model_and_prototxt_are_called_swapped(tiny, capsys) -> None:
    model, deploy = tiny
    before = set(model.parent.rglob("*"))
    line = fails(capsys, "inspect", deploy, "--prototxt", model)
    assert f"the two files are swapped: {deploy} is the text prototxt and {model} the binary caffemodel" in line
    assert not new_files(model.parent, before)


def test_library_load_names_the_text_file_too(tiny) -> None:
    _, deploy = tiny
    with pytest.raises(caffe2x.Caffe2xError, match="is a text prototxt, not a binary caffemodel"):
        caffe2x.load(deploy)


@pytest.mark.parametrize("cut", [3, 1000, -1])
def test_truncated_caffemodel_says_truncated_with_the_byte_offset(tiny, capsys, cut: int) -> None:
    model, deploy = tiny
    data = model.read_bytes()
    short = model.parent / "short.caffemodel"
    short.write_bytes(data[:cut])
    before = set(model.parent.rglob("*"))
    line = fails(capsys, "convert", short, "-p", deploy, "--to", "safetensors")
    assert f"{short} is truncated" in line and "byte offset" in line
    if cut == 1000:  # cut inside the first layer: that layer is named, with where its record starts
        assert "layer #1 'conv1' starting at byte offset 13 needs" in line
    assert not new_files(model.parent, before)


# --------------------------------------------------------------------------- where the output goes
def test_convert_without_to_or_output_says_what_to_pass(tiny, capsys) -> None:
    model, deploy = tiny
    before = set(model.parent.rglob("*"))
    line = fails(capsys, "convert", model, "-p", deploy)
    assert line.startswith("error: say which format to write: --to safetensors|torch|keras|onnx, or -o FILE ending in")
    assert ".safetensors .pt .pth .h5 .keras .onnx" in line
    assert not new_files(model.parent, before)


@pytest.mark.parametrize("spelling", ["dot", "slash"])
def test_output_directory_receives_model_stem_dot_suffix(tiny, tmp_path: Path, monkeypatch, spelling: str) -> None:
    model, deploy = tiny
    out = tmp_path / "out"
    out.mkdir()
    if spelling == "dot":
        monkeypatch.chdir(out)
        target = "."
    else:
        target = f"{out}/"
    assert main(["convert", str(model), "-p", str(deploy), "--to", "onnx", "-o", target, "-q"]) == 0
    assert [p.name for p in out.iterdir()] == ["tiny.onnx"]


def test_output_directory_without_to_asks_for_the_format(tiny, capsys) -> None:
    model, deploy = tiny
    before = set(model.parent.rglob("*"))
    line = fails(capsys, "convert", model, "-p", deploy, "-o", f"{model.parent}/")
    assert "is a directory, which does not say the format: add --to safetensors|torch|keras|onnx" in line
    assert not new_files(model.parent, before)


def test_missing_output_directory_is_named(tiny, capsys) -> None:
    model, deploy = tiny
    line = fails(capsys, "convert", model, "-p", deploy, "--to", "onnx", "-o", f"{model.parent}/nowhere/")
    assert "directory" in line and "nowhere" in line and "does not exist" in line
    assert not (model.parent / "nowhere").exists()


# --------------------------------------------------------------------------- input rank
def test_input_shape_of_the_wrong_rank_names_the_expected_rank(tiny, capsys) -> None:
    model, _ = tiny
    before = set(model.parent.rglob("*"))
    line = fails(capsys, "convert", model, "--input-shape", "1,3,224", "--to", "onnx")
    assert ("layer 'conv1' (Convolution) needs a 4-D N,C,H,W input, but blob 'data' is 3-D [1, 3, 224] "
            "(input shape [1, 3, 224] from --input-shape)") in line
    assert not new_files(model.parent, before)


def test_input_shape_rank_differing_from_the_prototxt_is_refused(tiny, capsys) -> None:
    model, deploy = tiny
    line = fails(capsys, "inspect", model, "-p", deploy, "--input-shape", "1,3,224")
    assert "--input-shape 1,3,224 has 3 dimensions, but input 'data' is 4-D [1, 3, 32, 32] in the prototxt" in line


# --------------------------------------------------------------------------- flags the target would ignore
@pytest.mark.parametrize("args,message", [
    (["--to", "torch", "--full-model"], "--full-model applies only to the keras target, not to torch"),
    (["--to", "onnx", "--emit-code"], "--emit-code applies only to the torch target, not to onnx"),
    (["--to", "keras", "--profile", "torchvision"], "--profile torchvision applies only to the torch target, not to keras"),
    (["--to", "onnx", "--profile", "keras-applications"],
     "--profile keras-applications applies only to the keras target, not to onnx"),
    (["-o", "x.keras", "--profile", "keras-applications"],
     "--profile keras-applications writes .h5 files only, not x.keras"),
    (["--to", "torch", "-o", "x.onnx"],
     "cannot write x.onnx as torch (--to torch): .onnx is the onnx target's suffix; the torch target writes .pt, .pth files"),
])
def test_option_for_another_target_is_refused_before_the_model_is_read(tmp_path: Path, capsys, args, message) -> None:
    missing = tmp_path / "not-there.caffemodel"  # never read: the request is refused first
    before = set(tmp_path.rglob("*"))
    line = fails(capsys, "convert", missing, *[str(tmp_path / a) if a.startswith("x.") else a for a in args])
    assert message in line
    assert "no such file" not in line
    assert not new_files(tmp_path, before)


def test_library_save_refuses_options_of_another_target(tiny, tmp_path: Path) -> None:
    graph = caffe2x.load(*tiny)
    with pytest.raises(caffe2x.Caffe2xError, match="emit_code=True applies only to the torch target, not to onnx"):
        caffe2x.save(graph, tmp_path / "x.onnx", emit_code=True)
    with pytest.raises(caffe2x.Caffe2xError, match=r"profile='torchvision' applies only to the torch target"):
        caffe2x.save(graph, tmp_path / "x.safetensors", profile="torchvision")
    assert not list(tmp_path.glob("x.*"))


# --------------------------------------------------------------------------- list options
def test_images_and_against_never_swallow_the_model() -> None:
    parser = build_parser()
    args = parser.parse_args(["validate", "--images", "photos", "net.caffemodel", "--against", "a.pt",
                              "--against", "b.onnx,c.h5"])
    assert args.model == "net.caffemodel"
    assert args.images == ["photos"] and args.against == ["a.pt", "b.onnx", "c.h5"]


def test_path_with_a_comma_that_exists_is_one_path(tmp_path: Path) -> None:
    odd = tmp_path / "a,b.jpg"
    odd.write_bytes(b"")
    args = build_parser().parse_args(["validate", "m.caffemodel", "--images", str(odd)])
    assert args.images == [str(odd)]


def test_second_path_after_a_list_option_is_explained(capsys) -> None:
    line = fails(capsys, "validate", "--against", "a.pt", "b.onnx", "net.caffemodel")
    assert line == ("error: unrecognized arguments: net.caffemodel (MODEL was taken to be b.onnx; --against takes "
                    "one path: repeat the flag, e.g. --against a --against b, or join paths with commas, "
                    "--against a,b)")


# --------------------------------------------------------------------------- help and synopsis
def _subcommands() -> dict[str, object]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(action.choices)


def test_every_option_of_every_command_has_help() -> None:
    missing = [f"{name} {a.option_strings or a.dest}" for name, sub in _subcommands().items()
               for a in sub._actions if not a.help]
    assert not missing


def test_readme_synopsis_lists_every_option_of_every_command() -> None:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Command line\n\n```bash\n(.*?)```", text, re.S).group(1)
    synopsis = {m.group(1): m.group(0) for m in re.finditer(r"^caffe2x (\w+) .*(?:\n {8}.*)*", block, re.M)}
    missing = []
    for name, sub in _subcommands().items():
        for action in sub._actions:
            flags = [f for f in action.option_strings if f not in ("-h", "--help")]
            if flags and not any(re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", synopsis.get(name, ""))
                                 for f in flags):
                missing.append(f"{name} {flags[0]}")
    assert not missing


def test_html_report_turns_per_layer_on_and_says_so(tiny, tmp_path: Path, capsys) -> None:
    model, deploy = tiny
    html = tmp_path / "r.html"
    rc = main(["validate", str(model), "-p", str(deploy), "--frameworks", "numpy", "--html", str(html)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "--html plots the error per layer: comparing every layer (--per-layer)" in err
    assert "<svg" in html.read_text()


# --------------------------------------------------------------------------- progress
def _fixture_stderr(tmp_path: Path, *extra: str, terminal: bool) -> str:
    cmd = [sys.executable, "-m", "caffe2x", "fixture", "tiny", "-o", str(tmp_path / "fx"), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    if not terminal:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env).stderr
    code, err = stderr_on_a_terminal(cmd, env=env, timeout=120)
    assert code == 0
    return err.decode(errors="replace")


def test_fixture_shows_progress_bars_on_a_terminal_only(tmp_path: Path) -> None:
    shown = _fixture_stderr(tmp_path, terminal=True)
    assert "calibrating BatchNorm:" in shown and "layer/s" in shown
    assert "serialising blobs:" in shown
    piped = _fixture_stderr(tmp_path, terminal=False)
    assert "%|" not in piped and "synthesising tiny" in piped
    quiet = _fixture_stderr(tmp_path, "-q", terminal=True)
    assert "%|" not in quiet and "synthesising" not in quiet


# --------------------------------------------------------------------------- --fold-bn report
def test_fold_bn_reports_pairs_layers_and_tensor_counts(tiny, tmp_path: Path, capsys) -> None:
    model, deploy = tiny
    graph = caffe2x.load(model, deploy)
    bns = [n.name for n in graph.nodes if n.op == "BatchNorm"]
    out = tmp_path / "f.safetensors"
    assert main(["convert", str(model), "-p", str(deploy), "--fold-bn", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    folded = caffe2x.load(out)
    assert re.search(rf"note: --fold-bn folded {len(bns)} BatchNorm\+Scale pairs into conv1, res2a_branch1, "
                     rf"res2a_branch2a, res2a_branch2b, res2a_branch2c, … \({len(bns) - 6} more\), res3a_branch2c; "
                     rf"tensors {len(graph.tensors)} -> {len(folded.tensors)}\n", err), err
    assert len(folded.tensors) < len(graph.tensors)


def test_fold_bn_report_lists_every_folded_chain_and_what_stayed() -> None:
    from caffe2x.graph.transforms import fold_bn_report

    graph = fixtures.graph("tiny")
    folded, report = fold_bn_report(graph)
    assert report.folded[0] == ("conv1", ["bn_conv1", "scale_conv1"])
    assert len(report.folded) == sum(n.op == "BatchNorm" for n in graph.nodes) and not report.unfolded
    assert (report.tensors_before, report.tensors_after) == (len(graph.tensors), len(folded.tensors))


# --------------------------------------------------------------------------- warnings
def test_a_caffe2x_warning_is_one_warning_line_not_pythons_file_line_format(tmp_path: Path) -> None:
    """HED's two ``crop`` layers: the rename is said once, as ``warning: …``; no path into caffe2x's
    code, no category name, no source line; the conversion goes on (exit 0)."""
    from tests.caffe.test_duplicate_layer_names import HED_LIKE, caffemodel, hed_weights

    deploy, model = tmp_path / "hed.prototxt", tmp_path / "hed.caffemodel"
    deploy.write_text(HED_LIKE)
    model.write_bytes(caffemodel(hed_weights()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("CAFFE2X_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "caffe2x", "convert", str(model), "--prototxt", str(deploy), "--to",
                        "safetensors", "-o", str(tmp_path / "hed.safetensors")], capture_output=True, text=True,
                       env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warned == ["warning: the net names several layers alike (Caffe allows it: the caffemodel's blobs go to "
                      "the first layer of the name); the later ones are renamed: 'crop' -> 'crop_2'"], r.stderr
    assert "Warning" not in r.stderr and ".py:" not in r.stderr and "build_graph(" not in r.stderr, r.stderr
    assert (tmp_path / "hed.safetensors").exists()


def test_another_librarys_warning_is_one_line_naming_its_category(capsys: pytest.CaptureFixture[str]) -> None:
    from caffe2x.cli.main import _show_warning

    _show_warning(DeprecationWarning("`torch.jit.trace` is deprecated.\nPlease switch to torch.export."),
                  DeprecationWarning, "/somewhere/torch/jit/_trace.py", 1006)
    assert capsys.readouterr().err == "warning: `torch.jit.trace` is deprecated. (DeprecationWarning)\n"
