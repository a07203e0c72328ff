"""A "best server" index for the least-load schedulers (lc, wlc, sed, nq, fo, ovf).

The kernel scans the whole list for every new connection. A scheduler here gives each server an
integer sort key that orders servers exactly as that scan ranks them, ties included (the tie-break,
the position in list order, is folded into the low bits), or None when the scan would skip the
server. A heap of plain integers with lazy deletion answers "the smallest key" in O(log n); keys
change only through the scheduler hooks (add_dest, del_dest, upd_dest, load_changed).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from pylvs.core.sched.base import Scheduler
from pylvs.core.service import RealServer, VirtualService

# Weighted loads are compared as (load << RATIO_SHIFT) // weight. For weights below 2^31 two different
# ratios a/b < c/d differ by at least 1/(b*d) > 2^-62, so after scaling by 2^64 the floors still differ:
# the integer orders exactly like the kernel's cross-multiplied comparison, and equal ratios tie.
RATIO_SHIFT = 64
SEQ_BITS = 48
SEQ_MASK = (1 << SEQ_BITS) - 1


def ratio_key(load: int, weight: int) -> int:
    return (load << RATIO_SHIFT) // weight


def with_list_order(primary: int, dest: RealServer) -> int:
    """`primary`, ties broken by list order: the newest server (highest seq) is the smallest."""
    return (primary << SEQ_BITS) | (SEQ_MASK - (dest.seq & SEQ_MASK))


class BestIndex:
    """Servers ordered by key(dest); best() is the server with the smallest key, or None."""

    __slots__ = ("_by_key", "_current", "_heap", "_key")

    def __init__(self, key: Callable[[RealServer], int | None]) -> None:
        self._key = key
        self._heap: list[int] = []
        self._current: dict[RealServer, int] = {}
        self._by_key: dict[int, RealServer] = {}  # keys are unique: each embeds its server's seq

    def rebuild(self, dests: list[RealServer]) -> None:
        self._current.clear()
        self._by_key.clear()
        for d in dests:
            k = self._key(d)
            if k is not None:
                self._current[d] = k
                self._by_key[k] = d
        self._compact()

    def _compact(self) -> None:
        self._heap = list(self._current.values())
        heapq.heapify(self._heap)

    def update(self, dest: RealServer) -> None:
        """Recompute dest's key (dest is in the list)."""
        self.set_key(dest, self._key(dest))

    def set_key(self, dest: RealServer, k: int | None) -> None:
        """update(dest) with its new key already computed (k must be key(dest)). Runs on every
        change of a server's counts, hence the local names."""
        current = self._current
        old = current.get(dest)
        if k == old:
            return
        by_key = self._by_key
        if old is not None:
            del by_key[old]  # its heap copies become stale
        if k is None:
            del current[dest]
            return
        current[dest] = k
        by_key[k] = dest
        heap = self._heap
        _heappush(heap, k)
        if len(heap) > 2 * len(current) + 64:
            self._compact()  # too many stale entries: start again from the live ones

    def remove(self, dest: RealServer) -> None:
        old = self._current.pop(dest, None)
        if old is not None:
            del self._by_key[old]

    def best(self) -> RealServer | None:
        heap, by_key = self._heap, self._by_key
        while heap:
            d = by_key.get(heap[0])
            if d is not None:
                return d
            _heappop(heap)
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


_heappush = heapq.heappush  # module-level names: read once per call, not looked up on heapq
_heappop = heapq.heappop
