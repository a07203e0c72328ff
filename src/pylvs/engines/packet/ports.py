"""FULLNAT local ports: our own pool, kept outside net.ipv4.ip_local_port_range so the director's
own sockets never pick a port that a forwarded connection holds (and the drop rule can be scoped)."""

from __future__ import annotations

from collections import deque

DEFAULT_RANGE = (10000, 30000)


def local_port_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    try:
        with open(path) as fh:
            lo, hi = fh.read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


class PortPool:
    """Ports lo..hi inclusive; least recently freed is reused last (FIFO), like a TIME_WAIT courtesy."""

    def __init__(self, lo: int = DEFAULT_RANGE[0], hi: int = DEFAULT_RANGE[1]) -> None:
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"bad FULLNAT port range {lo}-{hi}")
        self.lo = lo
        self.hi = hi
        self.free: deque[int] = deque(range(lo, hi + 1))
        self.used: set[int] = set()

    def overlaps_local_range(self) -> bool:
        klo, khi = local_port_range()
        return not (self.hi < klo or self.lo > khi)

    def owns(self, port: int) -> bool:
        return self.lo <= port <= self.hi

    def take(self) -> int | None:
        if not self.free:
            return None
        p = self.free.popleft()
        self.used.add(p)
        return p

    def reserve(self, port: int) -> bool:
        """Take this very port (a FULLNAT connection a killed pylvsd left to the kernel holds it);
        False when it is not free."""
        if port in self.used or not self.owns(port):
            return False
        try:
            self.free.remove(port)
        except ValueError:
            return False
        self.used.add(port)
        return True

    def give(self, port: int) -> None:
        if port in self.used:
            self.used.discard(port)
            self.free.append(port)
