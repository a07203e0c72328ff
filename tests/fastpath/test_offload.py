"""The packet engine's kernel fast path (engines/packet/offload.py): its two eBPF programs run by the
kernel on frames built here (BPF_PROG_TEST_RUN, no device), and the core kept in step with them.

- NAT, FULLNAT and DR elements rewrite exactly as the Forwarder does (checksums right), TUN
  elements encapsulate; a client's SYN and what does not fit a tunnel stay with Python, and the
  packet sockets' filter refuses exactly what the tc program takes.
- The program steps each connection's state with the core's own table and reports each change:
  fed back to the core, they take it exactly where the packets themselves would have (a property
  test over random packet sequences, against a second core that saw every packet).
- Counters, closed connections, a crashed run's filter, and a killed run's maps (adoption).
The lab tests (test_fastpath_labs.py, tests/lab) show it on real traffic."""

from __future__ import annotations

import ipaddress
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
from pylvs.core.director import Director
from pylvs.core.proto import tcp as coretcp
from pylvs.core.types import DestConfig, Fwd, Packet, Proto, ServiceConfig, ServiceKey, SvcFlags
from pylvs.engines.packet import coreapi, offload
from pylvs.engines.packet.offload import (
    DIR_IN,
    DIR_OUT,
    EVENT,
    TC_PRIO,
    ConnOffload,
    flow_key,
    rewrite_value,
    tunnel_value,
)
from pylvs.engines.packet.ports import PortPool
from pylvs.netlink import ebpf
from tests.support import inet_checksum as csum

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for bpf()")

CLIENT, VIP = socket.inet_aton("172.25.254.10"), socket.inet_aton("192.168.1.220")
DIRECTOR, RS, LIP = (
    socket.inet_aton("192.168.1.200"),
    socket.inet_aton("192.168.1.10"),
    socket.inet_aton("192.168.1.100"),
)
OUR_MAC, CLIENT_MAC, RS_MAC = (
    bytes.fromhex("020000000001"),
    bytes.fromhex("020000000002"),
    bytes.fromhex("020000000003"),
)
FLOW = (6, CLIENT, 40000, VIP, 80)
REPLY = (6, RS, 8080, CLIENT, 40000)


def ipv4(
    src: bytes, dst: bytes, proto: int, payload_len: int, tos: int = 0, frag: int = 0x4000, ttl: int = 63
) -> bytes:
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + payload_len, 7, frag, ttl, proto, 0, src, dst))
    struct.pack_into("!H", h, 10, csum(bytes(h)))
    return bytes(h)


def tcp_frame(
    flags: int = 0x10,
    payload: bytes = b"x" * 100,
    frag: int = 0x4000,
    tos: int = 0x10,
    src: tuple[bytes, int] = (CLIENT, 40000),
    dst: tuple[bytes, int] = (VIP, 80),
) -> bytes:
    tcp = bytearray(struct.pack("!HHIIBBHHH", src[1], dst[1], 1, 1, 5 << 4, flags, 65535, 0, 0)) + payload
    pseudo = src[0] + dst[0] + struct.pack("!BBH", 0, 6, len(tcp))
    struct.pack_into("!H", tcp, 16, csum(pseudo + bytes(tcp)))
    return OUR_MAC + CLIENT_MAC + b"\x08\x00" + ipv4(src[0], dst[0], 6, len(tcp), tos, frag) + bytes(tcp)


def tcp_ok(frame: bytes) -> bool:
    """The frame's IPv4 header and TCP checksums are both right."""
    ip = frame[14:34]
    tcp = frame[34:]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    return csum(ip) == 0 and csum(pseudo + tcp) == 0


def fake_conn(state: int = coretcp.ESTABLISHED) -> Any:
    return SimpleNamespace(state=state, dead=False, dest=SimpleNamespace(available=True))


def stats() -> tuple[Any, ...]:
    return (SimpleNamespace(inpkts=0, inbytes=0, outpkts=0, outbytes=0),)


