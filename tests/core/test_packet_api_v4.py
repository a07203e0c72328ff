"""The int entry points (process_in_v4, process_out_tcp, lookup_out_v4, lookup_in_v4, and
process_in_tcp for a held entry) decide exactly
as process_in / process_out / lookup_out / lookup_in do: two directors, one fed Packets and one fed
numbers, replay the same random workload and must agree on every verdict, entry, counter and timer."""

from __future__ import annotations

import ipaddress
import random

import pytest

from pylvs.core.conn import Connection
from pylvs.core.director import Director, take_snapshot
from pylvs.core.packet import Action, Verdict
from pylvs.core.types import DestConfig, Fwd, Packet, Proto, ServiceConfig, ServiceKey, SvcFlags

V4 = ipaddress.IPv4Address
VIP = V4("10.0.0.1")
FLAGS = [0x02, 0x02, 0x12, 0x10, 0x10, 0x10, 0x11, 0x01, 0x04, 0x14, 0x18, 0x00]


def build(seed: int) -> Director:
    r = random.Random(seed)
    d = Director(rng=random.Random(seed))
    d.sysctl.secure_tcp = r.choice([0, 3])
    d.sysctl.sloppy_tcp = r.choice([0, 1])
    d.sysctl.expire_nodest_conn = r.choice([0, 1])
    d.sysctl.conn_reuse_mode = r.choice([0, 1, 2])
    for proto, port, flags, timeout in (
        (Proto.TCP, 80, SvcFlags.NONE, 0),
        (Proto.TCP, 443, SvcFlags.PERSISTENT, 30),
        (Proto.UDP, 53, SvcFlags.NONE, 0),
        (Proto.UDP, 54, SvcFlags.ONEPACKET, 0),
    ):
        key = ServiceKey.for_addr(proto, VIP, port)
        d.add_service(key, ServiceConfig(r.choice(["wlc", "rr", "sh", "lc"]), flags, timeout))
        for j in range(3):
            fwd = [Fwd.MASQ, Fwd.DROUTE, Fwd.FULLNAT][j]
            d.add_dest(key, DestConfig(V4(f"192.168.1.{10 + j}"), 8080, fwd, 1 + j, r.choice([0, 0, 4])))
    return d


def same(a: Connection | None, b: Connection | None) -> None:
    if a is None or b is None:
        assert a is b is None
        return
    assert (a.key, a.dport, a.flags, a.state, a.timeout, a.expires) == (
        b.key,
        b.dport,
        b.flags,
        b.state,
        b.timeout,
        b.expires,
    )


@pytest.mark.parametrize("seed", range(12))
def test_int_entry_points_decide_as_the_packet_ones(seed: int) -> None:
    r = random.Random(1000 + seed)
    a, b = build(seed), build(seed)
    now = 1.0
    flows = []
    forwarded = replies = held = 0
    recent: list[tuple[Proto, ipaddress.IPv4Address, int, int]] = []  # flows forwarded lately
    for step in range(2500):
        if r.random() < 0.2:
            now += r.choice([0.0, 0.01, 0.5, 1.0, 2.5, 4.0, 40.0])
        if r.random() < 0.3 or not flows:
            proto = r.choice([Proto.TCP, Proto.TCP, Proto.UDP])
            port = r.choice([80, 443, 81]) if proto == Proto.TCP else r.choice([53, 54])
            flows.append((proto, V4(0x64400000 + r.randrange(64)), r.randrange(1024, 1040), port))
        proto, caddr, cport, vport = r.choice(flows)
        if recent and r.random() < 0.5:
            proto, caddr, cport, vport = r.choice(recent)
        flags = r.choice(FLAGS) if proto == Proto.TCP else 0
        length = r.randrange(40, 1500)
        if r.random() < 0.7:
            va = a.process_in(Packet(proto, caddr, cport, VIP, vport, 0, length, flags), now)
            vb = b.process_in_v4(int(proto), int(caddr), cport, int(VIP), vport, 0, length, flags, now)
            if isinstance(vb, Verdict):
                assert va.action == vb.action != Action.FORWARD
                assert vb.conn is None
            else:
                assert va.action == Action.FORWARD
                same(va.conn, vb)
                forwarded += 1
                recent = [*recent[-20:], (proto, caddr, cport, vport)]
        else:
            ca = a.lookup_in(proto, caddr, cport, VIP, vport)
            cb = b.lookup_in_v4(int(proto), int(caddr), cport, int(VIP), vport)
            same(ca, cb)
            if ca is None or cb is None:
                continue
            if ca.fwd in (Fwd.MASQ, Fwd.FULLNAT):
                ra, rb = ca.daddr, cb.daddr
                oa = a.lookup_out(proto, ra, ca.dport, caddr, cport)
                ob = b.lookup_out_v4(int(proto), int(rb), cb.dport, int(caddr), cport)
            else:
                oa = a.lookup_out(proto, VIP, vport, caddr, cport)
                ob = b.lookup_out_v4(int(proto), int(VIP), vport, int(caddr), cport)
            same(oa, ob)
            if proto == Proto.TCP and r.random() < 0.5:  # a segment of the entry the engine holds
                va = a.process_in(Packet(proto, caddr, cport, VIP, vport, 0, length, flags), now)
                vb = b.process_in_tcp(cb, length, flags, now)
                if isinstance(vb, Verdict):
                    assert va.action == vb.action != Action.FORWARD
                else:
                    same(va.conn, vb)
                    held += 1
                continue
            if oa is None or ob is None or proto != Proto.TCP:
                continue
            a.process_out(oa, Packet(proto, oa.daddr, oa.dport, caddr, cport, 0, length, flags), now)
            b.process_out_tcp(ob, length, flags, now)
            same(oa, ob)
            replies += 1
        if step % 100 == 0:
            assert take_snapshot(a) == take_snapshot(b)
            assert sorted(map(repr, a.connections_view(now))) == sorted(map(repr, b.connections_view(now)))
            assert a.next_deadline() == b.next_deadline()
    assert take_snapshot(a) == take_snapshot(b)
    assert forwarded > 300 and replies > 20 and held > 20  # the workload did reach every path


def test_process_in_v4_other_protocols() -> None:
    d = build(0)
    # not a protocol IPVS balances: passes, and the clock still moves
    assert d.process_in_v4(1, 0x64400001, 0, int(VIP), 0, 0, 84, 0, 5.0) is not None
    v = d.process_in_v4(1, 0x64400001, 0, int(VIP), 0, 0, 84, 0, 5.0)
    assert isinstance(v, Verdict) and v.action == Action.PASS
    assert d.env.now == 5.0
    # UDP takes the Packet path and returns the entry itself
    c = d.process_in_v4(17, 0x64400001, 999, int(VIP), 53, 0, 60, 0, 6.0)
    assert isinstance(c, Connection) and c.dport == 8080
