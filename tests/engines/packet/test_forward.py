"""The packet path on synthetic frames (no root, no sockets): each forwarding method's rewrite, checksums
in both forms (finished and CHECKSUM_PARTIAL), GSO cutting and ICMP for tunnels, FULLNAT ports."""

from __future__ import annotations

import ipaddress
import socket
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from pylvs.core.director import Director
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from pylvs.engines.packet import bpf, nft
from pylvs.engines.packet.csum import checksum, fold, pseudo_sum_v4, sum16
from pylvs.engines.packet.forward import Forwarder, Iface, Route
from pylvs.engines.packet.frames import (
    ETH,
    IP,
    VNET,
    arp_request,
    ipv4_header,
    segment_ipv4,
)
from pylvs.engines.packet.neigh import Neighbours
from pylvs.engines.packet.ports import PortPool

A = socket.inet_aton
MAC_IN = bytes.fromhex("020000000001")  # director eth0
MAC_LAN = bytes.fromhex("020000000002")  # director eth1
MAC_CLIENT = bytes.fromhex("02000000000c")
MAC_RS = {A("192.168.1.10"): bytes.fromhex("0200000000a1"), A("192.168.1.20"): bytes.fromhex("0200000000a2")}
VIP = "172.25.254.100"
CIP = "172.25.254.10"


class FakeCore:
    """The core's packet API in miniature (rr, no states): enough to drive the data path."""

    def __init__(self, director: Director) -> None:
        self.director = director
        self.conns: dict[tuple[Any, ...], SimpleNamespace] = {}
        self.out: dict[tuple[Any, ...], SimpleNamespace] = {}
        self.next = 0
        self.outs = 0

    def install(self) -> None:
        d: Any = self.director
        d.process_in = self.process_in
        d.lookup_out = lambda p, ra, rp, ca, cp: self.out.get((p, ra, rp, ca, cp))
        d.process_out = self.process_out

    def process_out(self, conn: Any, pkt: Any, now: float) -> None:
        self.outs += 1

    def process_in(self, pkt: Any, now: float) -> SimpleNamespace:
        k = (pkt.protocol, pkt.saddr, pkt.sport, pkt.daddr, pkt.dport)
        c = self.conns.get(k)
        if c is None:
            svc = next(
                (s for s in self.director.services if s.addr == pkt.daddr and s.port == pkt.dport), None
            )
            dests = list(reversed(svc.dests)) if svc else []  # oldest first: .10, then .20
            if not dests:
                return SimpleNamespace(action=SimpleNamespace(name="NO_DEST"), conn=None)
            dst = dests[self.next % len(dests)]
            self.next += 1
            c = SimpleNamespace(fwd=dst.fwd, daddr=dst.addr, dport=dst.port, vaddr=pkt.daddr, vport=pkt.dport)
            self.conns[k] = c
            self.out[(pkt.protocol, dst.addr, dst.port, pkt.saddr, pkt.sport)] = c
        return SimpleNamespace(action=SimpleNamespace(name="FORWARD"), conn=c)


def make_forwarder(
    fwd: Fwd, proto: Proto = Proto.TCP, rport: int = 80, mtu: int = 1500
) -> tuple[Forwarder, FakeCore]:
    d = Director()
    key = ServiceKey.for_addr(proto, ipaddress.ip_address(VIP), 80)
    d.add_service(key, ServiceConfig(scheduler="rr"))
    for ip in ("192.168.1.10", "192.168.1.20"):
        d.add_dest(key, DestConfig(addr=ipaddress.ip_address(ip), port=rport, fwd=fwd))
    core = FakeCore(d)
    core.install()
    ifaces = {
        1: Iface(1, "eth0", MAC_IN, 1500, [A(VIP)]),
        2: Iface(2, "eth1", MAC_LAN, mtu, [A("192.168.1.100")]),
    }

    def route(dst: bytes) -> Route | None:
        if dst.startswith(A("192.168.1.0")[:3]):
            return Route(2, dst, A("192.168.1.100"))
        return Route(1, dst, A(VIP))

    neigh = Neighbours(kernel_table=None)
    neigh.macs.update(MAC_RS)
    f = Forwarder(d, ifaces, route, neigh, PortPool(10000, 10010))
    f.load_rules()
    return f, core


