"""The daemon's event log: every accepted change, kept in a bounded ring, and live subscribers (SSE).

Times are wall-clock (for people reading the log); the core's clock stays monotonic.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

SOURCES = ("pylvsadm", "api", "config", "health", "web", "daemon")


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    time: float  # Unix time
    kind: str  # add_service, add_dest, ..., batch, reload, start, stop
    detail: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class EventLog:
    def __init__(self, maxlen: int = 1000) -> None:
        self._ring: deque[Event] = deque(maxlen=maxlen)
        self._seq = 0
        self._subscribers: set[asyncio.Queue[Event]] = set()

    @property
    def last_seq(self) -> int:
        return self._seq

    def add(self, kind: str, detail: str, source: str) -> Event:
        self._seq += 1
        ev = Event(self._seq, time.time(), kind, detail, source)
        self._ring.append(ev)
        for q in list(self._subscribers):
            if q.full():  # a slow reader loses its oldest pending event, never blocks the daemon
                q.get_nowait()
            q.put_nowait(ev)
        return ev

    def recent(self, since: int = 0, limit: int = 100) -> list[Event]:
        evs = [e for e in self._ring if e.seq > since]
        return evs[-limit:] if limit > 0 else []

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(q)