def tun_element(limit: int = 1480, ifindex: int = 7) -> tuple[Any, int, bytes]:
    eth = RS_MAC + OUR_MAC + b"\x08\x00"
    return (FLOW, DIR_IN, tunnel_value(ifindex, eth, ipv4(DIRECTOR, RS, 4, 0, ttl=64), limit, 2))


def nat_elements(fullnat: bool = False) -> list[tuple[Any, int, bytes]]:
    src: tuple[bytes, int] = (LIP, 61000) if fullnat else (CLIENT, 40000)
    fwd = rewrite_value(7, RS_MAC + OUR_MAC, src[0], RS, src[1], 8080, DIR_IN, 0)
    back = rewrite_value(3, CLIENT_MAC + OUR_MAC, VIP, CLIENT, 80, 40000, DIR_OUT, 1)
    return [(FLOW, DIR_IN, fwd), ((6, RS, 8080, src[0], src[1]), DIR_OUT, back)]


@pytest.fixture
def off() -> Any:
    t = ConnOffload(Director(), max_flows=64)
    t.set_prefilter([VIP, LIP], [RS], ipv6=False)
    yield t
    t.close()


def run_tc(t: ConnOffload, frame: bytes, ctx: bytes | None = None) -> ebpf.ProgramRun:
    return ebpf.run_program(t.tc_fd, frame, ctx=ctx)


def run_filter(t: ConnOffload, frame: bytes, ctx: bytes | None = None) -> int:
    # A socket filter's test run starts after a link header it takes off first (eth_type_trans),
    # while a packet socket's filter sees the frame from its Ethernet header: hence the 14 bytes.
    return ebpf.run_program(t.sock_fd, bytes(12) + b"\x08\x00" + frame, ctx=ctx).retval


def counts(t: ConnOffload, flow: Any) -> tuple[int, int]:
    """What the kernel counted for the flow (its connection's slot, the flow's direction)."""
    rec = t.by_flow.get(flow)
    if rec is None:
        return 0, 0
    return t.counts(rec.slot, rec.dirs[rec.keys.index(flow_key(flow))])


# -- rewriting and encapsulating --------------------------------------------------------------------
def test_nat_requests_and_replies_are_rewritten_with_right_checksums(off: Any) -> None:
    assert off.give(fake_conn(), stats(), nat_elements())
    run = run_tc(off, tcp_frame(flags=0x18))
    assert run.retval == ebpf.TC_ACT_REDIRECT
    out = run.data
    assert out[:12] == RS_MAC + OUR_MAC
    assert out[26:34] == CLIENT + RS and struct.unpack_from("!HH", out, 34) == (40000, 8080)
    assert tcp_ok(out) and out[54:] == b"x" * 100
    reply = tcp_frame(flags=0x18, src=(RS, 8080), dst=(CLIENT, 40000))
    run = run_tc(off, reply)
    assert run.retval == ebpf.TC_ACT_REDIRECT
    out = run.data
    assert out[:12] == CLIENT_MAC + OUR_MAC
    assert out[26:34] == VIP + CLIENT and struct.unpack_from("!HH", out, 34) == (80, 40000)
    assert tcp_ok(out)
    assert counts(off, FLOW) == (1, 140) and counts(off, REPLY) == (1, 140)
    assert run_filter(off, tcp_frame(flags=0x18)) == 0 and run_filter(off, reply) == 0


def test_fullnat_rewrites_both_addresses(off: Any) -> None:
    assert off.give(fake_conn(), stats(), nat_elements(fullnat=True))
    out = run_tc(off, tcp_frame()).data
    assert out[26:34] == LIP + RS and struct.unpack_from("!HH", out, 34) == (61000, 8080) and tcp_ok(out)
    reply = tcp_frame(src=(RS, 8080), dst=(LIP, 61000))
    out = run_tc(off, reply).data
    assert out[26:34] == VIP + CLIENT and struct.unpack_from("!HH", out, 34) == (80, 40000) and tcp_ok(out)


