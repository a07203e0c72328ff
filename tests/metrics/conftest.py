"""A small director with an IPv4 TCP service, an IPv6 UDP service and a fwmark service."""

from __future__ import annotations

import ipaddress

import pytest

from pylvs.core.director import Director
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey

TCP = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address("192.0.2.10"), 80)
UDP6 = ServiceKey.for_addr(Proto.UDP, ipaddress.ip_address("2001:db8::10"), 53)
FWM = ServiceKey.for_fwmark(0x1A)


def _dest(addr: str, port: int, weight: int = 1) -> DestConfig:
    return DestConfig(ipaddress.ip_address(addr), port, Fwd.MASQ, weight)


@pytest.fixture
def director() -> Director:
    d = Director()
    d.add_service(TCP, ServiceConfig("rr"))
    d.add_dest(TCP, _dest("10.0.0.1", 8080, 3))
    d.add_dest(TCP, _dest("10.0.0.2", 8080, 1))
    d.add_service(UDP6, ServiceConfig("rr", netmask=128))
    d.add_dest(UDP6, _dest("2001:db8::1", 53, 2))
    d.add_service(FWM, ServiceConfig("rr"))
    d.add_dest(FWM, _dest("10.0.0.3", 0, 5))
    # Counters as traffic would leave them (the real-traffic test drives the engine instead).
    svc = d.services.get(TCP)
    assert svc is not None
    rs = svc.find_dest(ipaddress.ip_address("10.0.0.1"), 8080)
    assert rs is not None
    for st in (rs.stats, svc.stats, d.services.tot_stats):
        st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes = 7, 70, 60, 7000, 600000
    rs.activeconns, rs.total = 2, 5
    return d
