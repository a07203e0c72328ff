"""What the dashboard page shows, as JSON: services, real servers, rates, health; and connections.

Services and servers come in `ipvsadm -Ln` order (its sort), so the page reads like the listing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pylvs.core.snapshot import ConnView, ServiceView, Snapshot
from pylvs.core.types import AF_INET6, Fwd, Proto, SvcFlags
from pylvs.daemon import codec
from pylvs.ipvsadm.sort import sort_dests, sort_services
from pylvs.metrics.labels import dest_id, service_id
from pylvs.metrics.model import Health

_PROTO = {0: "IP", 6: "TCP", 17: "UDP", 132: "SCTP"}


def service_title(s: ServiceView) -> str:
    """The service as `ipvsadm -Ln` names it: "TCP  192.0.2.10:80", "FWM  26", "[2001:db8::1]:53"."""
    if s.fwmark:
        return f"FWM  {s.fwmark}" + (" IPv6" if s.af == AF_INET6 else "")
    host = f"[{s.addr}]" if ":" in s.addr else s.addr
    return f"{_PROTO.get(s.protocol, str(s.protocol))}  {host}:{s.port}"


def _fwd_label(fwd: int) -> str:
    try:
        return Fwd(fwd).label
    except ValueError:
        return str(fwd)


Order = list[tuple[int, list[int]]]  # (service index, its dests' indexes) in listing order


def listing_order(snap: Snapshot) -> Order:
    """Where each service and server goes in `ipvsadm -Ln` order (depends on the rules only)."""
    spos = {id(v): i for i, v in enumerate(snap.services)}
    out = []
    for s in sort_services(list(snap.services)):
        dpos = {id(v): i for i, v in enumerate(s.dests)}
        out.append((spos[id(s)], [dpos[id(d)] for d in sort_dests(list(s.dests))]))
    return out


def service_json(
    s: ServiceView, health: Mapping[tuple[str, str], Health], order: list[int] | None = None
) -> dict[str, Any]:
    sid = service_id(s.af, s.protocol, s.addr, s.port, s.fwmark)
    dests = []
    for d in sort_dests(list(s.dests)) if order is None else [s.dests[i] for i in order]:
        did = dest_id(d.addr, d.port)
        h = health.get((sid, did))
        dests.append(
            {
                "id": codec.hostport(d.addr, d.port),
                "addr": d.addr,
                "port": d.port,
                "fwd": _fwd_label(d.fwd),
                "weight": d.weight,
                "active": d.activeconns,
                "inactive": d.inactconns,
                "persist": d.persistconns,
                "health": h.state if h is not None else d.health,
                "last_ok": h.last_ok if h is not None else None,
                "checker": h.checker if h is not None else "",
                "stats": list(d.stats),
                "rates": list(d.rates),
                "config": {  # what PUT .../dests/{id} takes back (see daemon.codec)
                    "addr": d.addr,
                    "port": d.port,
                    "fwd": d.fwd,
                    "weight": d.weight,
                    "u_threshold": d.u_threshold,
                    "l_threshold": d.l_threshold,
                    "tun_type": d.tun_type,
                    "tun_port": d.tun_port,
                    "tun_flags": d.tun_flags,
                },
            }
        )
    flags = []
    if s.flags & SvcFlags.PERSISTENT:
        flags.append(f"persistent {s.timeout}")
    if s.flags & SvcFlags.ONEPACKET:
        flags.append("ops")
    return {
        "id": codec.service_id(s.key()),
        "title": service_title(s),
        "protocol": "FWM" if s.fwmark else _PROTO.get(s.protocol, str(s.protocol)),
        "scheduler": s.scheduler,
        "flags": " ".join(flags),
        "stats": list(s.stats),
        "rates": list(s.rates),
        "dests": dests,
    }


def state_json(
    snap: Snapshot,
    health: Mapping[tuple[str, str], Health],
    now: float,
    extra: Mapping[str, Any] | None = None,
    order: Order | None = None,
) -> dict[str, Any]:
    order = listing_order(snap) if order is None else order
    return {
        "time": now,
        "stats": list(snap.stats),
        "rates": list(snap.rates),
        "services": [service_json(snap.services[i], health, dorder) for i, dorder in order],
        **(extra or {}),
    }


def conn_line(c: ConnView) -> str:
    """One connection as `ipvsadm -Lnc` prints it (the filter matches against this text)."""
    proto = (
        "IP"
        if c.template and c.protocol == 0
        else Proto(c.protocol).label
        if c.protocol in (6, 17, 132)
        else "IP"
    )
    m, s = divmod(c.expires, 60)
    return (
        f"{proto:4} {m:02d}:{s:02d} {c.state:11} {c.caddr}:{c.cport} {c.vaddr}:{c.vport} {c.daddr}:{c.dport}"
    )


def connections_json(conns: Iterable[ConnView], query: str, limit: int) -> dict[str, Any]:
    """Connections whose `ipvsadm -Lnc` line contains every word of `query` (case-insensitive)."""
    words = query.lower().split()
    rows: list[dict[str, Any]] = []
    total = matched = 0
    for c in conns:
        total += 1
        line = conn_line(c)
        low = line.lower()
        if all(w in low for w in words):
            matched += 1
            if len(rows) < limit:
                rows.append(
                    {
                        "proto": line.split(" ", 1)[0],
                        "expires": c.expires,
                        "state": c.state,
                        "client": codec.hostport(c.caddr, c.cport),
                        "virtual": codec.hostport(c.vaddr, c.vport),
                        "server": codec.hostport(c.daddr, c.dport),
                        "template": c.template,
                    }
                )
    return {"total": total, "matched": matched, "connections": rows}
