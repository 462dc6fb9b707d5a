"""The neutral graph and what works on it knowing neither Caffe nor any framework.

``ir`` (Graph, Node, shape rules), ``checks`` (validation and the size limit), ``transforms``
(BatchNorm folding, dtype rounding), ``registry``, ``formulas`` (Caffe's size arithmetic),
``numeric`` and ``bounds`` helpers, and ``reference``: the numpy executor with Caffe's exact numbers.
Imports nothing of the other stages (``tests/test_imports.py``).
"""
