"""``python -m caffe2x …`` is the ``caffe2x`` command."""
import sys

from .cli import main

sys.exit(main())
