"""The per-service cache of lblc and lblcr: destination address -> entry, in 1024 hash buckets,
with the kernel's garbage collection (a timer every 60 s; every 30th run drops entries unused for
the *_expiration sysctl; otherwise, only above 16384 entries, entries unused for 6 minutes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from pylvs.core.sched.base import conn_overhead
from pylvs.core.sched.hashing import fold, hash_32
from pylvs.core.sched.index import BestIndex, IndexedScheduler
from pylvs.core.sched.wlc import wlc_key
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.types import IPAddr

TAB_BITS = 10
TAB_SIZE = 1 << TAB_BITS
MAX_SIZE = TAB_SIZE * 16  # soft limit: partial collection starts above it
CHECK_EXPIRE_INTERVAL = 60.0
ENTRY_TIMEOUT = 6 * 60.0
COUNT_FOR_FULL_EXPIRATION = 30

T = TypeVar("T")


class Entry(Generic[T]):
    __slots__ = ("addr", "lastuse", "value")

    def __init__(self, addr: IPAddr, lastuse: float, value: T) -> None:
        self.addr = addr
        self.lastuse = lastuse
        self.value = value


class LocalityTable(Generic[T]):
    def __init__(self) -> None:
        self.entries: dict[IPAddr, Entry[T]] = {}
        self.buckets: list[list[Entry[T]]] = [[] for _ in range(TAB_SIZE)]  # newest first
        self.rover = 0
        self.counter = 1
        self.next_check: float | None = None

    def get(self, addr: IPAddr) -> Entry[T] | None:
        return self.entries.get(addr)

    def add(self, addr: IPAddr, now: float, value: T) -> Entry[T]:
        # No upper bound here: the kernel's lblc/lblcr code (6.1, 6.12) creates entries without a
        # limit and relies on the timer to trim the table back towards MAX_SIZE.
        en = Entry(addr, now, value)
        self.entries[addr] = en
        self.buckets[hash_32(fold(addr), TAB_BITS)].insert(0, en)
        return en

    def remove(self, en: Entry[T]) -> None:
        del self.entries[en.addr]
        self.buckets[hash_32(fold(en.addr), TAB_BITS)].remove(en)

    def clear(self) -> None:
        self.entries.clear()
        self.buckets = [[] for _ in range(TAB_SIZE)]

    def tick(self, now: float, expiration: float) -> None:
        """Run every timer expiry up to `now` (the timer starts the first time we see the clock)."""
        if self.next_check is None:
            self.next_check = now + CHECK_EXPIRE_INTERVAL
        while self.next_check <= now:
            self._check_expire(self.next_check, expiration)
            self.next_check += CHECK_EXPIRE_INTERVAL

    def _sweep(self, stale: Callable[[Entry[T]], bool], goal: int | None) -> None:
        j = self.rover
        for _ in range(TAB_SIZE):
            j = (j + 1) & (TAB_SIZE - 1)
            for en in [e for e in self.buckets[j] if stale(e)]:
                self.remove(en)
                if goal is not None:
                    goal -= 1
            if goal is not None and goal <= 0:
                break
        self.rover = j

    def _check_expire(self, now: float, expiration: float) -> None:
        if self.counter % COUNT_FOR_FULL_EXPIRATION == 0:
            self._sweep(lambda e: now >= e.lastuse + expiration, None)
            self.counter = 1
            return
        n = len(self.entries)
        if n <= MAX_SIZE:
            self.counter += 1
            return
        goal = min((n - MAX_SIZE) * 4 // 3, MAX_SIZE // 2)
        self._sweep(lambda e: now >= e.lastuse + ENTRY_TIMEOUT, goal)


def wlc_scan(svc: VirtualService) -> RealServer | None:
    """The wlc choice as the kernel's lblc/lblcr code scans for it (kept as the reference)."""
    least: RealServer | None = None
    loh = 0
    for d in svc.dests:
        if d.overload:
            continue
        doh = conn_overhead(d)
        if least is None:
            if d.weight > 0:
                least, loh = d, doh
        elif loh * d.weight > doh * least.weight:
            least, loh = d, doh
    return least


class LocalityScheduler(IndexedScheduler, Generic[T]):
    """Common parts of lblc and lblcr: the table lives as long as the scheduler; the wlc choice
    comes from the wlc index, and "some server is below half its weight" from a kept set."""

    def __init__(self, svc: VirtualService) -> None:
        self.table: LocalityTable[T] = LocalityTable()
        self.below_half: set[RealServer] = {d for d in svc.dests if 2 * d.activeconns < d.weight}
        super().__init__(svc)

    def make_indexes(self) -> tuple[BestIndex, ...]:
        self.least = BestIndex(wlc_key)
        return (self.least,)

    def _track(self, dest: RealServer) -> None:
        if dest.available and 2 * dest.activeconns < dest.weight:
            self.below_half.add(dest)
        else:
            self.below_half.discard(dest)

    def add_dest(self, dest: RealServer) -> None:
        super().add_dest(dest)
        self._track(dest)

    def del_dest(self, dest: RealServer, index: int) -> None:
        super().del_dest(dest, index)
        self.below_half.discard(dest)

    def upd_dest(self, dest: RealServer) -> None:
        super().upd_dest(dest)
        self._track(dest)

    def load_changed(self, dest: RealServer) -> None:
        super().load_changed(dest)
        self._track(dest)

    def lblc_overloaded(self, dest: RealServer) -> bool:
        """More active connections than weight while some server is below half its weight."""
        return dest.activeconns > dest.weight and bool(self.below_half)

    def done(self) -> None:
        self.table.clear()
