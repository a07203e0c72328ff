"""Small builders shared by the core tests."""

from __future__ import annotations

import ipaddress

from pylvs.core.director import Director
from pylvs.core.sched.base import SchedEnv
from pylvs.core.service import VirtualService
from pylvs.core.types import DestConfig, Fwd, IPAddr, Packet, Proto, ServiceConfig, ServiceKey


def ip(s: str) -> IPAddr:
    return ipaddress.ip_address(s)


def tcp_svc(vip: str = "172.25.254.100", port: int = 80) -> ServiceKey:
    return ServiceKey.for_addr(Proto.TCP, ip(vip), port)


def director_with(
    sched: str,
    servers: list[tuple[str, int]],
    key: ServiceKey | None = None,
    fwd: Fwd = Fwd.MASQ,
    **svc_kw: object,
) -> tuple[Director, ServiceKey]:
    """A director with one service and its servers added in the given order."""
    d = Director()
    key = key or tcp_svc()
    d.add_service(key, ServiceConfig(scheduler=sched, **svc_kw))  # type: ignore[arg-type]
    for addr, weight in servers:
        d.add_dest(key, DestConfig(ip(addr), key.port, fwd, weight))
    return d, key


def syn(
    client: str = "172.25.254.10",
    cport: int = 40000,
    vip: str = "172.25.254.100",
    vport: int = 80,
    proto: Proto = Proto.TCP,
    mark: int = 0,
) -> Packet:
    return Packet(proto, ip(client), cport, ip(vip), vport, fwmark=mark, tcp_flags=0x02)


def svc_of(d: Director, key: ServiceKey) -> VirtualService:
    svc = d.services.get(key)
    assert svc is not None and svc.scheduler is not None
    return svc


def hold(svc: VirtualService, env: SchedEnv | None = None, vip: str = "172.25.254.100") -> str:
    """Schedule one connection to `vip` and keep it open (established = active): the chosen real
    server's last octet, or "-" when none is chosen. A fresh SchedEnv each time unless `env` is given."""
    assert svc.scheduler is not None
    r = svc.scheduler.schedule(syn(vip=vip), SchedEnv() if env is None else env)
    if r is None:
        return "-"
    r.bind_conn()
    r.activeconns += 1
    svc.scheduler.load_changed(r)
    return str(r.addr).rsplit(".", 1)[1]
