"""Fine-tuning with keras: :mod:`caffe2x.targets.keras.finetune` (the framework is imported only by its
own target package; this name stays for ``from caffe2x.finetune.keras import prepare``)."""
from __future__ import annotations

from ..targets.keras.finetune import CaffePreprocessing, prepare, HEAD_INIT_STD

__all__ = ["CaffePreprocessing", "prepare", "HEAD_INIT_STD"]
