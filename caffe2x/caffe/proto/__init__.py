"""Caffe's protobuf schema for caffe2x.

``caffe_pb2`` in this package is generated from ``proto/caffe.proto`` (wire-compatible with BVLC
Caffe) and committed, so users need only the ``protobuf`` runtime. Do not edit it by hand; after
changing the .proto, regenerate it with ``python scripts/gen_proto.py`` (needs ``grpcio-tools``).
"""
from caffe2x.caffe.proto import caffe_pb2

__all__ = ["caffe_pb2"]
