"""The package version, in a module of its own so any caffe2x module can import it without importing
the package's ``__init__`` (which imports most of caffe2x lazily)."""

__version__ = "0.1.0"
