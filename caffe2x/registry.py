"""One op, one function: the table every stage of caffe2x dispatches through.

The reader (Caffe layer type -> handler), shape inference, the numpy reference and each target
(op -> builder) keep a :class:`Registry`; adding a layer type or a target is registering functions,
never editing a dispatch chain.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import UnsupportedLayerError

F = TypeVar("F", bound=Callable[..., object])


class Registry(dict[str, F], Generic[F]):
    """``name -> function`` with a registering decorator and a lookup that names the failing layer."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def register(self, *names: str) -> Callable[[F], F]:
        """Decorator: register the function under each of ``names``."""

        def add(fn: F) -> F:
            for name in names:
                self[name] = fn
            return fn

        return add

    def lookup(self, name: str, layer: str) -> F:
        """The function for ``name``; an unknown name raises an error naming ``layer`` and ``name``."""
        fn = self.get(name)
        if fn is None:
            raise UnsupportedLayerError(layer, name, self.what)
        return fn