def test_dr_changes_only_the_macs(off: Any) -> None:
    value = rewrite_value(7, RS_MAC + OUR_MAC, CLIENT, VIP, 40000, 80, DIR_IN, 2)
    assert off.give(fake_conn(), stats(), [(FLOW, DIR_IN, value)])
    frame = tcp_frame()
    run = run_tc(off, frame)
    assert run.retval == ebpf.TC_ACT_REDIRECT and run.data == RS_MAC + OUR_MAC + frame[12:]


def test_a_tun_segment_goes_out_in_ipip_with_the_element_headers(off: Any) -> None:
    assert off.give(fake_conn(), stats(), [tun_element()])
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
    assert csum(outer) == 0
    assert counts(off, FLOW) == (1, len(inner))
    assert run_filter(off, frame) == 0  # ... and the packet sockets do not see it


@pytest.mark.parametrize(
    "what,frame,element",
    [
        ("a client's SYN (NAT)", tcp_frame(flags=0x02), "nat"),
        ("a client's SYN (TUN)", tcp_frame(flags=0x02), "tun"),
        ("TUN without DF", tcp_frame(frag=0), "tun"),
        ("a fragment", tcp_frame(frag=0x2000), "nat"),
        ("too big for the tunnel", tcp_frame(payload=b"y" * 1450), "tun"),
    ],
)
def test_what_needs_python_stays_with_python(off: Any, what: str, frame: bytes, element: str) -> None:
    assert off.give(fake_conn(), stats(), nat_elements() if element == "nat" else [tun_element(limit=1480)])
    assert run_tc(off, frame).retval == ebpf.TC_ACT_OK, what
    assert run_filter(off, frame) == ACCEPT, what
    assert counts(off, FLOW) == (0, 0)


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
    assert run_filter(off, OUR_MAC + CLIENT_MAC + b"\x08\x06" + bytes(28)) == ACCEPT
    ip6 = OUR_MAC + CLIENT_MAC + b"\x86\xdd" + bytes(40)
    assert run_filter(off, ip6) == 0
    off.set_prefilter([VIP], [RS], ipv6=True)
    assert run_filter(off, ip6) == ACCEPT


def _gso_ctx(gso_size: int) -> bytes:
    ctx = bytearray(192)  # struct __sk_buff
    struct.pack_into("=I", ctx, ebpf.SKB_GSO_SIZE, gso_size)
    struct.pack_into("=I", ctx, ebpf.SKB_GSO_SEGS, 3)
    return bytes(ctx)


def test_a_gso_frame_goes_to_the_kernel_when_its_segments_fit_the_tunnel(off: Any) -> None:
    """adjust_room takes the outer header off each segment's payload (gso_size - 20), so a GSO
    frame fits when its segments' payload and headers do: gso_size + TCP header <= the limit."""
    assert off.give(fake_conn(), stats(), [tun_element(limit=1480)])
    frame = tcp_frame(payload=b"z" * 2900)
    # 1460 + 20 fits: the filter leaves it to the kernel, the tc program takes it (a test run's
    # frame has no GSO type, so its adjust_room fails: TC_ACT_SHOT, after the count)
    assert run_filter(off, frame, _gso_ctx(1460)) == 0
    assert run_tc(off, frame, _gso_ctx(1460)).retval == ebpf.TC_ACT_SHOT
    assert counts(off, FLOW) == (1, len(frame) - 14)
    # 1461 + 20 does not: Python cuts it (and answers with ICMP where it must)
    assert run_filter(off, frame, _gso_ctx(1461)) == ACCEPT
    assert run_tc(off, frame, _gso_ctx(1461)).retval == ebpf.TC_ACT_OK


