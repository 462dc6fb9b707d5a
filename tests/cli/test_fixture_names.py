"""``caffe2x fixture``'s names come from one place, :func:`caffe2x.fixtures.model_names` (plus the
small test nets of ``fixtures.ZOO``): argparse's choices and help, README's command line and the
library's error for an unknown name all list that registry."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from caffe2x import Caffe2xError, fixtures
from caffe2x.cli.main import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def fixture_parser() -> argparse.ArgumentParser:
    parser = build_parser("fixture")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["fixture"]


def test_readme_lists_exactly_the_registry_s_models() -> None:
    lines = re.findall(r"^caffe2x fixture (\S+) -o DIR", README.read_text(), re.M)
    assert len(lines) == 1, lines
    assert lines[0].split("|") == fixtures.model_names()


def test_argparse_accepts_the_registry_and_its_help_lists_the_models() -> None:
    parser = fixture_parser()
    name = next(a for a in parser._actions if a.dest == "name")
    assert list(name.choices) == fixtures.names() == [*fixtures.model_names(), *fixtures.ZOO]
    helptext = " ".join(parser.format_help().split())
    assert " | ".join(fixtures.model_names()) in helptext


def test_every_registered_name_has_a_prototxt() -> None:
    for name in fixtures.names():
        assert "layer" in fixtures.prototxt_for(name)


def test_an_unknown_name_is_an_error_listing_the_registry() -> None:
    with pytest.raises(Caffe2xError) as err:
        fixtures.prototxt_for("resnet34")
    assert ", ".join(fixtures.model_names()) in str(err.value)
    assert ", ".join(fixtures.ZOO) in str(err.value)
