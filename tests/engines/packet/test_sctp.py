"""SCTP on the packet path with synthetic frames (no root): chunk parsing for the core's state machine,
CRC32c kept right (finished, preserved when wrong, finished when CHECKSUM_PARTIAL), NAT, DR, TUN and
FULLNAT rewrites, the real core's SCTP states, and the "out of the blue" answer to a stray packet."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.director import Director
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from pylvs.engines.packet import nft, sctp
from pylvs.engines.packet.forward import Forwarder, Iface, Route
from pylvs.engines.packet.frames import ETH, IP, VNET, ipv4_header
from pylvs.engines.packet.neigh import Neighbours
from pylvs.engines.packet.ports import PortPool
from pylvs.engines.packet.rewrite import rewrite
from pylvs.lab.sctppeer import chunk, packet, parse
from tests.engines.packet.test_forward import (
    CIP,
    MAC_CLIENT,
    MAC_IN,
    MAC_LAN,
    MAC_RS,
    VIP,
    A,
    ip_ok,
    make_forwarder,
)

RS1 = "192.168.1.10"
INIT_VALUE = struct.pack("!IIHHI", 0x11223344, 65536, 1, 1, 7)


def sctp_frame(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    chunks: list[bytes],
    vtag: int = 0,
    partial: bool = False,
    good: bool = True,
    to_mac: bytes = MAC_IN,
) -> bytearray:
    pkt = packet(sport, dport, vtag, chunks, good)
    if partial:
        pkt[8:12] = bytes(4)  # an offloading sender leaves the CRC to the device
        vnet = VNET.pack(1, 0, 0, 0, 14 + 20, 8)
    else:
        vnet = bytes(10)
    ip = ipv4_header(A(src), A(dst), sctp.IPPROTO_SCTP, len(pkt))
    return bytearray(vnet + to_mac + MAC_CLIENT + b"\x08\x00" + bytes(ip) + bytes(pkt))


def sctp_of(frame: bytes | bytearray) -> bytearray:
    """The SCTP packet of a frame (IPv4, no options), cut at the IP total length."""
    total = struct.unpack_from("!H", frame, IP + 2)[0]
    return bytearray(frame[IP + 20 : IP + total])


def crc_ok(frame: bytes | bytearray) -> bool:
    pkt = sctp_of(frame)
    return sctp.checksum_ok(pkt, 0, len(pkt))


def init() -> list[bytes]:
    return [chunk(sctp.INIT, 0, INIT_VALUE)]


# -- the checksum ------------------------------------------------------------------------------------
def test_crc32c_matches_the_published_check_values() -> None:
    assert sctp.crc32c(b"123456789") == 0xE3069283
    assert sctp.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert sctp.crc32c(b"\xff" * 32) == 0x62A8AB43


def test_checksum_is_stored_little_endian_as_on_the_wire() -> None:
    # An INIT (all fixed fields zero) with one IPv4 address parameter (127.0.0.1), ports and tag 0:
    # the bytes a packet tool that is checked against Wireshark produces end the header in 40 2c 0b 5f.
    init0 = chunk(sctp.INIT, 0, bytes(16) + struct.pack("!HH4s", 5, 8, A("127.0.0.1")))
    pkt = packet(0, 0, 0, [init0])
    assert bytes(pkt[8:12]) == bytes.fromhex("402c0b5f")


def test_first_chunk_and_abort_after_cookie() -> None:
    f = sctp_frame(CIP, 5000, VIP, 80, init())
    end = IP + 20 + len(sctp_of(f))
    assert sctp.first_chunk(f, IP + 20, end) == (sctp.INIT, False)
    f = sctp_frame(CIP, 5000, VIP, 80, [chunk(sctp.COOKIE_ECHO, 0, b"abcde"), chunk(sctp.ABORT)])
    assert sctp.first_chunk(f, IP + 20, IP + 20 + len(sctp_of(f))) == (sctp.COOKIE_ECHO, True)
    f = sctp_frame(CIP, 5000, VIP, 80, [chunk(sctp.COOKIE_ACK), chunk(sctp.DATA, 3, bytes(12))])
    assert sctp.first_chunk(f, IP + 20, IP + 20 + len(sctp_of(f))) == (sctp.COOKIE_ACK, False)
    f = sctp_frame(CIP, 5000, VIP, 80, [])
    assert sctp.first_chunk(f, IP + 20, IP + 32) == (-1, False)


def test_port_rewrite_keeps_a_good_crc_good_and_a_bad_one_bad_by_the_same_error() -> None:
    for good in (True, False):
        f = sctp_frame(CIP, 5000, VIP, 80, init(), good=good)
        pkt = sctp_of(f)
        err = sctp.stored(pkt, 0) ^ sctp.compute(pkt, 0, len(pkt))
        rewrite(f, sctp.IPPROTO_SCTP, IP + 20, A("10.0.0.1"), 6000, A(RS1), 8080)
        out = sctp_of(f)
        assert struct.unpack_from("!HH", out) == (6000, 8080) and ip_ok(f[IP:])
        assert sctp.stored(out, 0) ^ sctp.compute(out, 0, len(out)) == err
        assert crc_ok(f) is good


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(min_size=4, max_size=1500),
    ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
    new=st.tuples(st.none() | st.integers(0, 65535), st.none() | st.integers(0, 65535)),
    damage=st.integers(0, 0xFFFFFFFF),
)
def test_incremental_crc_update_equals_a_full_recompute(
    body: bytes, ports: tuple[int, int], new: tuple[int | None, int | None], damage: int
) -> None:
    pkt = sctp.seal(bytearray(struct.pack("!HHI", *ports, 99) + bytes(4) + body))
    pkt[8:12] = (int.from_bytes(pkt[8:12], "little") ^ damage).to_bytes(4, "little")
    f = bytearray(bytes(IP + 20)) + pkt  # the frame's headers do not matter to the SCTP rewrite
    sctp.rewrite_ports(f, IP + 20, len(f), *new)
    out = f[IP + 20 :]
    want = (ports[0] if new[0] is None else new[0], ports[1] if new[1] is None else new[1])
    assert struct.unpack_from("!HH", out) == want
    assert sctp.stored(out, 0) == sctp.compute(out, 0, len(out)) ^ damage


def test_address_only_rewrite_leaves_the_crc_bytes_alone() -> None:
    f = sctp_frame(CIP, 5000, VIP, 80, init())
    before = bytes(sctp_of(f))
    rewrite(f, sctp.IPPROTO_SCTP, IP + 20, None, None, A(RS1), 80)
    assert bytes(sctp_of(f)) == before and f[IP + 16 : IP + 20] == A(RS1) and ip_ok(f[IP:])


def test_truncated_or_gso_sctp_frames_are_left_alone() -> None:
    fwd, _core = make_forwarder(Fwd.MASQ, Proto.SCTP)
    f = sctp_frame(CIP, 5000, VIP, 80, init())
    short = f[: IP + 20 + 8]
    struct.pack_into("!H", short, IP + 2, 28)
    assert fwd.handle(1, short, 1.0) == [] and fwd.counters["unknown"] == 1
    g = sctp_frame(CIP, 5000, VIP, 80, init())
    g[1] = 1  # claims GSO: the virtio header has no SCTP GSO type
    assert fwd.handle(1, g, 1.0) == [] and fwd.counters["unknown"] == 2


# -- each forwarding method ------------------------------------------------------------------------
@pytest.mark.parametrize("partial", [False, True])
def test_nat_rewrites_both_ways_with_port_mapping(partial: bool) -> None:
    fwd, core = make_forwarder(Fwd.MASQ, Proto.SCTP, rport=8080)
    out = fwd.handle(1, sctp_frame(CIP, 5000, VIP, 80, init(), partial=partial), 1.0)
    assert len(out) == 1
    idx, fr = out[0]
    assert idx == 2 and fr[ETH : ETH + 6] == MAC_RS[A(RS1)] and fr[ETH + 6 : ETH + 12] == MAC_LAN
    assert fr[0] & 1 == 0, "a partial CRC is finished here, never left to a device"
    pkt = fr[IP:]
    assert pkt[12:16] == A(CIP) and pkt[16:20] == A(RS1) and ip_ok(pkt) and crc_ok(fr)
    assert struct.unpack_from("!HH", pkt, 20) == (5000, 8080)
    reply = sctp_frame(
        RS1, 8080, CIP, 5000, [chunk(sctp.INIT_ACK, 0, INIT_VALUE)], 0x11223344, partial, to_mac=MAC_LAN
    )
    out = fwd.handle(2, reply, 1.1)
    assert len(out) == 1 and core.outs == 1
    idx, fr = out[0]
    pkt = fr[IP:]
    assert idx == 1 and fr[ETH : ETH + 6] == MAC_CLIENT and fr[0] & 1 == 0
    assert pkt[12:16] == A(VIP) and pkt[16:20] == A(CIP) and ip_ok(pkt) and crc_ok(fr)
    assert struct.unpack_from("!HH", pkt, 20) == (80, 5000)


@pytest.mark.parametrize("partial", [False, True])
def test_dr_changes_only_the_macs_and_finishes_a_partial_crc(partial: bool) -> None:
    fwd, _core = make_forwarder(Fwd.DROUTE, Proto.SCTP)
    f = sctp_frame(CIP, 5000, VIP, 80, init(), partial=partial)
    ip_before = bytes(f[IP : IP + 20])
    out = fwd.handle(1, f, 1.0)
    assert len(out) == 1
    fr = out[0][1]
    assert fr[ETH : ETH + 6] == MAC_RS[A(RS1)] and bytes(fr[IP : IP + 20]) == ip_before and crc_ok(fr)
    if not partial:
        assert bytes(sctp_of(fr)) == bytes(sctp_of(sctp_frame(CIP, 5000, VIP, 80, init())))


@pytest.mark.parametrize("partial", [False, True])
def test_tunnel_carries_the_sctp_packet_with_a_finished_crc(partial: bool) -> None:
    fwd, _core = make_forwarder(Fwd.TUNNEL, Proto.SCTP)
    out = fwd.handle(1, sctp_frame(CIP, 5000, VIP, 80, init(), partial=partial), 1.0)
    assert len(out) == 1
    fr = out[0][1]
    outer = fr[IP:]
    assert outer[9] == 4 and outer[16:20] == A(RS1) and ip_ok(outer)
    inner = outer[20:]
    assert inner[9] == sctp.IPPROTO_SCTP and inner[16:20] == A(VIP)
    total = struct.unpack_from("!H", inner, 2)[0]
    assert sctp.checksum_ok(inner, 20, total)


def test_fullnat_rewrites_both_sides_and_reverses_them() -> None:
    fwd, _core = make_forwarder(Fwd.FULLNAT, Proto.SCTP)
    out = fwd.handle(1, sctp_frame(CIP, 5000, VIP, 80, init()), 1.0)
    pkt = out[0][1][IP:]
    lport = struct.unpack_from("!H", pkt, 20)[0]
    assert pkt[12:16] == A("192.168.1.100") and pkt[16:20] == A(RS1) and 10000 <= lport <= 10010
    assert crc_ok(out[0][1]) and ip_ok(pkt)
    reply = sctp_frame(
        RS1, 80, "192.168.1.100", lport, [chunk(sctp.INIT_ACK, 0, INIT_VALUE)], 1, to_mac=MAC_LAN
    )
    out = fwd.handle(2, reply, 1.1)
    fr = out[0][1]
    pkt = fr[IP:]
    assert pkt[12:16] == A(VIP) and pkt[16:20] == A(CIP) and struct.unpack_from("!HH", pkt, 20) == (80, 5000)
    assert crc_ok(fr) and ip_ok(pkt)


def test_ipv6_nat_rewrite_keeps_the_crc() -> None:
    P6 = socket.inet_pton
    vip, cip, rs, lip = "fd00:1::100", "fd00:1::10", "fd00:2::10", "fd00:2::100"
    d = Director()
    key = ServiceKey.for_addr(Proto.SCTP, ipaddress.ip_address(vip), 80)
    d.add_service(key, ServiceConfig(scheduler="rr", netmask=128))
    d.add_dest(key, DestConfig(addr=ipaddress.ip_address(rs), port=9000, fwd=Fwd.MASQ))

    def route(dst: bytes) -> Route:
        if dst.startswith(P6(socket.AF_INET6, "fd00:2::")[:4]):
            return Route(2, dst, P6(socket.AF_INET6, lip))
        return Route(1, dst, P6(socket.AF_INET6, vip))

    nb = Neighbours(kernel_table=None)
    nb.macs[P6(socket.AF_INET6, rs)] = MAC_RS[A(RS1)]
    fwd = Forwarder(d, {1: Iface(1, "eth0", MAC_IN), 2: Iface(2, "eth1", MAC_LAN)}, route, nb, PortPool())
    fwd.load_rules()
    pkt = packet(5000, 80, 0, init())
    ip6 = struct.pack("!IHBB", 0x60000000, len(pkt), sctp.IPPROTO_SCTP, 64)
    ip6 += P6(socket.AF_INET6, cip) + P6(socket.AF_INET6, vip)
    f = bytearray(bytes(10) + MAC_IN + MAC_CLIENT + b"\x86\xdd" + ip6 + bytes(pkt))
    out = fwd.handle(1, f, 1.0)
    assert len(out) == 1
    fr = out[0][1]
    assert fr[IP + 24 : IP + 40] == P6(socket.AF_INET6, rs)
    s = fr[IP + 40 :]
    assert struct.unpack_from("!HH", s) == (5000, 9000) and sctp.checksum_ok(s, 0, len(s))
    conn = next(iter(d.conns))
    assert conn.state_name == "INIT1"


# -- the real core: states, and what it says PASS to ------------------------------------------------
def real_core(fwd_method: Fwd) -> tuple[Forwarder, Director]:
    d = Director()
    key = ServiceKey.for_addr(Proto.SCTP, ipaddress.ip_address(VIP), 80)
    d.add_service(key, ServiceConfig(scheduler="rr"))
    d.add_dest(key, DestConfig(addr=ipaddress.ip_address(RS1), port=80, fwd=fwd_method))
    f, _ = make_forwarder(fwd_method, Proto.SCTP)
    f.director = d
    f.conn_table = d.conns
    f.load_rules()
    return f, d


def test_a_nat_association_walks_the_cores_sctp_states() -> None:
    f, d = real_core(Fwd.MASQ)
    ctag, stag = 0x11223344, 0x55667788

    def c2s(chunks: list[bytes], tag: int) -> None:
        assert f.handle(1, sctp_frame(CIP, 5000, VIP, 80, chunks, tag), now()), "forwarded"

    def s2c(chunks: list[bytes], tag: int) -> None:
        assert f.handle(2, sctp_frame(RS1, 80, CIP, 5000, chunks, tag, to_mac=MAC_LAN), now()), "forwarded"

    t = [1.0]

    def now() -> float:
        t[0] += 0.01
        return t[0]

    steps = [
        (c2s, [chunk(sctp.INIT, 0, INIT_VALUE)], 0, "INIT1"),
        (s2c, [chunk(sctp.INIT_ACK, 0, INIT_VALUE)], ctag, "C-SENT"),
        (c2s, [chunk(sctp.COOKIE_ECHO, 0, b"cookie")], stag, "C-REPLIED"),
        (s2c, [chunk(sctp.COOKIE_ACK)], ctag, "ESTABLISHED"),
        (c2s, [chunk(sctp.DATA, 3, bytes(12) + b"hi")], stag, "ESTABLISHED"),
        (s2c, [chunk(sctp.SACK, 0, bytes(12)), chunk(sctp.DATA, 3, bytes(12))], ctag, "ESTABLISHED"),
        (c2s, [chunk(sctp.SHUTDOWN, 0, bytes(4))], stag, "S-RECEIVED"),
        (s2c, [chunk(sctp.SHUTDOWN_ACK)], ctag, "S-ACK-SENT"),
        (c2s, [chunk(sctp.SHUTDOWN_COMPLETE)], stag, "CLOSED"),
    ]
    conn = None
    for send, chunks, tag, state in steps:
        send(chunks, tag)
        conn = conn or next(iter(d.conns))
        assert conn.state_name == state, (chunks[0][0], conn.state_name)
        if state == "ESTABLISHED":
            assert conn.dest.activeconns == 1
    assert conn is not None and conn.dest.activeconns == 0
    st = conn.dest.stats
    assert (st.inpkts, st.outpkts) == (5, 4)


@pytest.mark.parametrize("fwd_method", [Fwd.DROUTE, Fwd.TUNNEL])
def test_dr_and_tun_associations_use_the_input_only_table(fwd_method: Fwd) -> None:
    f, d = real_core(fwd_method)
    seq = [
        ([chunk(sctp.INIT, 0, INIT_VALUE)], "INIT1"),
        ([chunk(sctp.COOKIE_ECHO, 0, b"cookie")], "ESTABLISHED"),
        ([chunk(sctp.DATA, 3, bytes(12))], "ESTABLISHED"),
        ([chunk(sctp.SHUTDOWN, 0, bytes(4))], "S-RECEIVED"),
        ([chunk(sctp.SHUTDOWN_COMPLETE)], "CLOSED"),
    ]
    for i, (chunks, state) in enumerate(seq):
        assert f.handle(1, sctp_frame(CIP, 5000, VIP, 80, chunks, 1), 1.0 + i / 10)
        assert next(iter(d.conns)).state_name == state


def test_cookie_echo_bundled_with_abort_counts_as_abort() -> None:
    f, d = real_core(Fwd.MASQ)
    f.handle(1, sctp_frame(CIP, 5000, VIP, 80, init()), 1.0)
    f.handle(1, sctp_frame(CIP, 5000, VIP, 80, [chunk(sctp.COOKIE_ECHO, 0, b"c"), chunk(sctp.ABORT)], 1), 1.1)
    assert next(iter(d.conns)).state_name == "CLOSED"


def test_a_stray_packet_gets_the_out_of_the_blue_abort() -> None:
    f, d = real_core(Fwd.MASQ)
    stray = sctp_frame(CIP, 5000, VIP, 80, [chunk(sctp.DATA, 3, bytes(12) + b"late")], 0xCAFE)
    out = f.handle(1, stray, 1.0)
    assert len(out) == 1 and f.counters["pass"] == 1 and not list(d.conns)
    fr = out[0][1]
    pkt = fr[IP:]
    assert pkt[9] == sctp.IPPROTO_SCTP and pkt[12:16] == A(VIP) and pkt[16:20] == A(CIP) and ip_ok(pkt)
    sport, dport, vtag, chunks = parse(sctp_of(fr))
    assert (sport, dport, vtag) == (80, 5000, 0xCAFE) and crc_ok(fr)
    assert chunks == [(sctp.ABORT, sctp.T_BIT, b"")]
    # an ABORT or SHUTDOWN_COMPLETE nobody knows is not answered; a SHUTDOWN_ACK gets SHUTDOWN_COMPLETE
    assert f.handle(1, sctp_frame(CIP, 5000, VIP, 80, [chunk(sctp.ABORT)], 1), 1.1) == []
    assert f.handle(1, sctp_frame(CIP, 5000, VIP, 80, [chunk(sctp.SHUTDOWN_COMPLETE)], 1), 1.2) == []
    assert f.handle(1, sctp_frame(CIP, 5000, VIP, 80, [chunk(sctp.COOKIE_ECHO, 0, b"c")], 1), 1.2) == []
    out = f.handle(1, sctp_frame(CIP, 5000, VIP, 80, [chunk(sctp.SHUTDOWN_ACK)], 7), 1.3)
    assert parse(sctp_of(out[0][1]))[2:] == (7, [(sctp.SHUTDOWN_COMPLETE, sctp.T_BIT, b"")])


def test_an_init_to_a_service_without_servers_gets_port_unreachable() -> None:
    f, d = real_core(Fwd.MASQ)
    key = ServiceKey.for_addr(Proto.SCTP, ipaddress.ip_address(VIP), 80)
    d.del_dest(key, ipaddress.ip_address(RS1), 80)
    out = f.handle(1, sctp_frame(CIP, 5000, VIP, 80, init()), 1.0)
    assert len(out) == 1 and out[0][1][IP + 9] == 1 and out[0][1][IP + 20 : IP + 22] == b"\x03\x03"


def test_nft_drops_sctp_service_traffic_scoped_like_tcp() -> None:
    spec = nft.DropSpec(vips=[(132, VIP, 80)], nat_dests=[(132, RS1, 80)], lips=[(132, "192.168.1.100")])
    text = nft.ruleset("pylvs_1", ["eth0"], spec, (10000, 30000))
    assert f"ip daddr {VIP} sctp dport 80 drop" in text
    assert f"ip saddr {RS1} sctp sport 80 fib daddr type != local drop" in text
    assert "ip daddr 192.168.1.100 sctp dport 10000-30000 drop" in text


def test_fwmark_service_takes_sctp_from_nfqueue_and_rewrites_the_replies() -> None:
    d = Director()
    key = ServiceKey.for_fwmark(66)
    d.add_service(key, ServiceConfig(scheduler="rr"))
    d.add_dest(key, DestConfig(addr=ipaddress.ip_address(RS1), port=0, fwd=Fwd.MASQ))
    f, _ = make_forwarder(Fwd.MASQ, Proto.SCTP)
    f.director = d
    f.conn_table = d.conns
    f.load_rules()
    payload = bytes(sctp_frame(CIP, 5000, VIP, 80, init())[IP:])
    out, keep = f.handle_marked(1, MAC_CLIENT, payload, 66, 1.0)
    assert not keep and len(out) == 1
    fr = out[0][1]
    assert fr[IP + 16 : IP + 20] == A(RS1) and crc_ok(fr)
    conn = next(iter(d.conns))
    assert conn.state_name == "INIT1"
    reply = sctp_frame(RS1, 80, CIP, 5000, [chunk(sctp.INIT_ACK, 0, INIT_VALUE)], 1, to_mac=MAC_LAN)
    out = f.handle(2, reply, 1.1)
    assert len(out) == 1 and out[0][1][IP + 12 : IP + 16] == A(VIP) and crc_ok(out[0][1])
    assert conn.state_name == "C-SENT"


def test_moving_chunks_are_the_ones_the_core_does_not_take_as_data() -> None:
    from pylvs.core.proto import sctp as core_sctp

    assert sctp.MOVING_CHUNKS == set(core_sctp._EVENT_OF_CHUNK)


@pytest.mark.parametrize("fwd_method", [Fwd.MASQ, Fwd.DROUTE, Fwd.TUNNEL, Fwd.FULLNAT])
def test_established_associations_take_the_fast_path_with_the_cores_counters_and_states(
    fwd_method: Fwd,
) -> None:
    d = Director()
    key = ServiceKey.for_addr(Proto.SCTP, ipaddress.ip_address(VIP), 80)
    d.add_service(key, ServiceConfig(scheduler="rr"))
    d.add_dest(key, DestConfig(addr=ipaddress.ip_address(RS1), port=8080, fwd=fwd_method))
    f, _ = make_forwarder(fwd_method, Proto.SCTP, rport=8080)
    f.director = d
    f.conn_table = d.conns
    f.load_rules()
    t = [1.0]
    lport = [0]

    def c2s(chunks: list[bytes]) -> bytearray:
        t[0] += 0.01
        out = f.handle(1, sctp_frame(CIP, 5000, VIP, 80, chunks, 1), t[0])
        assert len(out) == 1
        fr = bytearray(out[0][1])
        if fwd_method == Fwd.TUNNEL:
            fr = fr[:IP] + fr[IP + 20 :]  # the inner packet
        if fwd_method == Fwd.FULLNAT:
            lport[0] = struct.unpack_from("!H", fr, IP + 20)[0]
        assert crc_ok(fr) and ip_ok(fr[IP:])
        return fr

    def s2c(chunks: list[bytes]) -> None:
        if fwd_method in (Fwd.DROUTE, Fwd.TUNNEL):
            return  # their replies bypass the director
        t[0] += 0.01
        dst, dport = ("192.168.1.100", lport[0]) if fwd_method == Fwd.FULLNAT else (CIP, 5000)
        out = f.handle(2, sctp_frame(RS1, 8080, dst, dport, chunks, 1, to_mac=MAC_LAN), t[0])
        assert len(out) == 1 and crc_ok(out[0][1])
        assert struct.unpack_from("!HH", out[0][1], IP + 20) == (80, 5000)

    c2s([chunk(sctp.INIT, 0, INIT_VALUE)])
    s2c([chunk(sctp.INIT_ACK, 0, INIT_VALUE)])
    c2s([chunk(sctp.COOKIE_ECHO, 0, b"cookie")])
    s2c([chunk(sctp.COOKIE_ACK)])
    conn = next(iter(d.conns))
    assert conn.state_name == "ESTABLISHED"
    for i in range(5):
        fr = c2s([chunk(sctp.DATA, 3, bytes(12) + b"data %d" % i)])
        if fwd_method in (Fwd.MASQ, Fwd.FULLNAT):
            assert struct.unpack_from("!H", fr, IP + 22)[0] == 8080
        s2c([chunk(sctp.SACK, 0, bytes(12)), chunk(sctp.DATA, 3, bytes(12) + b"ok")])
    assert f.counters["fast"] >= 5
    st = conn.dest.stats
    replies = 0 if fwd_method in (Fwd.DROUTE, Fwd.TUNNEL) else 7
    assert (st.inpkts, st.outpkts) == (7, replies)
    assert conn.expires == pytest.approx(t[0] + conn.timeout)
    # a SHUTDOWN leaves the fast path: the core sees it and moves the state
    c2s([chunk(sctp.SHUTDOWN, 0, bytes(4))])
    assert conn.state_name == "S-RECEIVED" and st.inpkts == 8


def test_icmp_errors_about_sctp_are_relayed_like_tcp() -> None:
    from tests.engines.packet.test_forward import icmp_frame

    f, _d = real_core(Fwd.MASQ)
    sent = f.handle(1, sctp_frame(CIP, 5000, VIP, 80, init()), 1.0)[0][1]
    err = icmp_frame(RS1, CIP, bytes(sent[IP:]), 3, 3, MAC_LAN)
    out = f.handle(2, err, 1.1)
    assert len(out) == 1 and out[0][0] == 1 and f.counters["icmp_relayed"] == 1
    pkt = out[0][1][IP:]
    assert pkt[12:16] == A(VIP) and ip_ok(pkt)
    inner = pkt[28:]
    assert inner[9] == sctp.IPPROTO_SCTP and inner[16:20] == A(VIP)
    assert struct.unpack_from("!HH", inner, 20) == (5000, 80)
