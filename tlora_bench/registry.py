"""Name -> object registries with did-you-mean errors (methods, backends, segmenters, extractors)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from tlora_bench.errors import TloraBenchError, unknown_name_error

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered mapping from a public name to a factory or a spec, for one kind of thing."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        if name not in self._items:
            raise unknown_name_error(self.kind, name, self._items)
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


__all__ = ["Registry", "TloraBenchError"]
