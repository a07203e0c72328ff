"""The Prometheus text format (0.0.4), written directly and fast.

prometheus_client's generate_latest() formats each sample through several layers of objects; with
10,000 real servers that is close to two seconds a scrape. Here, when the rule set changes, each
per-server family gets one %-template holding every sample line with its labels; a scrape transposes
the servers' value tuples (zip) and fills each template with one C-level `%`. collector.py offers the
same families to a prometheus_client registry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.utils import floatToGoString

from pylvs.metrics import labels as L
from pylvs.metrics.model import (
    ACTIVE,
    INACTIVE,
    PERSIST,
    RATES,
    STATS,
    WEIGHT,
    Extras,
    Health,
    Rows,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_WHAT = ("connections", "incoming_packets", "outgoing_packets", "incoming_bytes", "outgoing_bytes")
_WHAT_HELP = ("connections scheduled", "packets in", "packets out", "bytes in", "bytes out")


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # the sample name (counters end in _total)
    kind: str  # "counter" | "gauge"
    help: str
    index: int = -1  # position in the value tuple it reads, where there is one

    @property
    def header(self) -> str:
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"


# node_exporter's ipvs collector: the same names, types and labels.
NODE_TOTALS = tuple(
    Family(f"node_ipvs_{w}_total", "counter", f"IPVS total {h} (all services).", i)
    for i, (w, h) in enumerate(zip(_WHAT, _WHAT_HELP, strict=True))
)
NODE_BACKEND = (
    Family("node_ipvs_backend_connections_active", "gauge", "Active connections per real server.", ACTIVE),
    Family(
        "node_ipvs_backend_connections_inactive", "gauge", "Inactive connections per real server.", INACTIVE
    ),
    Family("node_ipvs_backend_weight", "gauge", "Weight per real server.", WEIGHT),
)


def _stat_families(prefix: str, what: str) -> tuple[Family, ...]:
    counters = tuple(
        Family(
            f"{prefix}_{w}_total",
            "counter",
            f"{h.capitalize()} per {what} since the last zeroing.",
            STATS + i,
        )
        for i, (w, h) in enumerate(zip(_WHAT, _WHAT_HELP, strict=True))
    )
    rates = tuple(
        Family(
            f"{prefix}_{w}_per_second",
            "gauge",
            f"{h.capitalize()} per second per {what} (estimator).",
            RATES + i,
        )
        for i, (w, h) in enumerate(zip(_WHAT, _WHAT_HELP, strict=True))
    )
    return counters + rates


PYLVS_BACKEND = (
    *_stat_families("pylvs_backend", "real server"),
    Family(
        "pylvs_backend_persistent_connections",
        "gauge",
        "Persistence templates bound to the real server.",
        PERSIST,
    ),
)
HEALTH_STATE = Family(
    "pylvs_backend_health", "gauge", "Health state of the real server (1 for its current state)."
)
HEALTH_OK = Family("pylvs_backend_last_check_success", "gauge", "1 if the last health check passed, else 0.")
BACKEND_FAMILIES = (*NODE_BACKEND, *PYLVS_BACKEND, HEALTH_STATE, HEALTH_OK)

# Per service: the counters/rates read from the service's own (stats, rates) pair, 0..9.
PYLVS_SERVICE = tuple(
    Family(
        f.name.replace("pylvs_backend", "pylvs_service"),
        f.kind,
        f.help.replace("real server", "virtual service"),
        f.index - STATS,
    )
    for f in _stat_families("pylvs_backend", "real server")
)
SERVICE_BACKENDS = Family("pylvs_service_backends", "gauge", "Real servers of the virtual service.")
GLOBAL_RATES = tuple(
    Family(f"pylvs_{w}_per_second", "gauge", f"{h.capitalize()} per second, all services (estimator).", i)
    for i, (w, h) in enumerate(zip(_WHAT, _WHAT_HELP, strict=True))
)
SERVICES = Family("pylvs_services", "gauge", "Virtual services.")
BACKENDS = Family("pylvs_backends", "gauge", "Real servers, all services.")
CONN_ENTRIES = Family("pylvs_connection_entries", "gauge", "Connection table entries by protocol and state.")
TEMPLATES = Family("pylvs_persistence_templates", "gauge", "Persistence templates in the connection table.")

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else str(floatToGoString(v))  # type: ignore[no-untyped-call]


def _template(name: str, labels: list[str]) -> bytes:
    """One family's sample lines, a %d where each value goes (bytes: `%` on bytes is twice as fast)."""
    return "".join([f"{name}{{{lb.replace('%', '%%')}}} %d\n" for lb in labels]).encode()


