"""Fine-tuning a converted Caffe model in the user's framework: new head, freezing by Caffe layer name.

``caffe2x.finetune.torch`` and ``caffe2x.finetune.keras`` (implemented in the target packages,
``caffe2x/finetune/torch.py`` and ``caffe2x/finetune/keras.py``, the only places that
import their framework) each offer ``prepare(model, num_classes, head=None, freeze="all-but-head", softmax=False)`` and the Caffe
input pipeline as a framework object. This package itself imports neither; it holds what both share: how
a ``freeze`` specification names layers, and the error for a name that is not in the net.

``freeze`` forms (layer names are Caffe's, e.g. ``res4f``; order is the net's layer order):

* ``None`` or ``"none"``: nothing is frozen;
* ``"all-but-head"``: every layer except the new head;
* ``"up-to:<layer>"``: every layer from the first up to and including ``<layer>``;
* a list (or one name) of layer names: exactly those layers.

A frozen layer's parameters get no gradient and its BatchNorm keeps using (and never updates) the stored
statistics, even in training mode; everything else stays trainable.
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence

from caffe2x.errors import Caffe2xError

__all__ = ["FreezeSpec", "UP_TO", "frozen_layers", "resolve_layer"]

FreezeSpec = str | Sequence[str] | None

#: prefix of the "everything up to this layer" form
UP_TO = "up-to:"
#: how many close matches an unknown-name error lists
CLOSE_MATCHES = 5


def resolve_layer(name: str, names: Sequence[str], what: str = "layer") -> str:
    """``name`` if the net has it, else a :class:`Caffe2xError` listing the closest names (difflib)."""
    if name in names:
        return name
    close = difflib.get_close_matches(name, list(names), n=CLOSE_MATCHES, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else f"; the net's layers run {names[0]} .. {names[-1]}"
    raise Caffe2xError(f"no {what} named {name!r} in the net{hint}")


def frozen_layers(spec: FreezeSpec, order: Sequence[str], head: str) -> list[str]:
    """The layer names ``spec`` freezes, in net order (``order``: every layer name, in net order)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return []
    if isinstance(spec, str):
        if spec == "all-but-head":
            return [n for n in order if n != head]
        if spec.startswith(UP_TO):
            last = resolve_layer(spec[len(UP_TO):].strip(), order, "layer (freeze='up-to:...')")
            chosen = list(order[:order.index(last) + 1])
        elif spec in order:
            chosen = [spec]
        else:
            if ":" in spec:
                raise Caffe2xError(f"freeze={spec!r}: use 'all-but-head', '{UP_TO}<layer>', a list of layer "
                                   "names or None")
            chosen = [resolve_layer(spec, order, "layer (freeze)")]
    else:
        wanted = {resolve_layer(str(n), order, "layer (freeze)") for n in spec}
        chosen = [n for n in order if n in wanted]
    if head in chosen:
        raise Caffe2xError(f"freeze={spec!r} includes the head {head!r}, which is replaced to be trained")
    return chosen
