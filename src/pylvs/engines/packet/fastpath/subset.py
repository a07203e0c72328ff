"""A view of the director that shows only some services: the per-packet engine runs beside the fast
path for the services the kernel cannot forward (TUN, mixed methods, UDP DR, IPv6) and must not
install its netdev drop rules or filters for the others. Everything else is the real director."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class _Services:
    def __init__(self, table: Any, keep: set[int]) -> None:
        self._table = table
        self._keep = keep

    def __iter__(self) -> Iterator[Any]:
        return (s for s in self._table if id(s) in self._keep)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


class SubsetDirector:
    def __init__(self, director: Any) -> None:
        self._director = director
        self.keep: set[int] = set()

    @property
    def services(self) -> _Services:
        return _Services(self._director.services, self.keep)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._director, name)
