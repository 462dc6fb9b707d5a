"""The ``caffe2x`` command: a thin shell over the library, one module per subcommand."""
from __future__ import annotations

from caffe2x.cli.main import main

__all__ = ["main"]
