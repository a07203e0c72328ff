"""The TUN fast path's two eBPF programs (engines/packet/tunoffload.py), run by the kernel on frames
built here (BPF_PROG_TEST_RUN, no device): the tc program puts exactly the steady segments of flows
in the map into IP-in-IP, with the element's headers, a right outer checksum and its counters moved;
the packet sockets' filter refuses exactly those and keeps the classic prefilter's choice for the
rest. The lab test (test_fastpath_labs.py) shows it on real traffic."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import struct
import subprocess
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.cbpf import ACCEPT
from pylvs.engines.packet import tunoffload
from pylvs.engines.packet.frames import NO_VNET
from pylvs.engines.packet.tunoffload import COUNTS, TC_PRIO, TunOffload, flow_key
from pylvs.netlink import ebpf

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for bpf()")

CLIENT, VIP = socket.inet_aton("172.25.254.10"), socket.inet_aton("192.168.1.220")
DIRECTOR, RS = socket.inet_aton("192.168.1.200"), socket.inet_aton("192.168.1.10")
OUR_MAC, CLIENT_MAC, RS_MAC = (
    bytes.fromhex("020000000001"),
    bytes.fromhex("020000000002"),
    bytes.fromhex("020000000003"),
)
FLOW = (6, CLIENT, 40000, VIP, 80)


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s ^ 0xFFFF


def ipv4(
    src: bytes, dst: bytes, proto: int, payload_len: int, tos: int = 0, frag: int = 0x4000, ttl: int = 63
) -> bytes:
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + payload_len, 7, frag, ttl, proto, 0, src, dst))
    struct.pack_into("!H", h, 10, csum(bytes(h)))
    return bytes(h)


def tcp_frame(flags: int = 0x10, payload: bytes = b"x" * 100, frag: int = 0x4000, tos: int = 0x10) -> bytes:
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 80, 1, 1, 5 << 4, flags, 65535, 0, 0)) + payload
    pseudo = CLIENT + VIP + struct.pack("!BBH", 0, 6, len(tcp))
    struct.pack_into("!H", tcp, 16, csum(pseudo + bytes(tcp)))
    return OUR_MAC + CLIENT_MAC + b"\x08\x00" + ipv4(CLIENT, VIP, 6, len(tcp), tos, frag) + bytes(tcp)


def entry(limit: int = 1480, ifindex: int = 7) -> Any:
    """What the Forwarder learnt for the flow: its outer header template and way out."""
    tmpl = NO_VNET + RS_MAC + OUR_MAC + b"\x08\x00" + ipv4(DIRECTOR, RS, 4, 0, ttl=64)
    st = SimpleNamespace(inpkts=0, inbytes=0)
    return SimpleNamespace(
        tun=(tmpl, 0, limit), hop=(ifindex, RS_MAC + OUR_MAC), stats=(st,), conn=object(), raddr=RS
    )


@pytest.fixture
def off() -> Any:
    t = TunOffload(max_flows=64)
    t.set_prefilter([VIP], [RS], ipv6=False)
    yield t
    t.close()


def run_tc(t: TunOffload, frame: bytes) -> ebpf.ProgramRun:
    return ebpf.run_program(t.tc_fd, frame)


def run_filter(t: TunOffload, frame: bytes) -> int:
    # A socket filter's test run starts after a link header it takes off first (eth_type_trans),
    # while a packet socket's filter sees the frame from its Ethernet header: hence the 14 bytes.
    return ebpf.run_program(t.sock_fd, bytes(12) + b"\x08\x00" + frame).retval


def test_a_steady_segment_goes_out_in_ipip_with_the_element_headers(off: Any) -> None:
    fe = entry()
    assert off.add(FLOW, fe)
    frame = tcp_frame()
    run = run_tc(off, frame)
    assert run.retval == ebpf.TC_ACT_REDIRECT
    out = run.data
    assert out[:14] == RS_MAC + OUR_MAC + b"\x08\x00"
    outer, inner = out[14:34], out[34:]
    assert inner == frame[14:]  # the inner packet untouched
    ver, tos, tot, _id, frag, ttl, proto, _ck, src, dst = struct.unpack("!BBHHHBBH4s4s", outer)
    assert (ver, tos, tot, frag, ttl, proto, src, dst) == (
        0x45,
        0x10,
        len(inner) + 20,
        0x4000,
        64,
        4,
        DIRECTOR,
        RS,
    )
    assert csum(outer) == 0  # the outer checksum is right
    pk, by = COUNTS.unpack_from(off.flows.lookup(flow_key(FLOW)) or b"")
    assert (pk, by) == (1, len(inner))
    # ... and the packet sockets do not see it (the kernel sent it)
    assert run_filter(off, frame) == 0


@pytest.mark.parametrize(
    "what,frame",
    [
        ("SYN", tcp_frame(flags=0x02)),
        ("FIN", tcp_frame(flags=0x11)),
        ("RST", tcp_frame(flags=0x14)),
        ("no DF", tcp_frame(frag=0)),
        ("a fragment", tcp_frame(frag=0x2000)),
        ("too big for the tunnel", tcp_frame(payload=b"y" * 1450)),
    ],
)
def test_what_changes_state_or_needs_python_stays_with_python(off: Any, what: str, frame: bytes) -> None:
    assert off.add(FLOW, entry(limit=1480))
    assert run_tc(off, frame).retval == ebpf.TC_ACT_OK, what
    assert run_filter(off, frame) == ACCEPT, what
    assert COUNTS.unpack_from(off.flows.lookup(flow_key(FLOW)) or b"") == (0, 0)


def test_flows_not_in_the_map_and_the_prefilter(off: Any) -> None:
    frame = tcp_frame()
    assert run_tc(off, frame).retval == ebpf.TC_ACT_OK
    assert run_filter(off, frame) == ACCEPT  # a virtual address: Python forwards it
    other = bytearray(frame)
    other[30:34] = socket.inet_aton("10.9.9.9")
    assert run_filter(off, bytes(other)) == 0  # not ours at all
    reply = bytearray(frame)
    reply[26:30] = RS  # from a NAT real server
    reply[30:34] = socket.inet_aton("10.9.9.9")
    assert run_filter(off, bytes(reply)) == ACCEPT
    arp = OUR_MAC + CLIENT_MAC + b"\x08\x06" + bytes(28)
    assert run_filter(off, arp) == ACCEPT
    ip6 = OUR_MAC + CLIENT_MAC + b"\x86\xdd" + bytes(40)
    assert run_filter(off, ip6) == 0
    off.set_prefilter([VIP], [RS], ipv6=True)
    assert run_filter(off, ip6) == ACCEPT


def test_counts_reach_the_core_and_elements_go_with_their_connection(off: Any) -> None:
    fe = entry()
    assert off.add(FLOW, fe)
    for _ in range(3):
        run_tc(off, tcp_frame())
    armed: list[float] = []
    alive = {"yes": True}
    off.sync(5.0, lambda _c, now: armed.append(now), lambda _c: alive["yes"], lambda _r: (7, RS_MAC))
    assert (fe.stats[0].inpkts, fe.stats[0].inbytes) == (3, 3 * 140) and armed == [5.0]
    assert off.stats()["kernel_pkts"] == 3
    # the way out to the server changed: the element goes, the Forwarder learns it again
    off.sync(6.0, None, lambda _c: True, lambda _r: (8, RS_MAC))
    assert off.flows.lookup(flow_key(FLOW)) is None and fe.tun is None
    fe = entry()
    assert off.add(FLOW, fe)
    run_tc(off, tcp_frame())
    off.remove(FLOW)  # the core saw a FIN: the last count is taken, the element goes
    assert fe.stats[0].inpkts == 1 and off.flows.lookup(flow_key(FLOW)) is None
    assert run_tc(off, tcp_frame()).retval == ebpf.TC_ACT_OK
    # a connection the core expired
    fe = entry()
    assert off.add(FLOW, fe)
    alive["yes"] = False
    off.sync(7.0, None, lambda _c: alive["yes"], lambda _r: (7, RS_MAC))
    assert off.flows.lookup(flow_key(FLOW)) is None and not off.values


def _tc_filters(dev: str) -> str:
    return subprocess.run(
        ["tc", "filter", "show", "dev", dev, "ingress"], capture_output=True, text=True, check=False
    ).stdout


@pytest.mark.skipif(shutil.which("tc") is None, reason="needs tc")
def test_a_filter_left_by_a_crashed_run_is_replaced_and_removed_on_close() -> None:
    """A link of our own (a veth pair, never up, no traffic) stands for a director's device."""
    dev = "plv" + secrets.token_hex(4)
    subprocess.run(["ip", "link", "add", dev, "type", "veth", "peer", "name", dev + "p"], check=True)
    try:
        ifindex = socket.if_nametoindex(dev)
        t = TunOffload(max_flows=16)
        try:
            stale = ebpf.TcIngress(ifindex, t.tc_fd, "stale", prio=TC_PRIO)  # never closed: "crashed"
            assert "stale" in _tc_filters(dev)
            t.attach_device(ifindex)
            assert "pylvs_tun" in _tc_filters(dev) and "stale" not in _tc_filters(dev)
        finally:
            t.close()
        assert "pylvs_tun" not in _tc_filters(dev) and "bpf" not in _tc_filters(dev)
        del stale
    finally:
        subprocess.run(["ip", "link", "del", dev], check=False)


