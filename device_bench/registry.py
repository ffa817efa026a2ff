"""An explicit registry of named implementations whose modules are imported only when first asked for.

Used for runtimes (``device_bench.runners``) and for edgeprep's converter backends, so importing either package
stays cheap and a device needs only the runtime it actually uses.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class LazyRegistry(Generic[T]):
    def __init__(self, kind: str, modules: dict[str, str], unavailable: type[Exception]):
        self.kind = kind
        self._modules = dict(modules)     # name -> module that registers it
        self._items: dict[str, T] = {}
        self._unavailable = unavailable

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: ``@registry.register("tflite")``. A second registration of a name is refused."""
        def deco(obj: T) -> T:
            if name not in self._modules:
                raise ValueError(f"{self.kind} '{name}' is not listed in the registry; add it there first")
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            obj.name = name  # type: ignore[attr-defined]
            self._items[name] = obj
            return obj
        return deco

    def names(self) -> list[str]:
        return sorted(self._modules)

    def get(self, name: str) -> T:
        if name not in self._modules:
            raise self._unavailable(f"unknown {self.kind} '{name}'; known: {', '.join(self.names())}")
        if name not in self._items:
            try:
                importlib.import_module(self._modules[name])
            except ImportError as exc:
                raise self._unavailable(f"{self.kind} '{name}' is not installed here ({exc})") from None
            if name not in self._items:
                raise RuntimeError(f"internal: {self._modules[name]} did not register {self.kind} '{name}'")
        return self._items[name]
