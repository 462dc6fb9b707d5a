"""The Caffe side: everything that knows Caffe's file formats.

``reader`` turns a ``.caffemodel`` / deploy ``.prototxt`` (any format generation, forks through
``schema``) into a :class:`caffe2x.graph.ir.Graph`; ``wire`` reads the protobuf wire format zero-copy;
``upgrade`` brings V0/V1 nets to the ``layer`` format as Caffe's ``upgrade_proto.cpp`` does;
``parse`` turns bytes and text into its protobuf messages; ``calibration`` seeds a weightless net's
BatchNorm statistics; ``sniff`` names what a file that is not a caffemodel is; ``hdf5weights`` reads HDF5 snapshots;
``netcut`` keeps what ``--outputs`` needs; ``blobs`` reads the blobs real Caffe computed.
Imports only :mod:`caffe2x.graph` and the root's ``errors`` / ``fileio`` (``tests/test_imports.py``).
"""
