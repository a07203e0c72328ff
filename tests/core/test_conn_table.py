"""The connection table: packed keys, the lazy timer wheel, and accounting invariants (hypothesis)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.conn import F_INACTIVE, F_TEMPLATE, make_key, split_key
from pylvs.core.director import Director
from pylvs.core.types import (
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    DestConfig,
    Fwd,
    Packet,
    Proto,
    ServiceConfig,
    ServiceKey,
    SvcFlags,
)

ip = ipaddress.ip_address


def test_key_round_trip_v4_v6() -> None:
    for args in [
        (6, ip("10.1.2.3"), 40000, ip("172.25.254.100"), 80),
        (17, ip("255.255.255.255"), 65535, ip("0.0.0.0"), 0),
        (132, ip("2001:db8::1"), 1, ip("ffff::ffff"), 65535),
        (0, ip("::"), 0, ip("::1"), 0),
    ]:
        assert split_key(make_key(*args)) == args  # type: ignore[arg-type]
    assert make_key(6, ip("0.0.0.1"), 0, ip("0.0.0.0"), 0) != make_key(6, ip("::1"), 0, ip("::"), 0)


def _director() -> tuple[Director, list[ServiceKey]]:
    d = Director()
    keys = []
    for port, cfg in (
        (80, ServiceConfig("rr")),
        (81, ServiceConfig("wlc", SvcFlags.PERSISTENT, 20, 0xFFFFFF00)),
    ):
        k = ServiceKey.for_addr(Proto.TCP, ip("10.0.0.1"), port)
        d.add_service(k, cfg)
        keys.append(k)
    ku = ServiceKey.for_addr(Proto.UDP, ip("10.0.0.1"), 53)
    d.add_service(ku, ServiceConfig("rr", SvcFlags.PERSISTENT | SvcFlags.ONEPACKET, 5))
    keys.append(ku)
    for k in keys:
        for i, fwd in enumerate((Fwd.MASQ, Fwd.DROUTE, Fwd.FULLNAT)):
            d.add_dest(k, DestConfig(ip(f"192.168.1.{i + 1}"), k.port, fwd, 1, 3 if i == 0 else 0))
    return d, keys


def check_invariants(d: Director) -> None:
    live = [c for c in d.conns if not c.dead]
    dests = {id(c.dest): c.dest for c in live}
    for svc in d.services:
        for r in svc.dests:
            dests[id(r)] = r
    for r in dests.values():
        mine = [c for c in live if c.dest is r]
        conns = [c for c in mine if not c.flags & F_TEMPLATE]
        assert r.total == len(conns) >= 0
        assert r.activeconns == sum(1 for c in conns if not c.flags & F_INACTIVE) >= 0
        assert r.activeconns + r.inactconns == r.total
        assert r.persistconns == sum(1 for c in mine if c.flags & F_TEMPLATE) >= 0
        assert not r.overload or r.u_threshold
        for s in r.stats.shown():
            assert s >= 0
    for c in live:
        assert c.n_control == sum(1 for x in live if x.control is c)


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(
            ["syn", "ack", "fin", "rst", "reply", "udp", "time", "del", "add", "weight0", "sysctl"]
        ),
        st.integers(0, 5),  # client
        st.integers(0, 2),  # service
        st.floats(0, 200),  # time step
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_counters_follow_live_entries(events: list[tuple[str, int, int, float]]) -> None:
    d, keys = _director()
    now = 0.0
    flags = {"syn": TCP_SYN, "ack": TCP_ACK, "fin": TCP_FIN | TCP_ACK, "rst": TCP_RST}
    for kind, client, si, step in events:
        key = keys[si]
        caddr = ip(f"172.16.{client % 2}.{client + 1}")
        if kind in flags or kind == "udp":
            proto, port = (Proto.UDP, 53) if kind == "udp" else (Proto.TCP, key.port if si < 2 else 80)
            d.process_in(
                Packet(proto, caddr, 1000 + client, ip("10.0.0.1"), port, 0, 40, flags.get(kind, 0)), now
            )
        elif kind == "reply":
            for c in list(d.conns):
                if not c.is_template and c.fwd in (Fwd.MASQ, Fwd.FULLNAT) and not c.dead:
                    d.process_out(
                        c, Packet(c.protocol, c.daddr, c.dport, c.caddr, c.cport, 0, 40, TCP_ACK), now
                    )
                    break
        elif kind == "time":
            now += step
            d.tick(now)
        elif kind == "del":
            svc = d.services.get(key)
            if svc is not None and svc.dests:
                r = svc.dests[client % len(svc.dests)]
                d.del_dest(key, r.addr, r.port)
        elif kind == "add":
            try:
                d.add_dest(key, DestConfig(ip(f"192.168.1.{client % 3 + 1}"), key.port, Fwd.MASQ, 1, 2))
            except Exception:
                pass
        elif kind == "weight0":
            svc = d.services.get(key)
            if svc is not None and svc.dests:
                r = svc.dests[0]
                d.edit_dest(key, DestConfig(r.addr, r.port, r.fwd, 0))
        elif kind == "sysctl":
            d.sysctl.expire_nodest_conn ^= client & 1
            d.sysctl.expire_quiescent_template ^= (client >> 1) & 1
            d.sysctl.conn_reuse_mode = client % 4
        check_invariants(d)
    d.tick(now + 10_000)
    check_invariants(d)
    assert len(d.conns) == 0  # everything expires in the end, templates included


def test_timer_wheel_brought_forward_and_pushed_back() -> None:
    d = Director()
    k = ServiceKey.for_addr(Proto.TCP, ip("10.0.0.1"), 80)
    d.add_service(k, ServiceConfig("rr"))
    d.add_dest(k, DestConfig(ip("192.168.1.1"), 80, Fwd.MASQ))
    p = Packet(Proto.TCP, ip("1.1.1.1"), 1, ip("10.0.0.1"), 80, 0, 40, TCP_SYN)
    c = d.process_in(p, 0).conn
    d.process_out(c, Packet(Proto.TCP, c.daddr, 80, c.caddr, 1, 0, 40, TCP_SYN | TCP_ACK), 0)
    d.process_in(Packet(Proto.TCP, ip("1.1.1.1"), 1, ip("10.0.0.1"), 80, 0, 40, TCP_ACK), 0)
    assert c.expires == 900
    d.process_in(Packet(Proto.TCP, ip("1.1.1.1"), 1, ip("10.0.0.1"), 80, 0, 40, TCP_RST), 5)
    assert c.expires == 15  # brought forward: filed again
    d.tick(14.9)
    assert not c.dead
    d.tick(15)
    assert c.dead
