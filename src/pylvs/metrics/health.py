"""Real-server health for metrics and the dashboard, read from the health add-on when it runs.

The health add-on (pylvs.health.daemon) sets `state.health`, whose `.manager` is the HealthManager.
Without it every server is unchecked (no health series, "" on the page).
"""

from __future__ import annotations

from typing import Any

from pylvs.metrics.labels import dest_id, service_id
from pylvs.metrics.model import Health


def health_map(state: Any) -> dict[tuple[str, str], Health]:
    """(service_id, dest_id) -> Health for every real server the checkers program."""
    mgr = getattr(state, "health", None)
    mgr = getattr(mgr, "manager", mgr)
    if mgr is None:
        return {}
    words = getattr(mgr, "dest_health", None)
    views = getattr(mgr, "state", None)
    if words is None:
        return {}
    # The last check of each real server, by address (a server in several services shares checks).
    last: dict[tuple[str, int], tuple[bool | None, str, float]] = {}
    if views is not None:
        for vs in views():
            for rs in vs.real_servers:
                results = [ck.last_ok for ck in rs.checkers if ck.last_ok is not None]
                times = [ck.last_time for ck in rs.checkers if ck.last_time]
                kinds = ",".join(ck.kind for ck in rs.checkers)
                last[(rs.addr, rs.port)] = (all(results) if results else None, kinds, max(times, default=0.0))
    out: dict[tuple[str, str], Health] = {}
    for (key, addr, port), word in words().items():
        sid = service_id(
            key.af, int(key.protocol), "" if key.addr is None else str(key.addr), key.port, key.fwmark
        )
        ok, kinds, when = last.get((addr, port), (None, "", 0.0))
        out[(sid, dest_id(addr, port))] = Health(word, ok, kinds, when)
    return out
