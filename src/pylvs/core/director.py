"""The Director: the whole of IPVS state in one object (what the kernel module holds).

Control operations (ctl.py) and the packet path (packet.py, conn.py, proto/) meet here; engines, the
daemon and `pylvs simulate` drive it, passing time in.
"""

from __future__ import annotations

import errno
import random

from pylvs.core.ctl import ServiceTable
from pylvs.core.errors import IPVSError, Op
from pylvs.core.sched.base import SchedEnv
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.snapshot import DestView, ServiceView, Snapshot
from pylvs.core.sysctl import Sysctls
from pylvs.core.types import DestConfig, IPAddr, ServiceConfig, ServiceKey, Timeouts

MAX_TIMEOUT = 2678400  # ipvsadm's own bound for --set; the kernel allows up to INT_MAX/HZ


class Director:
    """IPVS state: services, real servers, timeouts, sysctls, and (see packet.py) connections."""

    def __init__(self, rng: random.Random | None = None, sysctl: Sysctls | None = None) -> None:
        self.services = ServiceTable()
        self.timeouts = Timeouts()
        self.sysctl = sysctl or Sysctls()
        self.env = SchedEnv(now=0.0, rng=rng or random.Random(), sysctl=self.sysctl)

    # -- control: thin wrappers that keep one place for cross-cutting effects ---------------
    def add_service(self, key: ServiceKey, cfg: ServiceConfig) -> VirtualService:
        return self.services.add_service(key, cfg)

    def edit_service(self, key: ServiceKey, cfg: ServiceConfig) -> VirtualService:
        return self.services.edit_service(key, cfg)

    def del_service(self, key: ServiceKey) -> None:
        self.services.del_service(key, self.env.now)

    def flush(self) -> None:
        self.services.flush(self.env.now)

    def add_dest(self, key: ServiceKey, cfg: DestConfig) -> RealServer:
        return self.services.add_dest(key, cfg, self.env.now)

    def edit_dest(self, key: ServiceKey, cfg: DestConfig) -> RealServer:
        return self.services.edit_dest(key, cfg)

    def del_dest(self, key: ServiceKey, addr: IPAddr, port: int) -> RealServer:
        return self.services.del_dest(key, addr, port, self.env.now)

    def zero(self, key: ServiceKey | None = None) -> None:
        self.services.zero(key)

    def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        """`--set tcp tcpfin udp`: 0 keeps a value; the new values apply from each entry's next packet."""
        for v in (tcp, tcpfin, udp):
            if not 0 <= v <= MAX_TIMEOUT:
                raise IPVSError(Op.SET_TIMEOUT, errno.EINVAL)
        cur = self.timeouts
        self.timeouts = Timeouts(tcp or cur.tcp, tcpfin or cur.tcpfin, udp or cur.udp)


def take_snapshot(director: Director) -> Snapshot:
    """The director's rules, counters and rates as plain views (see snapshot.py)."""
    services = []
    for svc in director.services:
        dests = tuple(
            DestView(
                addr=str(d.addr),
                port=d.port,
                fwd=int(d.fwd),
                weight=d.weight,
                u_threshold=d.u_threshold,
                l_threshold=d.l_threshold,
                activeconns=d.activeconns,
                inactconns=d.inactconns,
                persistconns=d.persistconns,
                tun_type=int(d.tun_type),
                tun_port=d.tun_port,
                tun_flags=int(d.tun_flags),
                stats=d.stats.shown(),
                rates=d.stats.rates(),
            )
            for d in svc.dests
        )
        services.append(
            ServiceView(
                af=svc.af,
                protocol=int(svc.protocol),
                addr="" if svc.addr is None else str(svc.addr),
                port=svc.port,
                fwmark=svc.fwmark,
                scheduler=svc.scheduler_name,
                flags=int(svc.flags),
                timeout=svc.timeout,
                netmask=svc.netmask,
                pe_name=svc.pe_name,
                dests=dests,
                stats=svc.stats.shown(),
                rates=svc.stats.rates(),
            )
        )
    tot = director.services.tot_stats
    t = director.timeouts
    return Snapshot(
        services=tuple(services),
        stats=tot.shown(),
        rates=tot.rates(),
        timeouts=(t.tcp, t.tcpfin, t.udp),
    )