def _gso_ctx(gso_size: int) -> bytes:
    ctx = bytearray(192)  # struct __sk_buff
    struct.pack_into("=I", ctx, ebpf.SKB_GSO_SIZE, gso_size)
    struct.pack_into("=I", ctx, ebpf.SKB_GSO_SEGS, 3)
    return bytes(ctx)


def test_a_gso_frame_goes_to_the_kernel_when_its_segments_fit_the_tunnel(off: Any) -> None:
    """adjust_room takes the outer header off each segment's payload (gso_size - 20), so a GSO
    frame fits when its segments' payload and headers do: gso_size + TCP header <= the limit."""
    assert off.add(FLOW, entry(limit=1480))
    frame = tcp_frame(payload=b"z" * 2900)
    linked = bytes(12) + b"\x08\x00" + frame
    # 1460 + 20 fits: the filter leaves it to the kernel, the tc program takes it (a test run's
    # frame has no GSO type, so its adjust_room fails: TC_ACT_SHOT, after the count)
    assert ebpf.run_program(off.sock_fd, linked, ctx=_gso_ctx(1460)).retval == 0
    assert ebpf.run_program(off.tc_fd, frame, ctx=_gso_ctx(1460)).retval == ebpf.TC_ACT_SHOT
    assert COUNTS.unpack_from(off.flows.lookup(flow_key(FLOW)) or b"") == (1, len(frame) - 14)
    # 1461 + 20 does not: Python cuts it (and answers with ICMP where it must)
    assert ebpf.run_program(off.sock_fd, linked, ctx=_gso_ctx(1461)).retval == ACCEPT
    assert ebpf.run_program(off.tc_fd, frame, ctx=_gso_ctx(1461)).retval == ebpf.TC_ACT_OK