def tcp_frame(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    payload: bytes = b"hello",
    flags: int = 0x02,
    partial: bool = False,
    to_mac: bytes = MAC_IN,
) -> bytearray:
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 65535, 0, 0)) + payload
    ip = ipv4_header(A(src), A(dst), 6, len(tcp))
    ps = pseudo_sum_v4(A(src), A(dst), 6, len(tcp))
    if partial:
        struct.pack_into("!H", tcp, 16, fold(ps))  # the seed, uncomplemented
        vnet = VNET.pack(1, 0, 0, 0, 14 + 20, 16)
    else:
        struct.pack_into("!H", tcp, 16, checksum(tcp, ps))
        vnet = bytes(10)
    return bytearray(vnet + to_mac + MAC_CLIENT + b"\x08\x00" + bytes(ip) + bytes(tcp))


def udp_frame(
    src: str, sport: int, dst: str, dport: int, payload: bytes = b"hi", zero_csum: bool = False
) -> bytearray:
    udp = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)) + payload
    if not zero_csum:
        struct.pack_into("!H", udp, 6, checksum(udp, pseudo_sum_v4(A(src), A(dst), 17, len(udp))))
    ip = ipv4_header(A(src), A(dst), 17, len(udp))
    return bytearray(bytes(10) + MAC_IN + MAC_CLIENT + b"\x08\x00" + bytes(ip) + bytes(udp))


def l4_ok(pkt: bytes | bytearray) -> bool:
    """The L4 checksum of a finished IPv4 packet verifies."""
    ihl = (pkt[0] & 0xF) * 4
    total = struct.unpack_from("!H", pkt, 2)[0]
    l4 = bytes(pkt[ihl:total])
    return fold(sum16(l4) + pseudo_sum_v4(bytes(pkt[12:16]), bytes(pkt[16:20]), pkt[9], len(l4))) == 0xFFFF


def ip_ok(pkt: bytes | bytearray) -> bool:
    return checksum(bytes(pkt[:20])) == 0


def finish_partial(frame: bytearray) -> bytearray:
    """What the kernel does to a NEEDS_CSUM frame on transmit."""
    flags, _g, _h, _s, start, off = VNET.unpack_from(frame, 0)
    assert flags & 1
    pos = 10 + start + off
    total = struct.unpack_from("!H", frame, IP + 2)[0]
    struct.pack_into("!H", frame, pos, checksum(frame[10 + start : IP + total]))
    return frame


def test_nat_request_and_reply_rewrite_with_finished_checksums() -> None:
    f, core = make_forwarder(Fwd.MASQ, rport=8080)
    out = f.handle(1, tcp_frame(CIP, 40000, VIP, 80), 1.0)
    assert len(out) == 1
    idx, fr = out[0]
    pkt = fr[IP:]
    assert idx == 2 and fr[ETH : ETH + 6] == MAC_RS[A("192.168.1.10")] and fr[ETH + 6 : ETH + 12] == MAC_LAN
    assert pkt[16:20] == A("192.168.1.10") and struct.unpack_from("!H", pkt, 22)[0] == 8080
    assert ip_ok(pkt) and l4_ok(pkt)
    reply = tcp_frame("192.168.1.10", 8080, CIP, 40000, b"answer", 0x12, to_mac=MAC_LAN)
    out = f.handle(2, reply, 1.1)
    idx, fr = out[0]
    pkt = fr[IP:]
    assert idx == 1 and fr[ETH : ETH + 6] == MAC_CLIENT
    assert pkt[12:16] == A(VIP) and struct.unpack_from("!H", pkt, 20)[0] == 80
    assert ip_ok(pkt) and l4_ok(pkt)
    assert core.outs == 1


def test_nat_checksum_partial_seed_is_adjusted_not_complemented() -> None:
    f, _ = make_forwarder(Fwd.MASQ)
    out = f.handle(1, tcp_frame(CIP, 40001, VIP, 80, partial=True), 1.0)
    fr = finish_partial(bytearray(out[0][1]))
    assert l4_ok(fr[IP:]) and ip_ok(fr[IP:])


