"""Fine-tuning with torch: :mod:`caffe2x.targets.torch.finetune` (the framework is imported only by its
own target package; this name stays for ``from caffe2x.finetune.torch import prepare``)."""
from __future__ import annotations

from ..targets.torch.finetune import CaffePreprocess, CaffeTransform, prepare, HEAD_INIT_STD

__all__ = ["CaffePreprocess", "CaffeTransform", "prepare", "HEAD_INIT_STD"]
