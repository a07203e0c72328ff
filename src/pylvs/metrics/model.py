"""What one scrape reads: the rows of services and real servers, and the figures beside them.

Rows come either from a Snapshot (any process: tests, a remote daemon) or straight from a live
Director (pylvsd), whose labels are rebuilt only when the rule set changes, so a scrape of 10,000
real servers stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pylvs.core.director import Director
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.snapshot import Snapshot
from pylvs.metrics import labels as L

Counters = tuple[int, int, int, int, int]

# Per real server value layout (the order of DestRow.vals).
ACTIVE, INACTIVE, WEIGHT, PERSIST = 0, 1, 2, 3
STATS = 4  # 5 counters: conns, inpkts, outpkts, inbytes, outbytes
RATES = 9  # 5 rates: cps, inpps, outpps, inbps, outbps


@dataclass(frozen=True, slots=True)
class Health:
    """One real server's health as the checkers see it."""

    state: str  # "up", "down", ... ("" when nobody checks it)
    last_ok: bool | None = None  # result of the last check; None before the first
    checker: str = ""  # kind of check ("TCP_CHECK", "HTTP_GET", ...)
    last_check: float = 0.0  # wall-clock time of the last check (0 when none yet)


@dataclass(frozen=True, slots=True)
class Extras:
    """Figures that are not in a Snapshot."""

    health: Mapping[tuple[str, str], Health] = field(default_factory=dict)  # (service_id, dest_id)
    conn_states: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (proto, state) -> entries
    templates: int | None = None  # persistence templates in the connection table
    engine_name: str = ""
    engine: Mapping[str, float] = field(default_factory=dict)
    daemon: Mapping[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class ServiceRow:
    """One virtual service and the identity of its real servers (their figures are in Rows.columns)."""

    ident: str  # service_id(): cache and health key
    labels: str  # rendered service labels (no remote_*)
    stats: Counters
    rates: Counters
    dest_ids: list[tuple[str, str]]  # (service_id, dest_id) per real server
    dest_labels: list[str]  # rendered node_exporter backend labels per real server


@dataclass(slots=True)
class Rows:
    stats: Counters
    rates: Counters
    services: list[ServiceRow]
    # One column per figure (ACTIVE..RATES+4), one entry per real server in service order.
    columns: list[Sequence[int]] = field(default_factory=list)
    layout: object = None  # same object while services, servers and labels stay the same; None: unknown


def rows_from_snapshot(snap: Snapshot) -> Rows:
    services = []
    vals: list[tuple[int, ...]] = []
    for s in snap.services:
        sid = L.service_id(s.af, s.protocol, s.addr, s.port, s.fwmark)
        services.append(
            ServiceRow(
                sid,
                L.render(L.service_labels(s.protocol, s.addr, s.port, s.fwmark)),
                s.stats,
                s.rates,
                [(sid, L.dest_id(d.addr, d.port)) for d in s.dests],
                [
                    L.render(L.backend_labels(s.protocol, s.addr, s.port, s.fwmark, d.addr, d.port))
                    for d in s.dests
                ],
            )
        )
        vals += [(d.activeconns, d.inactconns, d.weight, d.persistconns, *d.stats, *d.rates) for d in s.dests]
    return Rows(snap.stats, snap.rates, services, list(zip(*vals, strict=True)))


def dest_columns(dests: Sequence[RealServer]) -> list[Sequence[int]]:
    """The figures of many real servers as columns (one per figure, ACTIVE..RATES+4)."""
    vals = [
        (d.activeconns, d.inactconns, d.weight, d.persistconns, *d.stats.shown(), *d.stats.rates())
        for d in dests
    ]
    return list(zip(*vals, strict=True))


class LiveRows:
    """Rows read from a Director's own objects; label text is cached per rule-set generation."""

    def __init__(self, director: Director) -> None:
        self.director = director
        self._generation = -1
        self._layout: list[tuple[VirtualService, ServiceRow]] = []
        self._dests: list[RealServer] = []

    def _relayout(self) -> None:
        layout = []
        dests: list[RealServer] = []
        for svc in self.director.services:
            addr = "" if svc.addr is None else str(svc.addr)
            proto, port, mark = int(svc.protocol), svc.port, svc.fwmark
            sid = L.service_id(svc.af, proto, addr, port, mark)
            row = ServiceRow(
                sid,
                L.render(L.service_labels(proto, addr, port, mark)),
                (0, 0, 0, 0, 0),
                (0, 0, 0, 0, 0),
                [(sid, L.dest_id(str(d.addr), d.port)) for d in svc.dests],
                [L.render(L.backend_labels(proto, addr, port, mark, str(d.addr), d.port)) for d in svc.dests],
            )
            layout.append((svc, row))
            dests += svc.dests
        self._layout = layout
        self._dests = dests
        self._generation = self.director.services.generation

    def __call__(self) -> Rows:
        if self.director.services.generation != self._generation:
            self._relayout()
        services = []
        for svc, row in self._layout:
            row.stats, row.rates = svc.stats.shown(), svc.stats.rates()
            services.append(row)
        tot = self.director.services.tot_stats
        return Rows(tot.shown(), tot.rates(), services, dest_columns(self._dests), self._layout)