def test_udp_zero_checksum_stays_zero_and_real_one_is_updated() -> None:
    f, _ = make_forwarder(Fwd.MASQ, Proto.UDP)
    fr = f.handle(1, udp_frame(CIP, 5000, VIP, 80, zero_csum=True), 1.0)[0][1]
    assert struct.unpack_from("!H", fr, IP + 26)[0] == 0
    fr = f.handle(1, udp_frame(CIP, 5001, VIP, 80), 1.0)[0][1]
    assert l4_ok(fr[IP:])


def test_dr_changes_only_the_macs() -> None:
    f, _ = make_forwarder(Fwd.DROUTE)
    frame = tcp_frame(CIP, 40000, VIP, 80)
    before = bytes(frame[IP:])
    idx, fr = f.handle(1, frame, 1.0)[0]
    assert fr[IP:] == before
    assert fr[ETH : ETH + 6] == MAC_RS[A("192.168.1.10")] and fr[ETH + 6 : ETH + 12] == MAC_LAN and idx == 2


def test_tunnel_wraps_finished_packet_in_ipip() -> None:
    f, _ = make_forwarder(Fwd.TUNNEL)
    _idx, fr = f.handle(1, tcp_frame(CIP, 40000, VIP, 80, partial=True), 1.0)[0]
    outer = fr[IP:]
    assert outer[9] == 4 and outer[12:16] == A("192.168.1.100") and outer[16:20] == A("192.168.1.10")
    assert ip_ok(outer)
    inner = outer[20:]
    assert inner[16:20] == A(VIP) and l4_ok(inner)
    assert VNET.unpack_from(fr, 0)[0] == 0  # nothing left for the kernel to finish


def test_tunnel_answers_oversized_df_with_frag_needed() -> None:
    f, _ = make_forwarder(Fwd.TUNNEL)
    idx, fr = f.handle(1, tcp_frame(CIP, 40000, VIP, 80, payload=bytes(1460)), 1.0)[0]
    icmp = fr[IP + 20 :]
    assert idx == 1 and fr[IP + 9] == 1 and icmp[0] == 3 and icmp[1] == 4
    assert struct.unpack_from("!H", icmp, 6)[0] == 1480
    assert fr[IP + 16 : IP + 20] == A(CIP) and checksum(bytes(icmp)) == 0


def test_tunnel_cuts_gso_frames() -> None:
    f, _ = make_forwarder(Fwd.TUNNEL)
    frame = tcp_frame(CIP, 40000, VIP, 80, payload=bytes(range(256)) * 12, partial=True)
    struct.pack_into("<BBHHHH", frame, 0, 1, 1, 54, 1000, 34, 16)
    outs = f.handle(1, frame, 1.0)
    assert len(outs) == 4  # 3072 bytes in 1000-byte segments
    seqs = []
    for _idx, fr in outs:
        inner = fr[IP + 20 :]
        assert l4_ok(inner) and ip_ok(inner) and len(inner) <= 1480
        seqs.append(struct.unpack_from("!I", inner, 24)[0])
    assert seqs == [1000, 2000, 3000, 4000]


def test_segment_keeps_fin_on_last_only() -> None:
    pkt = tcp_frame(CIP, 1, VIP, 80, payload=bytes(2500), flags=0x19)[IP:]
    segs = segment_ipv4(pkt, 1, 1000)
    assert [s[33] & 0x09 for s in segs] == [0, 0, 0x09]


def test_fullnat_allocates_and_reverses() -> None:
    f, _ = make_forwarder(Fwd.FULLNAT)
    fr = f.handle(1, tcp_frame(CIP, 40000, VIP, 80), 1.0)[0][1]
    pkt = fr[IP:]
    lport = struct.unpack_from("!H", pkt, 20)[0]
    assert pkt[12:16] == A("192.168.1.100") and 10000 <= lport <= 10010 and l4_ok(pkt)
    reply = tcp_frame("192.168.1.10", 80, "192.168.1.100", lport, b"x", 0x12, to_mac=MAC_LAN)
    idx, fr = f.handle(2, reply, 1.1)[0]
    pkt = fr[IP:]
    assert idx == 1 and pkt[12:16] == A(VIP) and pkt[16:20] == A(CIP)
    assert struct.unpack_from("!HH", pkt, 20) == (80, 40000) and l4_ok(pkt)