def test_the_prefilter_takes_thousands_of_addresses(off: Any) -> None:
    """A restore of many services: the address maps grow as needed (the classic prefilter fell back
    to taking every IP frame beyond ~240 addresses)."""
    many = [struct.pack("!I", 0x0A000000 + i) for i in range(6000)]
    off.set_prefilter(many, [RS], ipv6=False)
    frame = bytearray(tcp_frame())
    frame[30:34] = many[5999]
    assert run_filter(off, bytes(frame)) == ACCEPT
    off.set_prefilter(many[:10], [RS], ipv6=False)
    assert run_filter(off, bytes(frame)) == 0 and len(off.dsts.keys()) == 10


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flags=st.sampled_from([0x10, 0x18, 0x02, 0x12, 0x11, 0x14, 0x04, 0x01, 0x00]),
    frag=st.sampled_from([0x4000, 0x0000, 0x2000, 0x4001, 0x6000]),
    payload=st.integers(0, 3000),
    gso=st.sampled_from([0, 536, 1400, 1440, 1460, 1461, 9000]),
    in_map=st.booleans(),
    limit=st.sampled_from([1480, 1400, 9000]),
    ihl_options=st.booleans(),
)
def test_the_filter_and_the_tc_program_always_agree(
    off: Any, flags: int, frag: int, payload: int, gso: int, in_map: bool, limit: int, ihl_options: bool
) -> None:
    """Whatever the frame: Python's socket refuses it exactly when the tc program takes it, so no
    frame is forwarded twice and none is lost."""
    off.clear()
    if in_map:
        assert off.add(FLOW, entry(limit=limit))
    frame = bytearray(tcp_frame(flags=flags, frag=frag, payload=b"p" * payload))
    if ihl_options:  # an IP header with options: 0x46 and 4 bytes of NOPs
        frame[14] = 0x46
        frame[34:34] = b"\x01\x01\x01\x01"
        struct.pack_into("!H", frame, 16, len(frame) - 14)
    ctx = _gso_ctx(gso) if gso else None
    taken = ebpf.run_program(off.tc_fd, bytes(frame), ctx=ctx).retval != ebpf.TC_ACT_OK
    seen = ebpf.run_program(off.sock_fd, bytes(12) + b"\x08\x00" + bytes(frame), ctx=ctx).retval == ACCEPT
    assert taken != seen, (taken, seen)


