"""What one scrape reads: the rows of services and real servers, and the figures beside them.

Rows come either from a Snapshot (any process: tests, a remote daemon) or straight from a live
Director (pylvsd), whose labels are rebuilt only when the rule set changes, so a scrape of 10,000
real servers stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """One virtual service and its real servers, as three parallel lists (cheap to build per scrape)."""

    ident: str  # service_id(): cache and health key
    labels: str  # rendered service labels (no remote_*)
    stats: Counters
    rates: Counters
    dest_ids: list[tuple[str, str]]  # (service_id, dest_id) per real server
    dest_labels: list[str]  # rendered node_exporter backend labels per real server
    dest_vals: list[tuple[int, ...]]  # see ACTIVE..RATES


@dataclass(slots=True)
class Rows:
    stats: Counters
    rates: Counters
    services: list[ServiceRow]
    layout: object = None  # same object while services, servers and labels stay the same; None: unknown


def rows_from_snapshot(snap: Snapshot) -> Rows:
    services = []
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
                [
                    (d.activeconns, d.inactconns, d.weight, d.persistconns, *d.stats, *d.rates)
                    for d in s.dests
                ],
            )
        )
    return Rows(snap.stats, snap.rates, services)


class LiveRows:
    """Rows read from a Director's own objects; label text is cached per rule-set generation."""

    def __init__(self, director: Director) -> None:
        self.director = director
        self._generation = -1
        self._layout: list[
            tuple[VirtualService, str, str, list[RealServer], list[tuple[str, str]], list[str]]
        ] = []

    def _relayout(self) -> None:
        layout = []
        for svc in self.director.services:
            addr = "" if svc.addr is None else str(svc.addr)
            proto, port, mark = int(svc.protocol), svc.port, svc.fwmark
            sid = L.service_id(svc.af, proto, addr, port, mark)
            dests = list(svc.dests)
            ids = [(sid, L.dest_id(str(d.addr), d.port)) for d in dests]
            lbls = [L.render(L.backend_labels(proto, addr, port, mark, str(d.addr), d.port)) for d in dests]
            layout.append((svc, sid, L.render(L.service_labels(proto, addr, port, mark)), dests, ids, lbls))
        self._layout = layout
        self._generation = self.director.services.generation

    def __call__(self) -> Rows:
        if self.director.services.generation != self._generation:
            self._relayout()
        services = []
        for svc, sid, slabels, dests, ids, lbls in self._layout:
            vals: list[tuple[int, ...]] = [
                (d.activeconns, d.inactconns, d.weight, d.persistconns, *d.stats.shown(), *d.stats.rates())
                for d in dests
            ]
            services.append(ServiceRow(sid, slabels, svc.stats.shown(), svc.stats.rates(), ids, lbls, vals))
        tot = self.director.services.tot_stats
        return Rows(tot.shown(), tot.rates(), services, self._layout)