def test_fullnat_ports_come_back_when_connections_expire() -> None:
    f, core = make_forwarder(Fwd.FULLNAT)
    for port in range(5):
        f.handle(1, tcp_frame(CIP, 41000 + port, VIP, 80), 1.0)
    assert len(f.ports.used) == 5
    for c in core.conns.values():
        c.dead = True
    f.sweep()
    assert not f.ports.used and len(f.ports.free) == 11


def test_no_dest_sends_port_unreachable() -> None:
    f, _ = make_forwarder(Fwd.MASQ)
    for svc in f.director.services:
        for d in list(svc.dests):
            f.director.del_dest(ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(VIP), 80), d.addr, d.port)
    idx, fr = f.handle(1, tcp_frame(CIP, 40000, VIP, 80), 1.0)[0]
    assert idx == 1 and fr[IP + 20] == 3 and fr[IP + 21] == 3


def test_frames_for_other_hosts_are_ignored() -> None:
    f, _ = make_forwarder(Fwd.DROUTE)
    frame = tcp_frame(CIP, 40000, VIP, 80)
    frame[ETH : ETH + 6] = bytes.fromhex("0200000000ff")
    assert f.handle(1, frame, 1.0) == []


def test_unresolved_next_hop_waits_for_arp() -> None:
    f, _ = make_forwarder(Fwd.MASQ)
    f.neigh.macs.clear()
    out = f.handle(1, tcp_frame(CIP, 40000, VIP, 80), 1.0)
    assert len(out) == 1 and out[0][1][ETH + 12 : ETH + 14] == b"\x08\x06"
    reply = bytearray(arp_request(MAC_RS[A("192.168.1.10")], A("192.168.1.10"), A("192.168.1.100")))
    reply[IP + 7] = 2
    out = f.handle(2, reply, 1.0)
    assert len(out) == 1 and out[0][1][ETH : ETH + 6] == MAC_RS[A("192.168.1.10")]


