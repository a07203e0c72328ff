"""A "best server" index for the least-load schedulers (lc, wlc, sed, nq, fo, ovf).

The kernel scans the whole list for every new connection. A scheduler here keeps, for each server,
a sort key that orders servers exactly as that scan ranks them (ties broken by list order: the higher
seq, the nearer the front), or None when the scan would skip the server. A heap with lazy deletion
answers "the smallest key" in O(log n); keys change only through the scheduler hooks (add_dest,
del_dest, upd_dest, load_changed).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from pylvs.core.sched.base import Scheduler
from pylvs.core.service import RealServer, VirtualService

SortKey = tuple[int, ...]

# Weighted loads are compared as (load << RATIO_SHIFT) // weight. For weights below 2^31 two different
# ratios a/b < c/d differ by at least 1/(b*d) > 2^-62, so after scaling by 2^64 the floors still differ:
# the integer key orders exactly like the kernel's cross-multiplied comparison, and equal ratios tie.
RATIO_SHIFT = 64


def ratio_key(load: int, weight: int) -> int:
    return (load << RATIO_SHIFT) // weight


class BestIndex:
    """Servers ordered by key(dest); best() is the server with the smallest key, or None."""

    __slots__ = ("_counter", "_current", "_heap", "_key")

    def __init__(self, key: Callable[[RealServer], SortKey | None]) -> None:
        self._key = key
        self._heap: list[tuple[Any, ...]] = []
        self._current: dict[RealServer, tuple[Any, ...]] = {}
        self._counter = itertools.count()

    def rebuild(self, dests: list[RealServer]) -> None:
        self._current.clear()
        for d in dests:
            k = self._key(d)
            if k is not None:
                self._current[d] = (*k, next(self._counter), d)
        self._heap = list(self._current.values())
        heapq.heapify(self._heap)

    def update(self, dest: RealServer) -> None:
        """Recompute dest's key (dest is in the list)."""
        k = self._key(dest)
        if k is None:
            self._current.pop(dest, None)
            return
        old = self._current.get(dest)
        if old is not None and old[: len(k)] == k:
            return
        entry = (*k, next(self._counter), dest)
        self._current[dest] = entry
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * len(self._current) + 64:
            # Too many stale entries: start again from the live ones.
            self._heap = list(self._current.values())
            heapq.heapify(self._heap)

    def remove(self, dest: RealServer) -> None:
        self._current.pop(dest, None)

    def best(self) -> RealServer | None:
        heap, current = self._heap, self._current
        while heap:
            entry = heap[0]
            dest: RealServer = entry[-1]
            if current.get(dest) is entry:
                return dest
            heapq.heappop(heap)
        return None

    def __len__(self) -> int:
        return len(self._current)


class IndexedScheduler(Scheduler):
    """Base for schedulers answered from BestIndex objects kept current by the hooks."""

    def __init__(self, svc: VirtualService) -> None:
        super().__init__(svc)
        self.indexes = self.make_indexes()
        for ix in self.indexes:
            ix.rebuild(svc.dests)

    def make_indexes(self) -> tuple[BestIndex, ...]:
        raise NotImplementedError

    def add_dest(self, dest: RealServer) -> None:
        for ix in self.indexes:
            ix.update(dest)

    def del_dest(self, dest: RealServer, index: int) -> None:
        for ix in self.indexes:
            ix.remove(dest)

    def upd_dest(self, dest: RealServer) -> None:
        if dest.available:
            for ix in self.indexes:
                ix.update(dest)

    def load_changed(self, dest: RealServer) -> None:
        # A server deleted from the list can still lose connections; it is no longer a candidate.
        if dest.available:
            for ix in self.indexes:
                ix.update(dest)
