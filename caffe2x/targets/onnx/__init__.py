"""ONNX target: the graph as an opset-17 ONNX model built directly with ``onnx.helper``.

No torch or tensorflow is involved: every Caffe layer becomes a few ONNX nodes through one converter
function per op (:data:`OPS` in :mod:`.ops`; adding an op is registering one function).

What the file looks like
------------------------
* Graph input: named like the Caffe input blob (``data``), NCHW, float32, batch dimension symbolic
  (``N``); the other dimensions are the prototxt's.
* Graph outputs: the net's output blobs by Caffe blob name (``prob``). A blob rewritten in place keeps
  its Caffe name for its final value, as pycaffe's ``net.blobs`` does; an earlier value that would
  clash with such a name is renamed ``<value>@<producing layer>``. The one name that cannot move is
  the graph input's: a blob rewritten in place from the input (``data`` through an in-place
  BatchNorm) is output under its value name (``data@bn``).
* Initializers: exactly the graph's tensors under their tensor keys (``conv1.weight``,
  ``bn_conv1.running_mean``, ``fc1000.bias``). Helper constants (reshape shapes, BatchNorm's unit scale
  and zero shift, the AVE pooling divisor map) are ``Constant`` nodes, so the initializer list is the
  weight list and nothing else.
* Node names are Caffe layer names: the node producing a layer's output is named ``<layer>``; a
  layer needing several nodes names its helpers (and their outputs) ``<layer>/<what>``.
* ``dtype="float16"`` / ``"bfloat16"``: initializers are stored in that type, each followed by a
  ``Cast`` to float32 (named ``<key>/cast``); all computation stays float32. Casting the compute too
  would change every op's accumulation precision; storing reduced weights is what halves the file, and
  the runtime folds the casts at load.

Caffe semantics, op by op
-------------------------
==============  ==============================================================================
Convolution     ``Conv`` with explicit symmetric pads, strides, dilations, group
BatchNorm       ``BatchNormalization`` (inference form) with scale 1, B 0 and Caffe's eps, which
                ONNX also adds to the variance inside the square root
Scale           ``Mul`` (and ``Add``) by the parameters reshaped to ``shape[axis:axis+num_axes]``
                followed by ones, so numpy broadcasting lines them up at ``axis``
ReLU            ``Relu``, or ``LeakyRelu(alpha=negative_slope)``
Sigmoid, TanH   ``Sigmoid``, ``Tanh``;  Dropout: ``Identity``
Pooling         Caffe's ceil-mode window rule made explicit: ``Pad`` (``-inf`` for MAX, 0 for AVE)
                by ``pad`` on the left and by :func:`~caffe2x.graph.reference.pool_geometry`'s amount on
                the right, then ``MaxPool``/``AveragePool`` with no pads and ``ceil_mode=0``
                (ONNX's own ceil mode clips windows differently when ``pad > 0``). AVE then
                multiplies by a constant ``k_h*k_w / divisor`` map, the divisor being Caffe's
                (padding inside ``H + pad`` counts, the ceil overhang does not); the ``Mul`` is left
                out where the map is all ones. ``global_pooling``: ``GlobalMaxPool`` /
                ``GlobalAveragePool``
Eltwise         SUM: ``Mul`` by each ``coeff`` != 1, then ``Add`` (two inputs) or ``Sum``;
                PROD: chained ``Mul``; MAX: ``Max``
InnerProduct    ``Flatten(axis)`` (C, H, W order, as Caffe) then ``Gemm(transB=1)`` with the
                ``(O, I)`` weight as stored; reshaped back to ``(*lead, O)`` when ``axis != 1``
Softmax         ``Softmax(axis)`` (opset >= 13 normalises over that one axis, as Caffe)
LRN             ACROSS_CHANNELS: ``LRN`` — ONNX's ``x / (bias + alpha/size * sum)^beta`` over a
                channel window ``[c - (size-1)//2, c + size-1-(size-1)//2]`` is Caffe's formula with
                ``bias = k``. WITHIN_CHANNEL: ``x * (1 + alpha * avg_{n x n}(x^2))^-beta`` built
                from ``Mul``, ``Pad`` (zeros, ``(n-1)/2``), ``AveragePool`` (divides by ``n*n``,
                as Caffe does), ``Mul``/``Add``/``Pow``/``Mul``; Caffe ignores ``k`` there
Concat          ``Concat(axis)``
Flatten         ``Reshape`` to the computed shape with ``-1`` in the (dynamic) batch position
==============  ==============================================================================

:func:`to_onnx` gives the ``onnx.ModelProto``; :func:`run_onnx` runs a model (or ``.onnx`` file) with
onnxruntime on the CPU, for the validator.

Layout of this package: :mod:`.ops` (the op registry :data:`OPS`, the :class:`Builder` converters talk
to, the core converters), :mod:`.model` (:func:`to_onnx`, :func:`write`, :func:`run_onnx`). A new op
family is a module ``caffe2x/targets/onnx/<family>.py`` importing only from ``.ops``, listed in
:data:`caffe2x.targets.families.OP_FAMILIES`.
"""
from __future__ import annotations


from caffe2x.targets import BUILTIN
from caffe2x.targets.families import OP_FAMILIES, load_op_families
from caffe2x.targets.onnx.model import run_onnx, to_onnx, write
from caffe2x.targets.onnx.ops import CONVERTERS, IR_VERSION, OPS, OPSET, Builder, converter


#: this package's :class:`~caffe2x.targets.Target` (declared in :data:`caffe2x.targets.BUILTIN`, so that
#: listing targets imports no framework; its write / load / stored_tensors live in :mod:`.target`)
TARGET = next(t for t in BUILTIN if t.name == "onnx")
SUFFIXES = TARGET.suffixes

#: op-family modules of this package (``<family>.py`` beside ``ops.py``); importing the target imports
#: each, which registers its builders in :data:`OPS` (see :mod:`caffe2x.targets.families`)
FAMILIES: tuple[str, ...] = OP_FAMILIES
load_op_families(__name__, "onnx", OPS, FAMILIES)

__all__ = ["TARGET", "SUFFIXES", "FAMILIES", "OPSET", "IR_VERSION", "OPS", "CONVERTERS", "Builder", "converter", "to_onnx",
           "write", "run_onnx"]
