"""Connection entries by protocol and state, and persistence templates, counted from the core's table
the way `ipvsadm -Lnc` names them."""

from __future__ import annotations

import ipaddress
from collections import Counter

from pylvs.core.conn import make_key, split_key
from pylvs.core.director import Director
from pylvs.core.types import TCP_SYN, DestConfig, Fwd, Packet, Proto, ServiceConfig, ServiceKey, SvcFlags
from pylvs.metrics.daemon import ConnStates, _proto_of

VIP = ipaddress.ip_address("192.0.2.1")
VIP6 = ipaddress.ip_address("2001:db8::1")


def test_protocol_unpacked_from_keys() -> None:
    for proto in (0, 6, 17, 132):
        for c, v in ((ipaddress.ip_address("10.0.0.1"), VIP), (ipaddress.ip_address("2001:db8::9"), VIP6)):
            key = make_key(proto, c, 40000, v, 80)
            assert _proto_of(key) == split_key(key)[0] == proto


def test_counts_by_state_and_templates() -> None:
    d = Director()
    web = ServiceKey.for_addr(Proto.TCP, VIP, 80)
    dns = ServiceKey.for_addr(Proto.UDP, VIP, 53)
    d.add_service(web, ServiceConfig("rr", SvcFlags.PERSISTENT, 300))
    d.add_dest(web, DestConfig(ipaddress.ip_address("10.0.0.2"), 80, Fwd.MASQ, 1))
    d.add_service(dns, ServiceConfig("rr"))
    d.add_dest(dns, DestConfig(ipaddress.ip_address("10.0.0.3"), 53, Fwd.MASQ, 1))
    for i in range(3):
        client = ipaddress.ip_address(f"198.51.100.{i + 1}")
        d.process_in(Packet(Proto.TCP, client, 40000, VIP, 80, length=60, tcp_flags=TCP_SYN), 1.0)
        d.process_in(Packet(Proto.UDP, client, 40000, VIP, 53, length=60), 1.0)
    entries, templates = ConnStates(d)()
    want = Counter(
        (
            Proto(c.protocol).label
            if not c.template
            else "IP"
            if c.protocol == 0
            else Proto(c.protocol).label,
            c.state,
        )
        for c in d.connections_view()
    )
    assert entries == dict(want)
    assert entries[("TCP", "SYN_RECV")] == 3 and entries[("UDP", "UDP")] == 3
    assert templates == 3  # one persistence template per client
    assert sum(n for (_, state), n in entries.items() if state in ("NONE", "ASSURED")) == 3