def test_the_prefilter_takes_thousands_of_addresses(off: Any) -> None:
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
    element=st.sampled_from(["none", "tun", "nat", "dr"]),
    reply=st.booleans(),
    limit=st.sampled_from([1480, 1400, 9000]),
    ihl_options=st.booleans(),
)
def test_the_filter_and_the_tc_program_always_agree(
    off: Any,
    flags: int,
    frag: int,
    payload: int,
    gso: int,
    element: str,
    reply: bool,
    limit: int,
    ihl_options: bool,
) -> None:
    """Whatever the frame: Python's socket refuses it exactly when the tc program takes it, so no
    frame is forwarded twice and none is lost."""
    off.events.drain()  # the fake connections' state changes: nobody to give them to
    off.clear()
    if element == "tun":
        assert off.give(fake_conn(), stats(), [tun_element(limit=limit)])
    elif element == "nat":
        assert off.give(fake_conn(), stats(), nat_elements())
    elif element == "dr":
        value = rewrite_value(7, RS_MAC + OUR_MAC, CLIENT, VIP, 40000, 80, DIR_IN, 2)
        assert off.give(fake_conn(), stats(), [(FLOW, DIR_IN, value)])
    ends = ((RS, 8080), (CLIENT, 40000)) if reply else ((CLIENT, 40000), (VIP, 80))
    frame = bytearray(tcp_frame(flags=flags, frag=frag, payload=b"p" * payload, src=ends[0], dst=ends[1]))
    if ihl_options:  # an IP header with options: 0x46 and 4 bytes of NOPs
        frame[14] = 0x46
        frame[34:34] = b"\x01\x01\x01\x01"
        struct.pack_into("!H", frame, 16, len(frame) - 14)
    ctx = _gso_ctx(gso) if gso else None
    taken = run_tc(off, bytes(frame), ctx).retval != ebpf.TC_ACT_OK
    seen = run_filter(off, bytes(frame), ctx) == ACCEPT
    assert taken != seen, (taken, seen)


# -- states and events ----------------------------------------------------------------------------
def test_a_state_change_is_stepped_by_the_kernel_and_reported_once(off: Any) -> None:
    assert off.give(fake_conn(coretcp.SYN_RECV), stats(), nat_elements())
    (rec,) = off.by_slot.values()
    run_tc(off, tcp_frame(flags=0x10))  # the handshake's ACK: SYN_RECV -> ESTABLISHED
    run_tc(off, tcp_frame(flags=0x18))  # data: no change
    run_tc(off, tcp_frame(flags=0x11, src=(RS, 8080), dst=(CLIENT, 40000)))  # the server's FIN
    state = struct.unpack_from("=I", off.states.lookup(struct.pack("=I", rec.slot)) or b"")[0]
    assert state == coretcp.FIN_WAIT
    events = [EVENT.unpack(r[: EVENT.size]) for r in off.events.drain()]
    assert events == [
        (rec.slot, 0x10, DIR_IN, coretcp.ESTABLISHED),
        (rec.slot, 0x11, DIR_OUT, coretcp.FIN_WAIT),
    ]


def _nat_director(fwd: Fwd, persistent: bool = False) -> tuple[Director, ServiceKey]:
    d = Director()
    key = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(VIP), 80)
    d.add_service(key, ServiceConfig("rr", SvcFlags.PERSISTENT, 300) if persistent else ServiceConfig("rr"))
    d.add_dest(key, DestConfig(ipaddress.ip_address(RS), 8080 if fwd == Fwd.MASQ else 80, fwd, 1))
    return d, key


def _syn(d: Director, now: float) -> Any:
    v = d.process_in(
        Packet(
            Proto.TCP,
            ipaddress.ip_address(CLIENT),
            40000,
            ipaddress.ip_address(VIP),
            80,
            tcp_flags=0x02,
            length=60,
        ),
        now,
    )
    assert v.conn is not None
    return v.conn


_CLIENT_FLAGS = [0x10, 0x18, 0x11, 0x19, 0x14, 0x04, 0x01, 0x00]
_SERVER_FLAGS = [*_CLIENT_FLAGS, 0x12]


