"""PyTorch target: the graph as a real ``torch.nn.Module``, its weights as a ``.pt`` state_dict, optional
standalone model code, and the ``torchvision`` naming profile for KaimingHe's ResNets.

Layout of this package (one job per module; nothing here is imported by code outside the torch target
except through this ``__init__``):

* :mod:`.modules` -- the Caffe-exact ``nn.Module`` classes (pooling, BatchNorm, Scale, LRN, …), copied
  verbatim into ``--emit-code`` output;
* :mod:`.ops` -- the op registry :data:`OPS`: one builder per Caffe op (module class, constructor
  arguments, tensors);
* :mod:`.model` -- :func:`to_module` and the module naming rule;
* :mod:`.files` -- :func:`write` (the ``.pt`` state_dict); :mod:`.codegen` -- ``--emit-code``;
* :mod:`.profiles` -- the ``torchvision`` naming profile.

A new op family is a module ``caffe2x/targets/torch/<family>.py`` that imports only from ``.ops`` (and
``.modules`` or caffe2x helpers) and registers builders with :func:`builder`; list it in
:data:`caffe2x.targets.families.OP_FAMILIES` so importing the target registers it.
"""
from __future__ import annotations


from caffe2x.targets import BUILTIN
from caffe2x.targets.families import OP_FAMILIES, load_op_families
from caffe2x.targets.torch.files import DTYPES, code_path, final_path, state_dict, write
from caffe2x.targets.torch.model import (CaffeNet, Step, module_names, node_module_names, resolve_outputs,
                                         sanitize, to_module)
from caffe2x.targets.torch.modules import (HELPER_CLASSES, CaffeBatchNorm, CaffeConcat, CaffeEltwise,
                                           CaffeInnerProduct, CaffeLRN, CaffePooling, CaffeScale, helper_source)
from caffe2x.targets.torch.ops import BUILDERS, OPS, Builder, LayerSpec, builder, layer_spec
from caffe2x.targets.torch.profiles import TorchvisionProfile, TorchvisionResNet, torchvision_profile
from caffe2x.targets.torch.trainable import TrainableBatchNorm, make_trainable


#: this package's :class:`~caffe2x.targets.Target` (declared in :data:`caffe2x.targets.BUILTIN`, so that
#: listing targets imports no framework; its write / load / stored_tensors live in :mod:`.target`)
TARGET = next(t for t in BUILTIN if t.name == "torch")
SUFFIXES = TARGET.suffixes

#: op-family modules of this package (``<family>.py`` beside ``ops.py``); importing the target imports
#: each, which registers its builders in :data:`OPS` (see :mod:`caffe2x.targets.families`)
FAMILIES: tuple[str, ...] = OP_FAMILIES
load_op_families(__name__, "torch", OPS, FAMILIES)

__all__ = ["TARGET", "SUFFIXES", "DTYPES", "FAMILIES", "to_module", "write", "CaffeNet", "OPS", "BUILDERS", "Builder",
           "builder", "LayerSpec", "layer_spec", "module_names", "node_module_names", "sanitize", "state_dict",
           "torchvision_profile", "TorchvisionProfile", "TorchvisionResNet", "HELPER_CLASSES", "CaffeBatchNorm",
           "CaffeConcat", "CaffeEltwise", "CaffeInnerProduct", "CaffeLRN", "CaffePooling", "CaffeScale",
           "helper_source", "resolve_outputs", "Step", "code_path", "final_path", "TrainableBatchNorm",
           "make_trainable"]
