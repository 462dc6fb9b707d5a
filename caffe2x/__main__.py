"""``python -m caffe2x …`` is the ``caffe2x`` command."""
import sys

from caffe2x.cli.main import main

sys.exit(main())
