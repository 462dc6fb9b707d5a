"""Writing the torch target's ``.pt`` file (a flat state_dict) and, on request, standalone model code."""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.targets import WriteOptions
from caffe2x.targets.torch.model import node_module_names, to_module
from caffe2x.targets.torch.profiles import torchvision_profile

#: ``WriteOptions.dtype`` -> torch dtype of the floating-point tensors written
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _cast(state: Mapping[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    if dtype not in DTYPES:
        raise Caffe2xError(f"unsupported dtype {dtype!r} for the torch target; choose {', '.join(DTYPES)}")
    target = DTYPES[dtype]
    # float32 stays the graph's memory (torch.save writes it straight out); other dtypes are new tensors
    return {k: (v.detach().to(target) if v.is_floating_point() else v.detach()).contiguous()
            for k, v in state.items()}


def state_dict(graph: Graph) -> dict[str, torch.Tensor]:
    """The float32 state_dict :func:`write` saves without a profile (= ``to_module(graph).state_dict()``),
    sharing the graph's memory: nothing is copied on the way to ``torch.save``."""
    return dict(to_module(graph, share_memory=True).state_dict())


def final_path(path: Path, options: WriteOptions) -> Path:
    """The name the written file will finally have: ``write`` receives a temporary name, the caller
    (:func:`caffe2x.convert.write`) says where it goes in ``options.destination``."""
    return Path(options.destination) if options.destination else path


def code_path(path: Path, options: WriteOptions) -> Path:
    """Where ``emit_code`` puts the generated model code: ``options.extra['emit_code']`` when it is a
    path, else ``<stem>_model.py`` next to the weights (``resnet50.pt`` -> ``resnet50_model.py``), the
    stem made importable as a module name."""
    emit = options.extra.get("emit_code")
    if isinstance(emit, (str, Path)) and str(emit).endswith(".py"):
        return Path(emit)
    dest = final_path(path, options)
    stem = re.sub(r"[^A-Za-z0-9_]", "_", dest.stem)  # importable: resnet-50.pt -> resnet_50_model.py
    return dest.with_name(("model_" if stem[:1].isdigit() else "") + stem + "_model.py")


def write(graph: Graph, path: str | Path, options: WriteOptions) -> list[str]:
    """Save the state_dict as a flat ``{key: tensor}`` dict with ``torch.save``.

    ``torch.load(path, weights_only=True)`` reads it; it loads with ``strict=True`` into
    ``to_module(graph)`` (no profile), or into ``torchvision.models.resnetNN()`` (``profile='torchvision'``).
    ``options.extra['emit_code']`` also writes standalone model code (see :func:`code_path`).
    """
    path = Path(path)
    notes: list[str] = []
    if options.extra.get("emit_code") and options.profile is not None:
        raise Caffe2xError("emit_code writes the Caffe-architecture net, whose keys are the Caffe layer "
                           f"names; it cannot be combined with profile {options.profile!r}")
    if options.profile is None:
        state = state_dict(graph)
        renamed = {n.name: m for n, m in zip(graph.nodes, node_module_names(graph)) if n.name != m}
        notes.append(f"{len(state)} tensors keyed by Caffe layer name; load with "
                     f"caffe2x.to_torch(graph).load_state_dict(torch.load(path, weights_only=True))")
        if renamed:
            shown = ", ".join(f"{k!r} -> {v!r}" for k, v in list(renamed.items())[:3])
            more = f" and {len(renamed) - 3} more" if len(renamed) > 3 else ""
            notes.append(f"{len(renamed)} layer name(s) are not valid module names and were renamed: {shown}{more}")
    elif options.profile == "torchvision":
        profile = torchvision_profile(graph)
        state = profile.state
        args = "" if profile.num_classes == 1000 else f"num_classes={profile.num_classes}"
        notes.append(f"torchvision profile: keys load into torchvision.models.{profile.constructor}({args}) "
                     f"with strict=True")
        notes.append(profile.measure(graph))
    else:
        raise Caffe2xError(f"unknown profile {options.profile!r} for the torch target (available: torchvision)")
    torch.save(_cast(state, options.dtype), path)
    if options.extra.get("emit_code"):
        from caffe2x.fileio import atomic_output
        from caffe2x.targets.torch.codegen import generate

        target = code_path(path, options)
        weights = final_path(path, options)
        source = generate(graph, weights_name=weights.name, module_name=target.stem)
        with atomic_output(target, overwrite=options.overwrite) as tmp:
            tmp.write_text(source, encoding="utf-8")
        notes.append(f"model code written to {target}: from {target.stem} import Net; net = Net(); "
                     f"net.load_state_dict(torch.load({weights.name!r}, weights_only=True))")
    return notes