def test_bpf_program_shape() -> None:
    prog = bpf.program([A(VIP)], [A("192.168.1.10")])
    assert prog[0] == (0x28, 0, 0, 12) and prog[-1][0] == 0x06 and prog[-2] == (0x06, 0, 0, 0)
    for pc, (code, jt, jf, _k) in enumerate(prog):
        if code == 0x15:
            assert pc + 1 + jt < len(prog) and pc + 1 + jf < len(prog)
    many = bpf.program([bytes([10, 0, i // 256, i % 256]) for i in range(400)], [])
    assert len(many) == 6


def test_nft_ruleset_is_scoped() -> None:
    spec = nft.DropSpec(vips=[(6, VIP, 80)], nat_dests=[(6, "192.168.1.10", 80)], lips=[(6, "192.168.1.100")])
    text = nft.ruleset("pylvs_1", ["eth0", "eth1"], spec, (10000, 30000))
    assert "delete table netdev pylvs_1" in text
    assert "ip saddr 192.168.1.10 tcp sport 80 fib daddr type != local drop" in text
    assert "ip daddr 192.168.1.100 tcp dport 10000-30000 drop" in text
    assert text.count("hook ingress") == 2


def test_port_pool_rejects_bad_range() -> None:
    with pytest.raises(ValueError):
        PortPool(0, 10)


def real_core_forwarder(fwd: Fwd) -> Forwarder:
    d = Director()
    key = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(VIP), 80)
    d.add_service(key, ServiceConfig(scheduler="rr"))
    d.add_dest(key, DestConfig(addr=ipaddress.ip_address("192.168.1.10"), port=80, fwd=fwd))
    f, _ = make_forwarder(fwd)
    f.director = d
    f.load_rules()
    return f


def test_steady_connections_skip_the_core_but_keep_its_counters_and_states() -> None:
    f = real_core_forwarder(Fwd.MASQ)
    rs = "192.168.1.10"
    seq = [
        (1, tcp_frame(CIP, 40000, VIP, 80, b"", 0x02)),
        (2, tcp_frame(rs, 80, CIP, 40000, b"", 0x12, to_mac=MAC_LAN)),
        (1, tcp_frame(CIP, 40000, VIP, 80, b"", 0x10)),
    ]
    for _ in range(5):  # fresh frames: handle() rewrites them in place
        seq += [
            (1, tcp_frame(CIP, 40000, VIP, 80, b"data", 0x18)),
            (2, tcp_frame(rs, 80, CIP, 40000, b"ok", 0x18, to_mac=MAC_LAN)),
        ]
    now = 1.0
    for idx, fr in seq:
        assert f.handle(idx, fr, now), "every packet is forwarded"
        now += 0.01
    assert f.counters["fast"] >= 9
    conn = next(iter(f.director.conns))
    assert conn.state_name == "ESTABLISHED" and conn.expires == pytest.approx(now - 0.01 + conn.timeout)
    st = conn.dest.stats
    assert (st.inpkts, st.outpkts) == (7, 6)
    # A FIN leaves the fast path: the core sees it and moves the state.
    f.handle(1, tcp_frame(CIP, 40000, VIP, 80, b"", 0x11), now)
    assert conn.state_name != "ESTABLISHED" and st.inpkts == 8


def icmp_frame(src: str, dst: str, quoted_pkt: bytes, icmp_type: int, code: int, to_mac: bytes) -> bytearray:
    body = bytearray(struct.pack("!BBHI", icmp_type, code, 0, 1480 if code == 4 else 0)) + quoted_pkt[:28]
    struct.pack_into("!H", body, 2, checksum(body))
    ip = ipv4_header(A(src), A(dst), 1, len(body), df=False)
    return bytearray(bytes(10) + to_mac + MAC_CLIENT + b"\x08\x00" + bytes(ip) + bytes(body))


def test_icmp_from_a_nat_server_reaches_the_client_as_from_the_vip() -> None:
    f = real_core_forwarder(Fwd.MASQ)
    sent = f.handle(1, tcp_frame(CIP, 40000, VIP, 80), 1.0)[0][1]
    err = icmp_frame("192.168.1.10", CIP, bytes(sent[IP:]), 3, 3, MAC_LAN)
    out = f.handle(2, err, 1.1)
    assert len(out) == 1 and out[0][0] == 1 and f.counters["icmp_relayed"] == 1
    pkt = out[0][1][IP:]
    assert pkt[12:16] == A(VIP) and ip_ok(pkt) and checksum(bytes(pkt[20:])) == 0
    inner = pkt[28:]
    assert (
        inner[16:20] == A(VIP)
        and struct.unpack_from("!H", inner, 22)[0] == 80
        and checksum(bytes(inner[:20])) == 0
    )


@pytest.mark.parametrize("fwd", [Fwd.DROUTE, Fwd.MASQ])
def test_frag_needed_from_the_client_side_goes_to_the_real_server(fwd: Fwd) -> None:
    f = real_core_forwarder(fwd)
    f.handle(1, tcp_frame(CIP, 40000, VIP, 80), 1.0)
    reply = tcp_frame(VIP, 80, CIP, 40000, bytes(1400), 0x10)  # a reply the client's router could not pass on
    err = icmp_frame("172.25.254.1", VIP, bytes(reply[IP:]), 3, 4, MAC_IN)
    out = f.handle(1, err, 1.1)
    assert len(out) == 1 and out[0][0] == 2
    fr = out[0][1]
    assert fr[ETH : ETH + 6] == MAC_RS[A("192.168.1.10")]
    if fwd == Fwd.MASQ:
        pkt = fr[IP:]
        assert pkt[16:20] == A("192.168.1.10") and pkt[28 + 12 : 28 + 16] == A("192.168.1.10")
        assert ip_ok(pkt) and checksum(bytes(pkt[20:])) == 0
    else:
        assert fr[IP:] == err[IP:]


def test_bpf_program_with_ipv6_jumps_stay_inside() -> None:
    prog = bpf.program([A(VIP)], [A("192.168.1.10")], ipv6=True)
    assert (0x15, len(prog) - 1 - 3, 0, 0x86DD) in prog
    for pc, (code, jt, jf, _k) in enumerate(prog):
        if code == 0x15:
            assert pc + 1 + jt < len(prog) and pc + 1 + jf < len(prog)


V6 = {"vip": "fd00:1::100", "cip": "fd00:1::10", "rs": "fd00:2::10", "lip": "fd00:2::100"}
P6 = socket.inet_pton


def tcp6_frame(
    src: str, sport: int, dst: str, dport: int, flags: int, to_mac: bytes, payload: bytes = b"hi"
) -> bytearray:
    s, d = P6(socket.AF_INET6, src), P6(socket.AF_INET6, dst)
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 65535, 0, 0)) + payload
    ps = sum16(s + d) + len(tcp) + 6
    struct.pack_into("!H", tcp, 16, checksum(tcp, ps))
    ip6 = struct.pack("!IHBB", 0x60000000, len(tcp), 6, 64) + s + d
    return bytearray(bytes(10) + to_mac + MAC_CLIENT + b"\x86\xdd" + ip6 + bytes(tcp))


def tcp6_ok(pkt: bytes | bytearray) -> bool:
    plen = struct.unpack_from("!H", pkt, 4)[0]
    l4 = bytes(pkt[40 : 40 + plen])
    return fold(sum16(l4) + sum16(bytes(pkt[8:40])) + len(l4) + 6) == 0xFFFF


@pytest.mark.parametrize("fwd", [Fwd.MASQ, Fwd.FULLNAT, Fwd.DROUTE])
def test_ipv6_nat_fullnat_dr(fwd: Fwd) -> None:
    d = Director()
    key = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(V6["vip"]), 80)
    d.add_service(key, ServiceConfig(scheduler="rr", netmask=128))
    d.add_dest(key, DestConfig(addr=ipaddress.ip_address(V6["rs"]), port=80, fwd=fwd))
    ifaces = {1: Iface(1, "eth0", MAC_IN), 2: Iface(2, "eth1", MAC_LAN)}

    def route(dst: bytes) -> Route:
        if dst.startswith(P6(socket.AF_INET6, "fd00:2::")[:4]):
            return Route(2, dst, P6(socket.AF_INET6, V6["lip"]))
        return Route(1, dst, P6(socket.AF_INET6, V6["vip"]))

    nb = Neighbours(kernel_table=None)
    f = Forwarder(d, ifaces, route, nb, PortPool(10000, 10010))
    f.load_rules()
    out = f.handle(1, tcp6_frame(V6["cip"], 40000, V6["vip"], 80, 0x02, MAC_IN), 1.0)
    # First the neighbour solicitation for the real server, then the held frame once it answers.
    assert len(out) == 1 and out[0][1][ETH + 12 : ETH + 14] == b"\x86\xdd" and out[0][1][IP + 40] == 135
    rs_mac = bytes.fromhex("0200000000a1")
    na = bytearray(tcp6_frame(V6["rs"], 0, V6["lip"], 0, 0, MAC_LAN))
    na[IP + 6] = 58
    na[IP + 40 :] = (
        struct.pack("!BBHI", 136, 0, 0, 0x60000000) + P6(socket.AF_INET6, V6["rs"]) + b"\x02\x01" + rs_mac
    )
    out = f.handle(2, na, 1.0)
    assert len(out) == 1
    fr = out[0][1]
    pkt = fr[IP:]
    assert fr[ETH : ETH + 6] == rs_mac and tcp6_ok(pkt)
    assert pkt[24:40] == P6(socket.AF_INET6, V6["rs" if fwd != Fwd.DROUTE else "vip"])
    if fwd == Fwd.DROUTE:
        return
    lport = struct.unpack_from("!H", pkt, 40)[0]
    src = V6["lip"] if fwd == Fwd.FULLNAT else V6["cip"]
    assert pkt[8:24] == P6(socket.AF_INET6, src)
    reply = tcp6_frame(V6["rs"], 80, src, lport, 0x12, MAC_LAN)
    out = f.handle(2, reply, 1.1)
    fr = out[0][1]
    pkt = fr[IP:]
    assert out[0][0] == 1 and fr[ETH : ETH + 6] == MAC_CLIENT and tcp6_ok(pkt)
    assert pkt[8:24] == P6(socket.AF_INET6, V6["vip"]) and pkt[24:40] == P6(socket.AF_INET6, V6["cip"])
    assert struct.unpack_from("!HH", pkt, 40) == (80, 40000)