@settings(max_examples=150, deadline=None)
@given(
    fwd=st.sampled_from([Fwd.MASQ, Fwd.DROUTE]),
    packets=st.lists(st.tuples(st.booleans(), st.integers(0, len(_SERVER_FLAGS) - 1)), max_size=14),
    secure=st.booleans(),
    persistent=st.booleans(),
    reads=st.lists(st.booleans(), min_size=1, max_size=14),
)
def test_the_core_takes_the_steps_the_kernel_took(
    fwd: Fwd, packets: list[tuple[bool, int]], secure: bool, persistent: bool, reads: list[bool]
) -> None:
    """One core sees every packet; the other sees the SYN, then only the kernel's events, read
    after some packets only (`reads`). Both end in the same state, with the same
    ActiveConn/InActConn and (after a sync) the same counters. A persistent service's entries
    (with a template) take each step through the core; the others enter the kernel's state."""
    seen, fed = _nat_director(fwd, persistent)[0], _nat_director(fwd, persistent)[0]
    for d in (seen, fed):
        d.sysctl.secure_tcp = 3 if secure else 0
    t = ConnOffload(fed, max_flows=16)
    try:
        now = 1.0
        a, b = _syn(seen, now), _syn(fed, now)
        if fwd == Fwd.MASQ:
            elements = nat_elements()
        else:
            elements = [(FLOW, DIR_IN, rewrite_value(7, RS_MAC + OUR_MAC, CLIENT, VIP, 40000, 80, DIR_IN, 2))]
        assert t.give(b, coreapi.stats_of(fed, b), elements)
        for n, (from_server, i) in enumerate(packets):
            now += 0.001
            if from_server and fwd != Fwd.MASQ:
                continue  # DR replies never reach the director
            flags = _SERVER_FLAGS[i] if from_server else _CLIENT_FLAGS[i % len(_CLIENT_FLAGS)]
            ends = ((RS, 8080), (CLIENT, 40000)) if from_server else ((CLIENT, 40000), (VIP, 80))
            frame = tcp_frame(flags=flags, src=ends[0], dst=ends[1])
            length = len(frame) - 14
            if from_server:
                seen.process_out_tcp(a, length, flags, now)
            else:
                seen.process_in_tcp(a, length, flags, now)
            assert run_tc(t, frame).retval != ebpf.TC_ACT_OK
            if reads[n % len(reads)]:
                t.drain(now)
        t.drain(now)
        assert (b.control is None) == (not persistent)
        assert (b.state, b.flags) == (a.state, a.flags)
        assert (b.dest.activeconns, b.dest.inactconns) == (a.dest.activeconns, a.dest.inactconns)
        t.sync(now, None, lambda _r: (7, RS_MAC), full=True)
        sa, sb = a.dest.stats, b.dest.stats
        assert (sb.inpkts, sb.inbytes, sb.outpkts, sb.outbytes) == (
            sa.inpkts,
            sa.inbytes,
            sa.outpkts,
            sa.outbytes,
        )
    finally:
        t.close()


def test_a_step_of_a_connection_the_core_ended_removes_its_elements() -> None:
    """The core ended the entry (here: freed at once) while the kernel still had it: the next
    state change the kernel reports takes the elements away, so what follows asks the core."""
    d = _nat_director(Fwd.MASQ)[0]
    t = ConnOffload(d, max_flows=16)
    try:
        conn = _syn(d, 1.0)
        assert t.give(conn, coreapi.stats_of(d, conn), nat_elements())
        d.conns.free(conn)
        run_tc(t, tcp_frame(flags=0x10))  # SYN_RECV -> ESTABLISHED in the kernel
        assert t.drain(2.0) == 1
        assert t.flows.lookup(flow_key(FLOW)) is None and not t.by_slot
    finally:
        t.close()


