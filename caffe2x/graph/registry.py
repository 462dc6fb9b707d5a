"""One op, one function: the table every stage of caffe2x dispatches through.

The reader (Caffe layer type -> handler), shape inference, the numpy reference and each target
(op -> builder) keep a :class:`Registry`; adding a layer type or a target is registering functions,
never editing a dispatch chain.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

from caffe2x.errors import UnsupportedLayerError

F = TypeVar("F", bound=Callable[..., object])


class Registry(dict[str, F], Generic[F]):
    """``name -> function`` with a registering decorator and a lookup that names the failing layer."""

    #: called, in order, when a lookup misses; a hook returns True when it may have registered more
    #: (how :mod:`caffe2x.plugins` loads third-party layers only when a net needs one)
    miss_hooks: ClassVar[list[Callable[[], bool]]] = []

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def __missing__(self, name: str) -> F:
        if any([hook() for hook in self.miss_hooks]) and dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        raise KeyError(name)

    def register(self, *names: str) -> Callable[[F], F]:
        """Decorator: register the function under each of ``names``."""

        def add(fn: F) -> F:
            for name in names:
                self[name] = fn
            return fn

        return add

    def lookup(self, name: str, layer: str) -> F:
        """The function for ``name``; an unknown name raises an error naming ``layer`` and ``name``."""
        try:
            return self[name]
        except KeyError:
            raise UnsupportedLayerError(layer, name, self.what) from None
