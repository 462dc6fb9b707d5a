"""Graph-to-graph rewrites that every target can use (``--fold-bn``, reduced precision checks)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from caffe2x.graph.ir import Graph, Node
from caffe2x.graph.numeric import round_to


@dataclass
class BNFolds:
    """What :func:`fold_bn` did, for the user: which chains went into which layer, tensors before/after."""

    folded: list[tuple[str, list[str]]] = field(default_factory=list)  # (conv/fc layer, [BatchNorm, Scale?])
    unfolded: list[str] = field(default_factory=list)  # BatchNorm layers left as they were
    tensors_before: int = 0
    tensors_after: int = 0

    def describe(self, shown: int = 6) -> str:
        """One line: ``folded 53 BatchNorm+Scale pairs into conv1, …; tensors 320 -> 161``."""
        pairs = sum(1 for _, chain in self.folded if len(chain) == 2)
        alone = len(self.folded) - pairs
        what = " and ".join(part for part in (
            f"{pairs} BatchNorm+Scale pair{'s' * (pairs != 1)}" if pairs else "",
            f"{alone} lone BatchNorm{'s' * (alone != 1)}" if alone else "") if part) or "no BatchNorm"
        layers = [layer for layer, _ in self.folded]
        if len(layers) > shown:
            layers = layers[:shown - 1] + [f"… ({len(self.folded) - shown} more)", layers[-1]]
        into = f" into {', '.join(layers)}" if layers else ""
        left = (f"; {len(self.unfolded)} BatchNorm left unfolded (not after a Convolution/InnerProduct it alone "
                f"reads): {', '.join(self.unfolded[:shown])}" if self.unfolded else "")
        return f"--fold-bn folded {what}{into}; tensors {self.tensors_before} -> {self.tensors_after}{left}"


def fold_bn(graph: Graph) -> Graph:
    """Fold each BatchNorm (and the Scale after it) into the Convolution or InnerProduct before it;
    see :func:`fold_bn_report`."""
    return fold_bn_report(graph)[0]


def fold_bn_report(graph: Graph) -> tuple[Graph, BNFolds]:
    """Fold each BatchNorm (and the Scale after it) into the Convolution or InnerProduct before it,
    and say what was folded.

    ``y = gamma * (w*x + b - mean) / sqrt(var + eps) + beta`` becomes one layer with
    ``w' = w * s`` and ``b' = (b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``, computed in
    float64 so the folded net matches the original to float32 rounding. A chain is folded only when
    each link is the sole reader of the previous value, so no other layer sees the difference. The
    folded layer keeps its name and produces the chain's last value (blob names stay valid).
    """
    g = graph.copy()
    report = BNFolds(tensors_before=len(graph.tensors))
    readers: dict[str, list[Node]] = {}
    for n in g.nodes:
        for v in n.inputs:
            readers.setdefault(v, []).append(n)
    removed: set[str] = set()
    for node in g.nodes:
        if node.op not in ("Convolution", "InnerProduct") or node.name in removed:
            continue
        chain = _bn_chain(node, readers, g)
        if not chain:
            continue
        bn = chain[0]
        scale_node = chain[1] if len(chain) > 1 else None
        w = g.tensors[node.params["weight"]].astype(np.float64)
        out_c = w.shape[0]
        b = g.tensors[node.params["bias"]].astype(np.float64) if "bias" in node.params else np.zeros(out_c)
        mean = g.tensors[bn.params["running_mean"]].astype(np.float64)
        var = g.tensors[bn.params["running_var"]].astype(np.float64)
        s = 1.0 / np.sqrt(var + bn.attrs["eps"])
        shift = -mean * s
        if scale_node is not None:
            gamma = g.tensors[scale_node.params["weight"]].astype(np.float64).reshape(-1)
            s, shift = s * gamma, shift * gamma
            if "bias" in scale_node.params:
                shift = shift + g.tensors[scale_node.params["bias"]].astype(np.float64).reshape(-1)
        g.tensors[node.params["weight"]] = (w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        node.params["bias"] = f"{node.name}.bias"
        g.tensors[node.params["bias"]] = (b * s + shift).astype(np.float32)
        for dead in chain:
            removed.add(dead.name)
            for key in dead.params.values():
                g.tensors.pop(key, None)
        node.outputs = [chain[-1].outputs[0]]
        report.folded.append((node.name, [n.name for n in chain]))
    g.nodes = [n for n in g.nodes if n.name not in removed]
    live = set(g.inputs) | {v for n in g.nodes for v in n.outputs}
    g.shapes = {k: v for k, v in graph.shapes.items() if k in live}
    report.unfolded = [n.name for n in g.nodes if n.op == "BatchNorm"]
    report.tensors_after = len(g.tensors)
    return g, report


def _bn_chain(node: Node, readers: dict[str, list[Node]], g: Graph) -> list[Node]:
    """The BatchNorm [+ per-channel Scale] that solely reads ``node``'s output, if any."""
    out = node.outputs[0]
    nxt = readers.get(out, [])
    if len(nxt) != 1 or nxt[0].op != "BatchNorm" or out in g.outputs:
        return []
    chain = [nxt[0]]
    bn_out = nxt[0].outputs[0]
    after = readers.get(bn_out, [])
    if (len(after) == 1 and after[0].op == "Scale" and after[0].attrs["axis"] == 1
            and after[0].attrs["num_axes"] == 1 and bn_out not in g.outputs):
        chain.append(after[0])
    return chain


def rounded(graph: Graph, dtype: str) -> Graph:
    """A copy whose tensors are rounded to ``dtype`` (kept as float32): what a reduced-precision file
    holds, so the reference can measure what the rounding costs."""
    return graph.copy({k: round_to(v, dtype) for k, v in graph.tensors.items()})
