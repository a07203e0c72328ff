"""pylvsd's hook for `--metrics HOST:PORT` (see pylvs.daemon.main): live rows plus the daemon's figures."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

from pylvs.core.conn import F_TEMPLATE
from pylvs.core.proto import TEMPLATE_NAMES, get_protocol
from pylvs.core.types import Proto
from pylvs.metrics.health import health_map
from pylvs.metrics.model import Extras, LiveRows
from pylvs.metrics.server import MetricsServer

RULE_KINDS = frozenset(
    (
        "add_service",
        "edit_service",
        "del_service",
        "flush",
        "add_dest",
        "edit_dest",
        "del_dest",
        "batch",
        "reload",
    )
)
CONN_STATES_CACHE = 5.0  # seconds: a table this big is counted at most this often
CONN_STATES_BIG = 5000


class DaemonFigures:
    """Counts the daemon's events by kind (rule changes, reload errors) since the daemon started."""

    def __init__(self, state: Any) -> None:
        self.state = state
        # Add-ons started before this one (health checks) already logged changes: count the ring too.
        self.kinds: Counter[str] = Counter(e.kind for e in state.events.recent(0, 10**9))
        self._queue = state.events.subscribe()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            ev = await self._queue.get()
            self.kinds[ev.kind] += 1

    def figures(self) -> dict[str, float]:
        k = self.kinds
        st = self.state
        return {
            "rule_changes_total": sum(n for kind, n in k.items() if kind in RULE_KINDS),
            "reload_errors_total": k["reload-failed"],
            "events_total": st.events.last_seq,
            "uptime_seconds": round(st.clock() - st.started, 3),
        }

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.state.events.unsubscribe(self._queue)


def _proto_of(key: int) -> int:
    """The protocol packed in a connection key (core.conn.make_key: proto sits above the 1-bit family
    flag, the two ports and the two addresses)."""
    return key >> (1 + 16 + 128 + 16 + 128 if key & 1 else 1 + 16 + 32 + 16 + 32)


def _label(proto: int) -> str:
    return Proto(proto).label if proto in (0, 6, 17, 132) else str(proto)


class ConnStates:
    """Connection entries by (protocol, state) and the template count, counted from the core's table."""

    def __init__(self, director: Any) -> None:
        self.director = director
        self._at = -CONN_STATES_CACHE
        self._last: tuple[dict[tuple[str, str], int], int] = ({}, 0)

    def __call__(self) -> tuple[dict[tuple[str, str], int], int]:
        table = getattr(self.director, "conns", None)
        if table is None:
            return {}, 0
        now = time.monotonic()
        if len(table) > CONN_STATES_BIG and now - self._at < CONN_STATES_CACHE:
            return self._last
        # Count on plain ints (cheap per entry), name the few distinct groups afterwards.
        raw: Counter[tuple[int, int, int]] = Counter(
            (_proto_of(c.key), c.flags & F_TEMPLATE, c.state) for c in table if not c.dead
        )
        counts: Counter[tuple[str, str]] = Counter()
        for (proto, tpl, st), n in raw.items():
            if tpl:
                counts[("IP" if proto == 0 else _label(proto), TEMPLATE_NAMES[st])] += n
            else:
                sm = get_protocol(proto)
                counts[(_label(proto), sm.names[st] if sm is not None else "NONE")] += n
        self._last = (dict(counts), len(table.templates) + len(table.pe_templates))
        self._at = now
        return self._last


class MetricsHandle:
    def __init__(self, server: MetricsServer, figures: DaemonFigures) -> None:
        self.server = server
        self.figures = figures

    async def stop(self) -> None:
        await self.figures.stop()
        await self.server.stop()


async def start(state: Any, host: str, port: int) -> MetricsHandle:
    figures = DaemonFigures(state)
    conns = ConnStates(state.director)

    rows = LiveRows(state.director)

    def extras() -> Extras:
        engine = getattr(state, "engine", None)
        entries, templates = conns()
        return Extras(
            health=health_map(state),
            conn_states=entries,
            templates=templates,
            engine_name=getattr(state, "engine_name", ""),
            engine=engine.stats() if engine is not None else {},
            daemon=figures.figures(),
        )

    server = MetricsServer(rows, extras)
    try:
        await server.start(host, port)
    except BaseException:
        await figures.stop()
        raise
    return MetricsHandle(server, figures)