def test_counts_reach_the_core_and_elements_go_with_their_connection(off: Any) -> None:
    conn, st_ = fake_conn(), stats()
    assert off.give(conn, st_, [tun_element()], hop=(RS, 7, RS_MAC))
    for _ in range(3):
        run_tc(off, tcp_frame())
    armed: list[float] = []
    off.sync(5.0, lambda _c, now: armed.append(now), lambda _r: (7, RS_MAC), full=True)
    assert (st_[0].inpkts, st_[0].inbytes) == (3, 3 * 140) and armed == [5.0]
    assert off.stats()["kernel_pkts"] == 3
    # the way out to the server changed: the element goes
    off.sync(6.0, None, lambda _r: (8, RS_MAC), full=True)
    assert off.flows.lookup(flow_key(FLOW)) is None and not off.by_slot
    # a connection the core closed: its elements go at the next sync, after their last counts
    conn = fake_conn()
    assert off.give(conn, st_, nat_elements())
    run_tc(off, tcp_frame())
    conn.state = coretcp.TIME_WAIT
    off.sync(7.0, None, lambda _r: None, full=True)
    assert st_[0].inpkts == 4 and off.flows.lookup(flow_key(FLOW)) is None and not off.by_flow
    assert run_tc(off, tcp_frame()).retval == ebpf.TC_ACT_OK
    # a slot freed waits a sync before it serves again (an event may still name it)
    assert off.cooling and off.free[-1] not in off.cooling


# -- a crashed run, a killed run --------------------------------------------------------------------
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
        t = ConnOffload(Director(), max_flows=16)
        try:
            stale = ebpf.TcIngress(ifindex, t.tc_fd, "stale", prio=TC_PRIO)  # never closed: "crashed"
            assert "stale" in _tc_filters(dev)
            t.attach_device(ifindex)
            assert offload.TC_NAME in _tc_filters(dev) and "stale" not in _tc_filters(dev)
        finally:
            t.close()
        assert offload.TC_NAME not in _tc_filters(dev) and "bpf" not in _tc_filters(dev)
        del stale
    finally:
        subprocess.run(["ip", "link", "del", dev], check=False)


@pytest.mark.skipif(shutil.which("tc") is None, reason="needs tc")
def test_a_restarted_engine_finds_the_maps_a_killed_one_left() -> None:
    """The killed process's tc filter still holds its program, which holds the flow and state maps:
    the next process finds them through the filter on its device, reads the connections to adopt
    them (with the state the kernel's copy holds), and its own programs go on with those maps."""
    dev = "plv" + secrets.token_hex(4)
    subprocess.run(["ip", "link", "add", dev, "type", "veth", "peer", "name", dev + "p"], check=True)
    try:
        ifindex = socket.if_nametoindex(dev)
        first = ConnOffload(Director(), max_flows=16)
        first.attach_device(ifindex)
        assert first.give(fake_conn(coretcp.SYN_RECV), stats(), nat_elements())
        ebpf.run_program(first.tc_fd, tcp_frame(flags=0x10))  # ESTABLISHED, in the kernel's copy
        first.hooks.clear()  # "killed": its descriptors go, its filter stays
        first.close()
        assert offload.previous_maps(["lo"]) == {}
        prev = offload.previous_maps([dev])
        assert set(prev) == {"flows", "states"}
        second = ConnOffload(Director(), previous=prev)
        try:
            found = sorted(second.adoptable(), key=lambda e: e[3][offload.V_DIR])
            assert [(f, state) for _k, f, state, _raw, _slot in found] == [
                (FLOW, coretcp.ESTABLISHED),
                (REPLY, coretcp.ESTABLISHED),
            ]
            slot = found[0][4]
            conn, st_ = fake_conn(), stats()
            second.take(conn, st_, [(k, f, raw[offload.V_DIR], raw) for k, f, _s, raw, _sl in found], slot)
            second.attach_device(ifindex)  # replaces the old filter, same maps
            assert ebpf.run_program(second.tc_fd, tcp_frame()).retval == ebpf.TC_ACT_REDIRECT
            second.sync(1.0, None, lambda _r: None, full=True)
            assert st_[0].inpkts == 1  # counted from the adoption on, not before
        finally:
            second.close()
        assert "bpf" not in _tc_filters(dev)
    finally:
        subprocess.run(["ip", "link", "del", dev], check=False)


