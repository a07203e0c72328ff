"""The one small interface every engine implements.

pylvsd owns a Director (the core) and one engine. The daemon tells the engine `rules_changing()`, applies rule
changes to the Director and then calls `rules_changed()`; before applying a new or edited real server it asks `refuse_dest()` so an
engine can reject what it cannot forward (the message is shown to the user, nothing is changed). The
engine feeds packets (real or synthesised from socket events) to `director.process_in/out` with the
current time, and the daemon drives `director.tick(now)`.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from pylvs.core.director import Director
from pylvs.core.types import DestConfig, ServiceKey


class Engine:
    name: ClassVar[str] = ""

    def __init__(self, director: Director, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.director = director
        self.loop = loop

    def refuse_dest(self, key: ServiceKey, cfg: DestConfig) -> str | None:
        """A message if this engine cannot forward to `cfg` (e.g. -g on the proxy engine), else None."""
        return None

    async def start(self) -> None:
        """Begin forwarding for the services the director has now."""

    def rules_changing(self) -> None:
        """Rules are about to change (a change or a batch; it may yet be refused): put back what was
        prepared ahead from the current rules. Must not block."""

    def rules_changed(self) -> None:
        """Services or real servers changed: start/stop listeners, refresh caches. Must not block."""

    async def stop(self, drain: bool = True) -> None:
        """Stop accepting; with drain, let connections in flight finish (bounded by a timeout)."""

    def stats(self) -> dict[str, float]:
        """The engine's own figures (packets, bytes, drops, cost per packet...), for metrics."""
        return {}
