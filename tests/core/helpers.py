"""Small builders shared by the core tests."""

from __future__ import annotations

import ipaddress

from pylvs.core.director import Director
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