def test_what_a_restarted_pylvsd_reads_of_each_method_s_elements() -> None:
    """offload.adoption_of on the elements give() is handed (as the Forwarder builds them): the
    method, the real server and, for FULLNAT, our address and local port; DR's elements carry
    their server (the addresses are not rewritten); anything else adopts nothing."""
    nat, fullnat = nat_elements(), nat_elements(fullnat=True)
    dr = rewrite_value(7, RS_MAC + OUR_MAC, CLIENT, VIP, 40000, 80, DIR_IN, 2, RS)
    old_dr = rewrite_value(7, RS_MAC + OUR_MAC, CLIENT, VIP, 40000, 80, DIR_IN, 2)

    def parts(elements: list[tuple[Any, int, bytes]]) -> list[tuple[bytes, Any, int, bytes]]:
        return [(flow_key(f), f, 1, value + struct.pack("=I", 5)) for f, _d, value in elements]

    assert offload.adoption_of(parts(nat)) == offload.Adoptable(Fwd.MASQ, RS, 8080)
    assert offload.adoption_of(parts(fullnat)) == offload.Adoptable(Fwd.FULLNAT, RS, 8080, LIP, 61000)
    assert offload.adoption_of(parts([(FLOW, DIR_IN, dr)])) == offload.Adoptable(Fwd.DROUTE, RS, 0)
    assert offload.adoption_of(parts([tun_element()])) == offload.Adoptable(Fwd.TUNNEL, RS, 0)
    assert offload.adoption_of(parts([(FLOW, DIR_IN, old_dr)])) is None
    assert offload.adoption_of(parts(nat[:1])) is None  # a NAT request without its reply
    assert offload.adoption_of(parts(nat[1:])) is None


def test_a_fullnat_port_a_killed_run_left_is_reserved_once() -> None:
    pool = PortPool(20000, 20009)
    assert pool.reserve(20005) and not pool.reserve(20005) and not pool.reserve(30000)
    assert 20005 not in [pool.take() for _ in range(9)] and pool.take() is None
    pool.give(20005)
    assert pool.take() == 20005


def test_states_are_written_in_place_and_elements_with_one_call() -> None:
    """ebpf.ArrayMmap (the states array, mmap'd: the kernel lays values 8 bytes apart) and
    ebpf.MapWriter (the two elements of a connection in one BPF_MAP_UPDATE_BATCH)."""
    states = ebpf.BpfMap(ebpf.BPF_MAP_TYPE_ARRAY, 4, 4, 64, "plv_t_states", ebpf.BPF_F_MMAPABLE)
    flows = ebpf.BpfMap(ebpf.BPF_MAP_TYPE_HASH, 12, 8, 2, "plv_t_flows")
    view = ebpf.ArrayMmap(states)
    try:
        view.set(5, 7)
        view.set(6, 9)
        assert states.lookup(struct.pack("=I", 5)) == struct.pack("=I", 7)
        assert states.lookup(struct.pack("=I", 6)) == struct.pack("=I", 9)
        states.update(struct.pack("=I", 63), struct.pack("=I", 3))
        assert view.get(63) == 3 and view.get(4) == 0
        w = ebpf.MapWriter(flows, 2)
        w.put(b"a" * 12 + b"b" * 12, b"1" * 8 + b"2" * 8, 2)
        assert flows.lookup(b"a" * 12) == b"1" * 8 and flows.lookup(b"b" * 12) == b"2" * 8
        with pytest.raises(ValueError):
            w.put(b"c" * 12, b"3" * 8, 2)  # one element's bytes, two announced
        with pytest.raises(ebpf.BpfError):
            w.put(b"c" * 12, b"3" * 8, 1)  # the map holds two: full
    finally:
        view.close()
        states.close()
        flows.close()
    with pytest.raises(ValueError):
        ebpf.ArrayMmap(flows)


