"""The packet engine on the core's int entry points (process_in_v4, process_out_tcp, lookup_out_v4)
forwards exactly as on the Packet API: two forwarders over two identical real directors, one with
the int entry points switched off, replay the same random traffic (TCP/UDP requests and replies,
NAT/DR/TUN/FULLNAT, persistence, one-packet, fwmark through handle_marked, a server-less service,
timers running out) and must send the same frames and end with the same connections and counters."""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from pylvs.core.director import Director, take_snapshot
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey, SvcFlags
from pylvs.engines.packet.csum import checksum, pseudo_sum_v4
from pylvs.engines.packet.forward import Forwarder, Iface, Route
from pylvs.engines.packet.frames import ipv4_header
from pylvs.engines.packet.neigh import Neighbours
from pylvs.engines.packet.ports import PortPool

A = socket.inet_aton
V4 = ipaddress.IPv4Address
MAC_IN = bytes.fromhex("020000000001")
MAC_LAN = bytes.fromhex("020000000002")
MAC_CLIENT = bytes.fromhex("02000000000c")
VIP = "172.25.254.100"
VIP_MARK = "172.25.254.200"
CIPS = ["172.25.254.10", "172.25.254.11", "172.25.254.12"]
RIPS = {
    Fwd.MASQ: "192.168.1.10",
    Fwd.DROUTE: "192.168.1.11",
    Fwd.TUNNEL: "192.168.1.12",
    Fwd.FULLNAT: "192.168.1.13",
}
FLAGS = [0x02, 0x02, 0x12, 0x10, 0x10, 0x10, 0x18, 0x11, 0x01, 0x04, 0x14, 0x00]
MARK = 7


def build(seed: int) -> Forwarder:
    r = random.Random(seed)
    d = Director(rng=random.Random(seed))
    d.sysctl.secure_tcp = r.choice([0, 3])
    d.sysctl.sloppy_tcp = r.choice([0, 1])
    d.sysctl.expire_nodest_conn = r.choice([0, 1])
    d.sysctl.conn_reuse_mode = r.choice([0, 1, 2])
    vip = V4(VIP)
    for proto, port, flags, timeout in (
        (Proto.TCP, 80, SvcFlags.NONE, 0),
        (Proto.TCP, 443, SvcFlags.PERSISTENT, 30),
        (Proto.UDP, 53, SvcFlags.NONE, 0),
        (Proto.UDP, 54, SvcFlags.ONEPACKET, 0),
    ):
        key = ServiceKey.for_addr(proto, vip, port)
        d.add_service(key, ServiceConfig(r.choice(["wlc", "rr", "sh", "lc"]), flags, timeout))
        for fwd, rip in RIPS.items():
            d.add_dest(key, DestConfig(V4(rip), 8080, fwd, r.randint(1, 3)))
    d.add_service(ServiceKey.for_addr(Proto.TCP, vip, 8000), ServiceConfig("rr"))  # no servers
    mkey = ServiceKey.for_fwmark(MARK)
    d.add_service(mkey, ServiceConfig("rr"))
    d.add_dest(mkey, DestConfig(V4("192.168.1.20"), 0, Fwd.MASQ, 1))
    ifaces = {1: Iface(1, "eth0", MAC_IN, 1500, [A(VIP)]), 2: Iface(2, "eth1", MAC_LAN, 1500)}

    def route(dst: bytes) -> Route:
        if dst[:3] == A("192.168.1.0")[:3]:
            return Route(2, dst, A("192.168.1.100"))
        return Route(1, dst, A(VIP))

    neigh = Neighbours(kernel_table=None)
    for i in range(10, 21):
        neigh.macs[A(f"192.168.1.{i}")] = bytes([2, 0, 0, 0, 0, i])
    neigh.macs[A(CIPS[0])] = MAC_CLIENT  # the others wait for ARP
    f = Forwarder(d, ifaces, route, neigh, PortPool(10000, 10050))
    f.load_rules()
    return f


def frame(
    proto: int, src: str, sport: int, dst: str, dport: int, flags: int, to: bytes, payload: bytes
) -> bytearray:
    if proto == 6:
        l4 = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 65535, 0, 0)) + payload
        off = 16
    else:
        l4 = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)) + payload
        off = 6
    struct.pack_into("!H", l4, off, checksum(l4, pseudo_sum_v4(A(src), A(dst), proto, len(l4))))
    ip = ipv4_header(A(src), A(dst), proto, len(l4))
    return bytearray(bytes(10) + to + MAC_CLIENT + b"\x08\x00" + bytes(ip) + bytes(l4))