def test_ipv6_no_dest_answers_icmpv6_port_unreachable() -> None:
    d = Director()
    key = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(V6["vip"]), 80)
    d.add_service(key, ServiceConfig(scheduler="rr", netmask=128))
    f = Forwarder(
        d, {1: Iface(1, "eth0", MAC_IN)}, lambda dst: None, Neighbours(kernel_table=None), PortPool()
    )
    f.load_rules()
    out = f.handle(1, tcp6_frame(V6["cip"], 40000, V6["vip"], 80, 0x02, MAC_IN), 1.0)
    assert len(out) == 1
    pkt = out[0][1][IP:]
    assert pkt[6] == 58 and pkt[40] == 1 and pkt[41] == 4 and pkt[24:40] == P6(socket.AF_INET6, V6["cip"])
    plen = struct.unpack_from("!H", pkt, 4)[0]
    assert fold(sum16(bytes(pkt[40 : 40 + plen])) + sum16(bytes(pkt[8:40])) + plen + 58) == 0xFFFF


def test_a_stray_segment_gets_the_reset_the_directors_own_stack_would_send() -> None:
    f = real_core_forwarder(Fwd.MASQ)
    stray = tcp_frame(CIP, 40000, VIP, 80, b"late", 0x18)  # ACK|PSH of a connection nobody knows
    struct.pack_into("!I", stray, IP + 28, 123456)  # its acknowledgement number
    out = f.handle(1, stray, 1.0)
    assert len(out) == 1 and f.counters["pass"] == 1
    pkt = out[0][1][IP:]
    assert pkt[9] == 6 and pkt[12:16] == A(VIP) and pkt[16:20] == A(CIP) and ip_ok(pkt) and l4_ok(pkt)
    sport, dport, seq, _ack, _off, flags = struct.unpack_from("!HHIIBB", pkt, 20)
    assert (sport, dport, seq, flags) == (80, 40000, 123456, 0x04)


