"""The Prometheus text format (0.0.4), written directly and fast.

prometheus_client's generate_latest() formats each sample through several layers of objects; with
10,000 real servers that is close to two seconds a scrape. Here each real server's sample lines are
formatted once and kept until one of its values changes, so a scrape of an idle farm mostly joins
strings it already has. collector.py offers the same families to a prometheus_client registry.
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
    ServiceRow,
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


def _dest_lines(labels: str, vals: tuple[int, ...], health: Health | None) -> tuple[str, ...]:
    lines = [f"{f.name}{{{labels}}} {vals[f.index]}\n" for f in NODE_BACKEND]
    lines += [f"{f.name}{{{labels}}} {vals[f.index]}\n" for f in PYLVS_BACKEND]
    if health is not None and health.state:
        lines.append(f'{HEALTH_STATE.name}{{{labels},state="{L.escape(health.state)}"}} 1\n')
    else:
        lines.append("")
    if health is not None and health.last_ok is not None:
        lines.append(f"{HEALTH_OK.name}{{{labels}}} {int(health.last_ok)}\n")
    else:
        lines.append("")
    return tuple(lines)


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
    """Renders scrapes, keeping each virtual service's lines until one of its values changes."""

    def __init__(self) -> None:
        # service_id -> (labels, values, health, one chunk of text per backend family)
        self._cache: dict[
            str, tuple[list[str], list[tuple[int, ...]], tuple[Health | None, ...], tuple[bytes, ...]]
        ] = {}

    def _service_chunks(self, s: ServiceRow, health: tuple[Health | None, ...]) -> tuple[bytes, ...]:
        c = self._cache.get(s.ident)
        if c is not None and c[1] == s.dest_vals and c[2] == health and c[0] == s.dest_labels:
            return c[3]
        per_dest = [
            _dest_lines(lb, v, h) for lb, v, h in zip(s.dest_labels, s.dest_vals, health, strict=True)
        ]
        chunks = tuple("".join([d[i] for d in per_dest]).encode() for i in range(len(BACKEND_FAMILIES)))
        self._fresh[s.ident] = (s.dest_labels, s.dest_vals, health, chunks)
        return chunks

    def render(self, rows: Rows, extras: Extras | None = None) -> bytes:
        """One scrape's whole text, UTF-8 encoded."""
        return b"".join(self.render_parts(rows, extras))

    def render_parts(self, rows: Rows, extras: Extras | None = None) -> list[bytes]:
        """One scrape's text in pieces, to write out without joining them first."""
        ex = extras or Extras()
        out: list[str | bytes] = []
        for f in NODE_TOTALS:
            out.append(f"{f.header}{f.name} {rows.stats[f.index]}\n")
        # Real servers, a service at a time, from the cache when none of its figures moved.
        self._fresh: dict[
            str, tuple[list[str], list[tuple[int, ...]], tuple[Health | None, ...], tuple[bytes, ...]]
        ] = {}
        hmap = ex.health
        nodest: tuple[Health | None, ...] = ()
        blocks = []
        ndests = 0
        for s in rows.services:
            n = len(s.dest_ids)
            ndests += n
            health = tuple([hmap.get(i) for i in s.dest_ids]) if hmap else (nodest if not n else (None,) * n)
            chunks = self._service_chunks(s, health)
            if s.ident not in self._fresh:
                self._fresh[s.ident] = self._cache[s.ident]
            blocks.append(chunks)
        self._cache = self._fresh
        for i, f in enumerate(BACKEND_FAMILIES):
            body = b"".join([b[i] for b in blocks])
            if body:
                out.append(f.header)
                out.append(body)
        # Virtual services.
        if rows.services:
            for f in PYLVS_SERVICE:
                out.append(f.header)
                src = "stats" if f.index < 5 else "rates"
                j = f.index % 5
                out.append("".join([f"{f.name}{{{s.labels}}} {getattr(s, src)[j]}\n" for s in rows.services]))
            out.append(SERVICE_BACKENDS.header)
            out.append(
                "".join([f"{SERVICE_BACKENDS.name}{{{s.labels}}} {len(s.dest_ids)}\n" for s in rows.services])
            )
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
        # Join the small text pieces between the big byte bodies.
        parts: list[bytes] = []
        text: list[str] = []
        for piece in out:
            if isinstance(piece, bytes):
                if text:
                    parts.append("".join(text).encode())
                    text = []
                parts.append(piece)
            else:
                text.append(piece)
        if text:
            parts.append("".join(text).encode())
        return parts
