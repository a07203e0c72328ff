"""Packets skip advance()'s next_due() check until ConnectionTable.wake: that may never skip a
timer that is due. Before every packet, whenever next_due() has come (a tick is owed), the cheap
test the packet path makes (deadline, sweep, wake) must say so too."""

from __future__ import annotations

import ipaddress
import random

import pytest

from pylvs.core.director import Director
from pylvs.core.types import DestConfig, Fwd, Packet, Proto, ServiceConfig, ServiceKey

VIP = ipaddress.IPv4Address("10.0.0.1")
FLAGS = [0x02, 0x12, 0x10, 0x11, 0x01, 0x04]


@pytest.mark.parametrize("seed", range(10))
def test_no_timer_left_overdue(seed: int) -> None:
    r = random.Random(seed)
    d = Director(rng=random.Random(seed))
    d.set_timeouts(r.choice([1, 3]), r.choice([1, 2]), r.choice([1, 2]))  # short: many expiries, some
    # below the estimator's 2 s (only those can file a bucket before the deadline)
    for proto, port in ((Proto.TCP, 80), (Proto.UDP, 53)):
        key = ServiceKey.for_addr(proto, VIP, port)
        d.add_service(key, ServiceConfig("wlc"))
        for j in range(3):
            d.add_dest(key, DestConfig(ipaddress.IPv4Address(f"192.168.1.{10 + j}"), 0, Fwd.MASQ, 1))
    now = 1.0
    expired = owed = 0
    texp = d.conns.expire

    def count(conn, when):  # type: ignore[no-untyped-def]
        nonlocal expired
        expired += 1
        return texp(conn, when)

    d.conns.expire = count  # type: ignore[method-assign]
    for _ in range(6000):
        now += r.choice([0.0, 0.001, 0.003, 0.02, 0.1])
        # an engine may hand in a slightly older time (the core's clock never goes back, but
        # timers are armed from the packet's time): such an arm can land in the held second
        pnow = now - r.choice([0.0, 0.0, 0.0, 0.0, 0.4, 0.9])
        t = max(pnow, d.env.now)
        due = d.conns.next_due()
        if due is not None and due <= t:  # a tick is owed
            assert t >= d._deadline or d._nodest_sweep or t >= d.conns.wake
            owed += 1
        caddr = ipaddress.IPv4Address(0x64400000 + r.randrange(300))
        cport = r.randrange(1024, 1034)
        if r.random() < 0.3:
            conn = d.lookup_in(Proto.TCP, caddr, cport, VIP, 80)
            if conn is not None and not conn.dead:
                d.process_out(
                    conn, Packet(Proto.TCP, conn.daddr, conn.dport, caddr, cport, 0, 52, 0x12), pnow
                )
        elif r.random() < 0.8:
            d.process_in(Packet(Proto.TCP, caddr, cport, VIP, 80, 0, 52, r.choice(FLAGS)), pnow)
        else:
            d.process_in_v4(17, int(caddr), cport, int(VIP), 53, 0, 60, 0, pnow)
    assert expired > 500 and owed > 100  # the workload did expire entries all along
