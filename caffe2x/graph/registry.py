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

    #: called once each, before any registry is first read: how ``import caffe2x`` stays as cheap as
    #: ``import numpy`` -- the package root puts the import of the layer families here instead of
    #: importing their ~7000 lines itself, so they register the first time a table is looked into
    first_use: ClassVar[list[Callable[[], None]]] = []

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    @classmethod
    def _fill(cls) -> None:
        """Run the pending first-use hooks (each is removed before it runs, so the registering it does,
        which reads registries too, does not start it again)."""
        while cls.first_use:
            cls.first_use.pop(0)()

    def __missing__(self, name: str) -> F:
        if Registry.first_use:
            self._fill()
            if dict.__contains__(self, name):
                return dict.__getitem__(self, name)
        if any([hook() for hook in self.miss_hooks]) and dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        raise KeyError(name)

    # every other way of reading the table fills it first as well (dict's own methods would not)
    def __contains__(self, name: object) -> bool:
        if Registry.first_use:
            self._fill()
        return dict.__contains__(self, name)

    def __iter__(self):  # type: ignore[no-untyped-def]
        if Registry.first_use:
            self._fill()
        return dict.__iter__(self)

    def __len__(self) -> int:
        if Registry.first_use:
            self._fill()
        return dict.__len__(self)

    def get(self, name: str, default: object = None):  # type: ignore[no-untyped-def,override]
        if Registry.first_use:
            self._fill()
        return dict.get(self, name, default)

    def keys(self):  # type: ignore[no-untyped-def]
        if Registry.first_use:
            self._fill()
        return dict.keys(self)

    def values(self):  # type: ignore[no-untyped-def]
        if Registry.first_use:
            self._fill()
        return dict.values(self)

    def items(self):  # type: ignore[no-untyped-def]
        if Registry.first_use:
            self._fill()
        return dict.items(self)

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
