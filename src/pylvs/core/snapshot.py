"""Plain, serialisable views of the IPVS state: what a listing, the API and the dashboard show.

The kernel hands ipvsadm this through netlink; pylvsd hands it to pylvsadm as JSON. Formatters work on
these views only, so the same code lists a local Director and a remote daemon.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pylvs.core.types import (
    DestConfig,
    Fwd,
    IPAddr,
    Proto,
    ServiceConfig,
    ServiceKey,
    SvcFlags,
    TunFlags,
    TunType,
)

Counters = tuple[int, int, int, int, int]  # conns, inpkts, outpkts, inbytes, outbytes (or the 5 rates)


@dataclass(frozen=True, slots=True)
class DestView:
    addr: str
    port: int
    fwd: int  # Fwd value
    weight: int
    u_threshold: int
    l_threshold: int
    activeconns: int
    inactconns: int
    persistconns: int
    tun_type: int = 0
    tun_port: int = 0
    tun_flags: int = 0
    stats: Counters = (0, 0, 0, 0, 0)
    rates: Counters = (0, 0, 0, 0, 0)
    health: str = ""  # filled by the daemon's checkers ("up", "down", ...) ; "" when unchecked

    @property
    def ip(self) -> IPAddr:
        return ipaddress.ip_address(self.addr)

    def config(self) -> DestConfig:
        return DestConfig(
            self.ip,
            self.port,
            Fwd(self.fwd),
            self.weight,
            self.u_threshold,
            self.l_threshold,
            TunType(self.tun_type),
            self.tun_port,
            TunFlags(self.tun_flags),
        )


def make_dest_view(
    addr: str,
    port: int,
    fwd: int,
    weight: int,
    u_threshold: int,
    l_threshold: int,
    activeconns: int,
    inactconns: int,
    persistconns: int,
    tun_type: int,
    tun_port: int,
    tun_flags: int,
    stats: Counters,
    rates: Counters,
) -> DestView:
    """DestView(...) with every field but `health` (""), built without the frozen dataclass's
    __init__: a snapshot of 100,000 servers spends its time there otherwise. Same object."""
    v: DestView = _new(DestView)
    _s_addr(v, addr)
    _s_port(v, port)
    _s_fwd(v, fwd)
    _s_weight(v, weight)
    _s_u(v, u_threshold)
    _s_l(v, l_threshold)
    _s_active(v, activeconns)
    _s_inact(v, inactconns)
    _s_persist(v, persistconns)
    _s_tun_type(v, tun_type)
    _s_tun_port(v, tun_port)
    _s_tun_flags(v, tun_flags)
    _s_stats(v, stats)
    _s_rates(v, rates)
    _s_health(v, "")
    return v


# The slot setters of DestView, in field order (frozen blocks setattr, not the slot descriptors).
_new = object.__new__
(
    _s_addr,
    _s_port,
    _s_fwd,
    _s_weight,
    _s_u,
    _s_l,
    _s_active,
    _s_inact,
    _s_persist,
    _s_tun_type,
    _s_tun_port,
    _s_tun_flags,
    _s_stats,
    _s_rates,
    _s_health,
) = (DestView.__dict__[f.name].__set__ for f in fields(DestView))


@dataclass(frozen=True, slots=True)
class ServiceView:
    af: int
    protocol: int  # Proto value
    addr: str  # "" for a fwmark service
    port: int
    fwmark: int
    scheduler: str
    flags: int  # SvcFlags value
    timeout: int
    netmask: int
    pe_name: str
    dests: tuple[DestView, ...] = ()  # in the kernel's list order (newest first)
    stats: Counters = (0, 0, 0, 0, 0)
    rates: Counters = (0, 0, 0, 0, 0)

    def key(self) -> ServiceKey:
        if self.fwmark:
            return ServiceKey.for_fwmark(self.fwmark, self.af)
        return ServiceKey(self.af, Proto(self.protocol), ipaddress.ip_address(self.addr), self.port, 0)

    def config(self) -> ServiceConfig:
        return ServiceConfig(self.scheduler, SvcFlags(self.flags), self.timeout, self.netmask, self.pe_name)


@dataclass(frozen=True, slots=True)
class ConnView:
    """One line of /proc/net/ip_vs_conn."""

    protocol: int  # Proto value (0 = "IP" for fwmark templates)
    caddr: str
    cport: int
    vaddr: str
    vport: int
    daddr: str
    dport: int
    state: str  # printed state name
    expires: int  # seconds left
    pe_name: str = ""
    pe_data: str = ""
    fwd: int = 0
    template: bool = False


@dataclass(frozen=True, slots=True)
class DaemonView:
    """A connection-sync daemon, as --daemon lists it."""

    state: str  # "master" | "backup"
    mcast_ifn: str
    syncid: int
    maxlen: int = 0
    group: str = ""
    port: int = 0
    ttl: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    services: tuple[ServiceView, ...] = ()  # in our stable table order (address services, then fwmark)
    stats: Counters = (0, 0, 0, 0, 0)  # global totals
    rates: Counters = (0, 0, 0, 0, 0)
    timeouts: tuple[int, int, int] = (900, 120, 300)
    conn_tab_size: int = 4096
    daemons: tuple[DaemonView, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Snapshot:
        services = tuple(
            ServiceView(
                **{
                    **{k: v for k, v in s.items() if k not in ("dests", "stats", "rates")},
                    "dests": tuple(
                        DestView(
                            **{
                                **{k: v for k, v in d.items() if k not in ("stats", "rates")},
                                "stats": tuple(d["stats"]),
                                "rates": tuple(d["rates"]),
                            }
                        )
                        for d in s["dests"]
                    ),
                    "stats": tuple(s["stats"]),
                    "rates": tuple(s["rates"]),
                }
            )
            for s in data["services"]
        )
        return Snapshot(
            services=services,
            stats=tuple(data["stats"]),
            rates=tuple(data["rates"]),
            timeouts=tuple(data["timeouts"]),
            conn_tab_size=int(data["conn_tab_size"]),
            daemons=tuple(DaemonView(**d) for d in data.get("daemons", ())),
        )


def conn_from_json(data: dict[str, Any]) -> ConnView:
    return ConnView(**data)