def test_a_connection_without_output_leaves_the_kernel_some_seconds_into_fin_wait(off: Any) -> None:
    """DR/TUN entries stay in FIN_WAIT for its whole timeout (the server's FIN never crosses the
    director): their elements go offload.FIN_LINGER seconds after, so the maps stay bounded."""
    conn = fake_conn(coretcp.FIN_WAIT)
    value = rewrite_value(7, RS_MAC + OUR_MAC, CLIENT, VIP, 40000, 80, DIR_IN, 2)
    assert off.give(conn, stats(), [(FLOW, DIR_IN, value)])
    off.sync(10.0, None, lambda _r: None, full=True)
    off.sync(10.0 + offload.FIN_LINGER / 2, None, lambda _r: None, full=True)
    assert off.flows.lookup(flow_key(FLOW)) is not None  # a port reused soon still finds it
    off.sync(10.0 + offload.FIN_LINGER, None, lambda _r: None, full=True)
    assert off.flows.lookup(flow_key(FLOW)) is None and not off.by_slot
    # NAT entries see both FINs and leave at TIME_WAIT; FIN_WAIT alone keeps them
    nat = fake_conn(coretcp.FIN_WAIT)
    assert off.give(nat, stats(), nat_elements())
    off.sync(20.0, None, lambda _r: None, full=True)
    off.sync(30.0, None, lambda _r: None, full=True)
    assert off.flows.lookup(flow_key(FLOW)) is not None


def test_closing_connections_are_looked_at_further_apart_while_nothing_comes(off: Any) -> None:
    """A sync reads every open connection. A closing one (which may linger for minutes with
    little traffic) is read by the next sync, then CLOSING_FIRST s later, then further apart
    (doubling up to CLOSING_GAP) while the kernel counts nothing for it, CLOSING_FIRST s after a
    look that found a packet, and always EXPIRY_MARGIN s before the core's timer for it runs out;
    it goes once the core expired it."""
    st_ = stats()
    recs = []
    for i, state in enumerate((coretcp.ESTABLISHED, coretcp.CLOSE_WAIT)):
        flow = (6, CLIENT, 41000 + i, VIP, 80)
        value = rewrite_value(7, RS_MAC + OUR_MAC, CLIENT, RS, 41000 + i, 8080, DIR_IN, 0)
        assert off.give(fake_conn(state), st_, [(flow, DIR_IN, value)])
        recs.append(off.by_flow[flow])
    opened, closing = recs
    closing.conn.expires = 0.0  # no timer yet (the core arms it as the packets come)
    reads: dict[int, list[int]] = {opened.slot: [], closing.slot: []}
    now = 0
    real = off._read

    def spy(rec: Any, at: float | None, arm: Any = None) -> bool:
        reads[rec.slot].append(now)
        return bool(real(rec, at, arm))

    def arm(conn: Any, at: float) -> None:
        conn.expires = at + 60  # the core's timer: 60 s after the packet it heard of

    off._read = spy
    for now in range(1, 125):
        if now in (1, 40):  # (between the syncs of second now - 1 and now)
            run_tc(off, tcp_frame(src=(CLIENT, 41001)))
        if now == 119:
            closing.conn.dead = True  # the core's timer ran out
        off.sync(float(now), arm, lambda _r: None)
    assert reads[opened.slot] == list(range(1, 125))
    # the packet of second 1, seen at 1, armed the timer to 61: the look after 31 comes at 59
    # (not 63); the packet of second 40 is seen then, and arms the timer to 119: the look after 89
    # comes at 117, then 118, and at 119 the core has expired it
    assert (offload.CLOSING_FIRST, offload.CLOSING_GAP, offload.EXPIRY_MARGIN) == (2, 32, 2)
    assert reads[closing.slot] == [1, 3, 7, 15, 31, 59, 61, 65, 73, 89, 117, 118, 119]
    assert closing.slot not in off.by_slot and off.flows.lookup(flow_key((6, CLIENT, 41001, VIP, 80))) is None
    assert st_[0].inpkts == 2