def _health_lines(labels: list[str], health: list[Health | None]) -> tuple[str, str]:
    state, last = [], []
    for lb, h in zip(labels, health, strict=True):
        if h is None:
            continue
        if h.state:
            state.append(f'{HEALTH_STATE.name}{{{lb},state="{L.escape(h.state)}"}} 1\n')
        if h.last_ok is not None:
            last.append(f"{HEALTH_OK.name}{{{lb}}} {int(h.last_ok)}\n")
    return "".join(state), "".join(last)


def _figures(prefix: str, figures: Mapping[str, float], label: str) -> list[str]:
    """Free-form figures (engine, daemon): one family each; a name ending in _total is a counter."""
    out: list[str] = []
    for key, value in sorted(figures.items()):
        name = f"{prefix}_{_NAME_BAD.sub('_', str(key))}"
        kind = "counter" if name.endswith("_total") else "gauge"
        out.append(Family(name, kind, f"{prefix.split('_')[1].capitalize()} figure {key}.").header)
        out.append(f"{name}{label} {_num(value)}\n")
    return out


class Exposition:
    """Renders scrapes; the per-server templates are rebuilt only when `rows.layout` changes."""

    def __init__(self) -> None:
        self._layout: object = None
        self._templates: tuple[bytes, ...] = ()
        self._svc_templates: tuple[bytes, ...] = ()

    def _build(self, rows: Rows) -> None:
        labels = [lb for s in rows.services for lb in s.dest_labels]
        self._templates = tuple(_template(f.name, labels) for f in (*NODE_BACKEND, *PYLVS_BACKEND))
        slabels = [s.labels for s in rows.services]
        self._svc_templates = tuple(_template(f.name, slabels) for f in (*PYLVS_SERVICE, SERVICE_BACKENDS))
        self._layout = rows.layout

    def render(self, rows: Rows, extras: Extras | None = None) -> bytes:
        """One scrape's whole text, UTF-8 encoded."""
        return b"".join(self.render_parts(rows, extras))

    def render_parts(self, rows: Rows, extras: Extras | None = None) -> list[bytes]:
        """One scrape's text in pieces, to write out without joining them first."""
        ex = extras or Extras()
        if rows.layout is None or rows.layout is not self._layout:
            self._build(rows)
        out: list[str | bytes] = []
        for f in NODE_TOTALS:
            out.append(f"{f.header}{f.name} {rows.stats[f.index]}\n")
        # Real servers: one `%` per family fills its template with a whole column.
        cols = rows.columns
        ndests = len(cols[0]) if cols else 0
        if ndests:
            for f, tmpl in zip((*NODE_BACKEND, *PYLVS_BACKEND), self._templates, strict=True):
                out.append(f.header)
                out.append(tmpl % tuple(cols[f.index]))
            if ex.health:
                health = [ex.health.get(i) for s in rows.services for i in s.dest_ids]
                labels = [lb for s in rows.services for lb in s.dest_labels]
                for f, body in zip((HEALTH_STATE, HEALTH_OK), _health_lines(labels, health), strict=True):
                    if body:
                        out.append(f.header)
                        out.append(body)
        # Virtual services.
        if rows.services:
            scols = list(zip(*[(*s.stats, *s.rates, len(s.dest_ids)) for s in rows.services], strict=True))
            for i, (f, tmpl) in enumerate(
                zip((*PYLVS_SERVICE, SERVICE_BACKENDS), self._svc_templates, strict=True)
            ):
                out.append(f.header)
                out.append(tmpl % scols[i])
        # Whole-table figures.
        for f in GLOBAL_RATES:
            out.append(f"{f.header}{f.name} {rows.rates[f.index]}\n")
        out.append(f"{SERVICES.header}{SERVICES.name} {len(rows.services)}\n")
        out.append(f"{BACKENDS.header}{BACKENDS.name} {ndests}\n")
        if ex.conn_states:
            out.append(CONN_ENTRIES.header)
            for (proto, state), n in sorted(ex.conn_states.items()):
                out.append(
                    f'{CONN_ENTRIES.name}{{proto="{L.escape(proto)}",state="{L.escape(state)}"}} {n}\n'
                )
        if ex.templates is not None:
            out.append(f"{TEMPLATES.header}{TEMPLATES.name} {ex.templates}\n")
        if ex.engine:
            out += _figures("pylvs_engine", ex.engine, f'{{engine="{L.escape(ex.engine_name)}"}}')
        if ex.daemon:
            out += _figures("pylvs_daemon", ex.daemon, "")
        return [p if isinstance(p, bytes) else p.encode() for p in out]