@pytest.mark.parametrize("fwd", [Fwd.MASQ, Fwd.DROUTE, Fwd.FULLNAT])
@pytest.mark.parametrize("partial", [False, True])
def test_fast_path_reuses_the_way_out_it_learnt_for_a_bounded_time(fwd: Fwd, partial: bool) -> None:
    from pylvs.engines.packet.forward import HOP_TTL

    f = real_core_forwarder(fwd)
    rs = A("192.168.1.10")
    f.handle(1, tcp_frame(CIP, 40000, VIP, 80, b"", 0x02), 1.0)
    f.handle(1, tcp_frame(CIP, 40000, VIP, 80, b"", 0x10), 1.01)
    assert f.fast, "the connection is steady"

    def data(now: float) -> tuple[int, bytearray]:
        out = f.handle(1, tcp_frame(CIP, 40000, VIP, 80, b"data", 0x18, partial), now)
        assert len(out) == 1
        return out[0][0], bytearray(out[0][1])

    data(1.015)  # the first fast packet: full forwarding path, nothing learnt yet
    learnt = data(1.02)  # the full forwarding path, whose way out is then kept
    assert next(iter(f.fast.values())).hop is not None
    reused = data(1.03)
    assert reused == learnt, "the cached way out gives the same frame as the full path"
    assert reused[0] == 2 and reused[1][ETH : ETH + 6] == MAC_RS[rs]
    fr = finish_partial(bytearray(reused[1])) if partial else reused[1]
    assert ip_ok(fr[IP:]) and l4_ok(fr[IP:])
    # A neighbour change is seen once the cached way out is older than HOP_TTL.
    f.neigh.macs[rs] = bytes.fromhex("0200000000ff")
    assert data(1.02 + HOP_TTL / 2)[1][ETH : ETH + 6] == MAC_RS[rs]
    assert data(1.03 + HOP_TTL)[1][ETH : ETH + 6] == bytes.fromhex("0200000000ff")
    st = next(iter(f.director.conns)).dest.stats
    assert st.inpkts == 7 and f.counters["in"] == 7