def reply_for(r: random.Random, fw: Forwarder) -> tuple[int, bytearray] | None:
    """A real server's answer on one of the director's NAT or FULLNAT entries (or a stray one)."""
    conns = [c for c in fw.director.conns if not c.dead and not c.is_template]
    if not conns or r.random() < 0.1:
        proto = r.choice([6, 17])
        return 2, frame(
            proto, RIPS[Fwd.MASQ], 8080, r.choice(CIPS), r.randint(1024, 1030), 0x10, MAC_LAN, b"x"
        )
    c = r.choice(conns)
    proto = int(c.protocol)
    caddr = str(c.caddr)
    raddr, rport = str(c.daddr), c.dport
    flags = r.choice(FLAGS)
    if c.fwd == Fwd.FULLNAT:
        ent = next((e for e in fw.fn_by_client.values() if e.conn is c), None)
        if ent is None:
            return None
        dst, dport = socket.inet_ntoa(ent.laddr), ent.lport
    else:
        dst, dport = caddr, c.cport
    if proto not in (6, 17):
        return None
    return 2, frame(proto, raddr, rport, dst, dport, flags, MAC_LAN, b"r" * r.randint(0, 40))


def request(r: random.Random) -> tuple[int, bytearray]:
    proto, port = r.choice([(6, 80), (6, 80), (6, 443), (6, 8000), (17, 53), (17, 54)])
    flags = r.choice(FLAGS) if proto == 6 else 0
    f = frame(proto, r.choice(CIPS), r.randint(1024, 1030), VIP, port, flags, MAC_IN, b"q" * r.randint(0, 60))
    return 1, f


def outputs(res: list[tuple[int, bytes | bytearray]]) -> list[tuple[int, bytes]]:
    return [(i, bytes(b)) for i, b in res]


@pytest.mark.parametrize("seed", range(10))
def test_int_entry_points_forward_as_the_packet_api(seed: int) -> None:
    fa, fb = build(seed), build(seed)
    assert fa._in_v4 is not None and fa._out_tcp is not None and fa._lookup_out_v4 is not None
    fb._in_v4 = fb._out_tcp = fb._lookup_out_v4 = None  # the Packet API, as before
    r = random.Random(5000 + seed)
    now = 1.0
    for step in range(1500):
        x = r.random()
        if x < 0.03:
            now += r.choice([1.0, 10.0, 60.0, 130.0, 400.0])
            fa.director.advance(now)
            fb.director.advance(now)
            fa.sweep()
            fb.sweep()
            continue
        now += r.random() * 0.05
        if x < 0.12:
            proto = r.choice([6, 17])
            flags = r.choice(FLAGS) if proto == 6 else 0
            pkt = bytes(
                frame(proto, r.choice(CIPS), r.randint(1024, 1027), VIP_MARK, 80, flags, MAC_IN, b"m")[24:]
            )
            ra = fa.handle_marked(1, MAC_CLIENT, pkt, MARK, now)
            rb = fb.handle_marked(1, MAC_CLIENT, pkt, MARK, now)
            assert (outputs(ra[0]), ra[1]) == (outputs(rb[0]), rb[1]), step
            continue
        got = request(r) if x < 0.65 else reply_for(r, fa)
        if got is None:
            continue
        ifindex, f = got
        oa = outputs(fa.handle(ifindex, bytearray(f), now))
        ob = outputs(fb.handle(ifindex, bytearray(f), now))
        assert oa == ob, step
        assert fa.counters == fb.counters, step
    assert fa.counters == fb.counters
    assert fa.counters["in"] > 100 and fa.counters["out"] > 20 and fa.counters["nodest"] > 0
    assert fa.director.connections_view(now) == fb.director.connections_view(now)
    assert take_snapshot(fa.director) == take_snapshot(fb.director)


def test_a_director_with_its_packet_api_replaced_keeps_the_packet_path() -> None:
    """Tests drive the engine with a small fake core put on the director's Packet API: the int
    entry points, which the fake does not replace, must then not be used."""
    d: Any = Director()
    d.process_in = lambda pkt, now: SimpleNamespace(action=SimpleNamespace(name="DROP"), conn=None)
    d.process_out = lambda conn, pkt, now: None
    d.lookup_out = lambda *a: None
    f = Forwarder(d, {}, lambda dst: None, Neighbours(kernel_table=None), PortPool(10000, 10010))
    assert f._in_v4 is None and f._out_tcp is None and f._lookup_out_v4 is None
    f2 = Forwarder(Director(), {}, lambda dst: None, Neighbours(kernel_table=None), PortPool(10000, 10010))
    assert f2._in_v4 is not None and f2._out_tcp is not None and f2._lookup_out_v4 is not None