@pytest.mark.skipif(shutil.which("tc") is None, reason="needs tc")
def test_a_restarted_engine_finds_the_flow_map_a_killed_one_left() -> None:
    """The killed process's tc filter still holds its program, which holds the flow map: the next
    process finds the map through the filter on its device, reads the flows to adopt them, and its
    own programs go on with that map (the lab test kills pylvsd during a TUN download)."""
    dev = "plv" + secrets.token_hex(4)
    subprocess.run(["ip", "link", "add", dev, "type", "veth", "peer", "name", dev + "p"], check=True)
    try:
        ifindex = socket.if_nametoindex(dev)
        first = TunOffload(max_flows=16)
        first.attach_device(ifindex)
        assert first.add(FLOW, entry(ifindex=ifindex))
        first.hooks.clear()  # "killed": its descriptors go, its filter stays
        first.close()
        assert tunoffload.previous_flows(["lo"]) is None
        prev = tunoffload.previous_flows([dev])
        assert prev is not None
        second = TunOffload(flows=prev)
        try:
            (key, flow, oidx, eth, outer, limit), *rest = second.adoptable()
            assert not rest and flow == FLOW and key == flow_key(FLOW) and oidx == ifindex
            assert eth == RS_MAC + OUR_MAC + b"\x08\x00" and outer[12:20] == DIRECTOR + RS and limit == 1480
            fe = entry(ifindex=ifindex)
            second.take(key, fe)
            second.attach_device(ifindex)  # replaces the old filter, same map
            assert ebpf.run_program(second.tc_fd, tcp_frame()).retval == ebpf.TC_ACT_REDIRECT
            second.sync(1.0, None, lambda _c: True, lambda _r: (ifindex, RS_MAC))
            assert fe.stats[0].inpkts == 1  # counted from the adoption on, not before
        finally:
            second.close()
        assert "bpf" not in _tc_filters(dev)
    finally:
        subprocess.run(["ip", "link", "del", dev], check=False)