@pytest.mark.parametrize("fwd", [Fwd.MASQ, Fwd.FULLNAT])
@pytest.mark.parametrize("partial", [False, True])
def test_fast_path_replies_with_the_way_out_learnt_match_the_full_path(fwd: Fwd, partial: bool) -> None:
    f = real_core_forwarder(fwd)
    f.handle(1, tcp_frame(CIP, 40000, VIP, 80, b"", 0x02), 1.0)
    f.handle(1, tcp_frame(CIP, 40000, VIP, 80, b"", 0x10), 1.01)
    if fwd == Fwd.FULLNAT:
        ent = next(iter(f.fn_by_client.values()))
        to, port = socket.inet_ntoa(ent.laddr), ent.lport
    else:
        to, port = CIP, 40000

    def reply(now: float) -> tuple[int, bytearray]:
        fr = tcp_frame("192.168.1.10", 80, to, port, b"answer", 0x18, partial, to_mac=MAC_LAN)
        out = f.handle(2, fr, now)
        assert len(out) == 1
        return out[0][0], bytearray(out[0][1])

    # core, fast (warming up), fast learning the way out, fast reusing it
    outs = [reply(1.02 + i / 100) for i in range(4)]
    assert outs[2] == outs[3] and outs[0][1][IP:] == outs[3][1][IP:]
    idx, fr = outs[3]
    assert idx == 1 and fr[ETH : ETH + 6] == MAC_CLIENT
    fr = finish_partial(fr) if partial else fr
    pkt = fr[IP:]
    assert ip_ok(pkt) and l4_ok(pkt)
    assert pkt[12:16] == A(VIP) and pkt[16:20] == A(CIP) and struct.unpack_from("!HH", pkt, 20) == (80, 40000)
    assert f.counters["fast"] >= 2


@pytest.mark.parametrize("partial", [False, True])
def test_tunnel_fast_path_builds_the_same_outer_header_from_its_template(partial: bool) -> None:
    f = real_core_forwarder(Fwd.TUNNEL)
    f.handle(1, tcp_frame(CIP, 40000, VIP, 80, b"", 0x02), 1.0)
    f.handle(1, tcp_frame(CIP, 40000, VIP, 80, b"", 0x10), 1.01)

    def data(now: float, payload: bytes = b"data") -> list[tuple[int, bytes | bytearray]]:
        return f.handle(1, tcp_frame(CIP, 40000, VIP, 80, payload, 0x18, partial), now)

    data(1.015)  # the first fast packet: full path, nothing learnt yet
    (learnt,) = data(1.02)  # the full path (ipv4_header), then its template
    assert next(iter(f.fast.values())).tun is not None
    (reused,) = data(1.03)
    assert reused[0] == learnt[0] == 2
    a, b = bytes(learnt[1]), bytes(reused[1])
    assert a[:IP] == b[:IP] and b[ETH : ETH + 6] == MAC_RS[A("192.168.1.10")]
    outer_a, outer_b = a[IP : IP + 20], b[IP : IP + 20]
    assert ip_ok(outer_b) and outer_b[9] == 4
    assert struct.unpack_from("!H", outer_b, 4)[0] == (struct.unpack_from("!H", outer_a, 4)[0] + 1) & 0xFFFF
    assert outer_a[:4] + outer_a[6:10] + outer_a[12:] == outer_b[:4] + outer_b[6:10] + outer_b[12:]
    assert a[IP + 20 :] == b[IP + 20 :]
    inner = b[IP + 20 :]
    assert ip_ok(inner) and l4_ok(inner)
    # Too big for the tunnel with DF: the full path answers fragmentation-needed, as before.
    (err,) = data(1.04, bytes(1470))
    assert err[0] == 1 and err[1][IP + 9] == 1 and err[1][IP + 20] == 3 and err[1][IP + 21] == 4
