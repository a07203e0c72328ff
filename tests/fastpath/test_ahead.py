"""Decisions taken ahead (engines/packet/ahead.py with offload.py's SYN path), run by the kernel on
frames built here (BPF_PROG_TEST_RUN): a client's SYN to an rr/wrr service becomes a connection in
the kernel, to the server the core's own scheduler picked, in the core's order; the core gets the
entry from the event; the packet sockets' filter leaves exactly those SYNs to tc."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.cbpf import ACCEPT
from pylvs.core.director import Director
from pylvs.core.proto import tcp as coretcp
from pylvs.core.types import DestConfig, Fwd, Packet, Proto, ServiceConfig, ServiceKey
from pylvs.engines.packet import offload
from pylvs.engines.packet.offload import DIR_IN, QUEUE, VALUE, ConnOffload, flow_key
from pylvs.engines.packet.ports import PortPool
from pylvs.netlink import ebpf
from tests.support import inet_checksum as csum

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for bpf()")

CLIENT, VIP = socket.inet_aton("172.25.254.10"), socket.inet_aton("172.25.254.100")
SERVERS = [socket.inet_aton(f"192.168.1.{i}") for i in (10, 20, 30)]
OUR_MAC, CLIENT_MAC, RS_MAC = (
    bytes.fromhex("020000000001"),
    bytes.fromhex("020000000002"),
    bytes.fromhex("020000000003"),
)


def syn(cport: int, flags: int = 0x02, df: bool = True, src: bytes = CLIENT) -> bytes:
    tcp = bytearray(struct.pack("!HHIIBBHHH", cport, 80, 1, 0, 5 << 4, flags, 65535, 0, 0))
    struct.pack_into("!H", tcp, 16, csum(src + VIP + struct.pack("!BBH", 0, 6, len(tcp)) + bytes(tcp)))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0x4000 if df else 0, 64, 6, 0, src, VIP))
    struct.pack_into("!H", ip, 10, csum(bytes(ip)))
    return OUR_MAC + CLIENT_MAC + b"\x08\x00" + bytes(ip) + bytes(tcp)


def director(sched: str, weights: list[int], fwd: Fwd = Fwd.MASQ, **dest_kw: Any) -> Director:
    d = Director()
    key = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(VIP), 80)
    d.add_service(key, ServiceConfig(sched))
    for addr, w in zip(SERVERS, weights, strict=False):
        d.add_dest(key, DestConfig(ipaddress.ip_address(addr), 8080, fwd, w, **dest_kw))
    return d


def client_packet(cport: int, flags: int, length: int = 0) -> Packet:
    """The client's packet to the VIP as the core takes it."""
    return Packet(
        Proto.TCP,
        ipaddress.ip_address(CLIENT),
        cport,
        ipaddress.ip_address(VIP),
        80,
        tcp_flags=flags,
        length=length,
    )


def entry(d: Director, cport: int) -> Any:
    """The core's entry for the client's flow from cport (None: none)."""
    return d.lookup_in(6, ipaddress.ip_address(CLIENT), cport, ipaddress.ip_address(VIP), 80)


def way(_raddr: bytes) -> tuple[int, bytes, bytes, bytes, int]:
    return (7, RS_MAC, OUR_MAC, socket.inet_aton("192.168.1.100"), 1500)


LIP = socket.inet_aton("192.168.1.100")


def offload_for(d: Director, max_flows: int = 4096) -> ConnOffload:
    """A kernel path with decisions ahead, a FULLNAT port pool and the Forwarder's hook recorded."""
    t = ConnOffload(d, max_flows=max_flows, ahead=True)
    t.ports = PortPool(20000, 20999)
    t.fullnat_seen = []  # type: ignore[attr-defined]
    t.on_fullnat = lambda *a: t.fullnat_seen.append(a)  # type: ignore[attr-defined]
    return t


def run_tc(t: ConnOffload, frame: bytes) -> ebpf.ProgramRun:
    return ebpf.run_program(t.tc_fd, frame)


def run_filter(t: ConnOffload, frame: bytes) -> int:
    return ebpf.run_program(t.sock_fd, bytes(12) + b"\x08\x00" + frame).retval


@pytest.fixture
def nat() -> Any:
    d = director("rr", [1, 1, 1])
    t = ConnOffload(d, max_flows=4096, ahead=True)
    t.set_prefilter([VIP], SERVERS, ipv6=False)
    t.load_ahead(way, 1.0)
    yield d, t
    t.close()


def test_a_syn_becomes_a_connection_in_the_kernel_to_the_server_the_core_picked(nat: Any) -> None:
    d, t = nat
    assert run_filter(t, syn(40000)) == 0  # the kernel takes it: the packet sockets do not see it
    run = run_tc(t, syn(40000))
    assert run.retval == ebpf.TC_ACT_REDIRECT
    out = run.data
    server = out[30:34]
    assert server in SERVERS and struct.unpack_from("!H", out, 36)[0] == 8080 and out[:12] == RS_MAC + OUR_MAC
    assert csum(out[14:34]) == 0
    key = flow_key((6, CLIENT, 40000, VIP, 80))
    slot = VALUE.unpack(t.flows.lookup(key) or b"")[-1]
    assert t.counts(slot, DIR_IN) == (1, 40)  # the SYN, counted
    assert d.conns.conns == {}  # the core hears of it from the event
    assert t.drain(2.0) == 1
    (conn,) = d.conns.conns.values()
    assert conn.dest.addr.packed == server and conn.state == coretcp.SYN_RECV and conn.dport == 8080
    assert conn.dest.stats.conns == 1 and (conn.dest.activeconns, conn.dest.inactconns) == (
        1,
        0,
    )  # as the core
    # the server's SYN-ACK comes back through the reply element the kernel made
    reply = bytearray(syn(40000, flags=0x12, src=server))
    reply[26:34] = server + CLIENT
    struct.pack_into("!HH", reply, 34, 8080, 40000)
    back = run_tc(t, bytes(reply))
    assert (
        back.retval == ebpf.TC_ACT_REDIRECT
        and back.data[26:34] == VIP + CLIENT
        and back.data[:12] == CLIENT_MAC + OUR_MAC
    )
    assert t.stats()["ahead_taken"] == 1


def _picks(d: Director, n: int) -> list[bytes]:
    """What the core alone gives n new connections (its own packet path)."""
    out = []
    for i in range(n):
        v = d.process_in(
            client_packet(20000 + i, 0x02),
            1.0,
        )
        if v.conn is None:
            break  # no server to give (every weight 0)
        out.append(v.conn.dest.addr.packed)
    return out


@settings(max_examples=25, deadline=None)
@given(
    fwd=st.sampled_from([Fwd.MASQ, Fwd.FULLNAT, Fwd.DROUTE, Fwd.TUNNEL]),
    sched=st.sampled_from(["rr", "wrr"]),
    weights=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    n=st.integers(1, 3 * QUEUE),
)
def test_the_kernel_gives_connections_the_servers_in_the_core_s_order(
    fwd: Fwd, sched: str, weights: list[int], n: int
) -> None:
    """Taken ahead or not, the same servers in the same order (no rule change in between); the
    queues are topped up as events come in, so more connections than a queue holds go the same way."""
    expected = _picks(director(sched, weights, fwd), n)
    d = director(sched, weights, fwd)
    t = offload_for(d, 4 * n + 16)
    try:
        t.load_ahead(way, 1.0)
        got = []
        for i in range(n):
            if run_tc(t, syn(20000 + i)).retval == ebpf.TC_ACT_OK:
                break  # nothing queued (every weight 0): the core would not schedule either
            t.drain(1.0)
        for i in range(n):
            c = entry(d, 20000 + i)
            if c is not None:
                got.append(c.dest.addr.packed)
        assert got == expected
    finally:
        t.close()


NEW_SERVER = socket.inet_aton("192.168.1.40")


def _change(d: Director, change: str, weight: int) -> None:
    """One rule change to the service of director(): a server added, deleted or re-weighted, or
    the other scheduler of the two."""
    key = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(VIP), 80)
    svc = d.services.get(key)
    assert svc is not None
    fwd = svc.dests[0].fwd
    if change == "scheduler":
        d.edit_service(key, ServiceConfig("wrr" if svc.scheduler_name == "rr" else "rr"))
    elif change == "add":
        d.add_dest(key, DestConfig(ipaddress.ip_address(NEW_SERVER), 8080, fwd, weight))
    elif change == "delete":
        d.del_dest(key, ipaddress.ip_address(SERVERS[1]), 8080)
    else:
        d.edit_dest(key, DestConfig(ipaddress.ip_address(SERVERS[0]), 8080, fwd, weight))


def _server_of(d: Director, cport: int) -> bytes | None:
    c = entry(d, cport)
    return None if c is None else bytes(c.dest.addr.packed)


@settings(max_examples=60, deadline=None)
@given(
    sched=st.sampled_from(["rr", "wrr"]),
    weights=st.lists(st.integers(0, 4), min_size=2, max_size=3),
    before=st.integers(0, 7),
    after=st.integers(1, 7),
    change=st.sampled_from(["add", "delete", "weight", "scheduler"]),
    weight=st.integers(0, 4),
)
def test_a_rule_change_meets_the_scheduler_where_ipvs_s_would(
    sched: str, weights: list[int], before: int, after: int, change: str, weight: int
) -> None:
    """Connections, a rule change, more connections: the kernel taking decisions queued ahead
    gives them the servers the core alone gives them. Before the change the engine puts back what
    was queued and not taken (rules_changing: each scheduler back to before its first decision
    not taken), so the change meets the scheduler as IPVS's would; the queue is filled again from
    the new rules (load_ahead, the engine's sync after a change)."""
    alone, d = director(sched, weights), director(sched, weights)
    t = offload_for(d, 1024)
    try:
        t.load_ahead(way, 1.0)
        expected: list[bytes | None] = []
        got: list[bytes | None] = []
        for i in range(before + after):
            if i == before:
                _change(alone, change, weight)
                t.rules_changing(2.0)
                _change(d, change, weight)
                t.load_ahead(way, 2.0)
            v = alone.process_in(client_packet(20000 + i, 0x02), 2.0)
            expected.append(None if v.conn is None else bytes(v.conn.dest.addr.packed))
            if run_tc(t, syn(20000 + i)).retval == ebpf.TC_ACT_OK:
                # nothing queued: Python's per-packet way, which asks the same core
                d.process_in(client_packet(20000 + i, 0x02), 2.0)
            t.drain(2.0)
            got.append(_server_of(d, 20000 + i))
        assert got == expected
    finally:
        t.close()


def test_fullnat_connections_get_our_address_and_a_local_port_from_the_pool() -> None:
    d = director("rr", [1, 1], Fwd.FULLNAT)
    t = offload_for(d)
    try:
        t.set_prefilter([VIP, LIP], SERVERS, ipv6=False)
        t.load_ahead(way, 1.0)
        assert len(t.ports.used) == QUEUE  # a port reserved with each queued decision
        run = run_tc(t, syn(40000))
        assert run.retval == ebpf.TC_ACT_REDIRECT
        out = run.data
        server = out[30:34]
        lport, rport = struct.unpack_from("!HH", out, 34)
        assert out[26:30] == LIP and 20000 <= lport <= 20999 and rport == 8080 and server in SERVERS
        assert csum(out[14:34]) == 0
        assert t.drain(2.0) == 1
        (conn,) = d.conns.conns.values()
        assert conn.dest.addr.packed == server and conn.dport == 8080
        assert t.fullnat_seen == [(conn, (6, CLIENT, 40000, VIP, 80), server, 8080, LIP, lport)]  # type: ignore[attr-defined]
        # the server answers our address and the local port: back to the client from the VIP
        reply = bytearray(syn(40000, flags=0x12, src=server))
        reply[26:34] = server + LIP
        struct.pack_into("!HH", reply, 34, 8080, lport)
        assert run_filter(t, bytes(reply)) == 0
        back = run_tc(t, bytes(reply))
        assert back.retval == ebpf.TC_ACT_REDIRECT
        assert back.data[26:34] == VIP + CLIENT and struct.unpack_from("!HH", back.data, 34) == (80, 40000)
        # without a port to give, FULLNAT decisions stop being queued (Python decides)
        t.ports = PortPool(20000, 20000)
        t.ports.take()
        t.load_ahead(way, 3.0)
        assert t.ahead.tails.get(0) == t.ahead.heads.get(0)
    finally:
        t.close()


def test_what_stays_with_python(nat: Any) -> None:
    d, t = nat
    for what, frame in (
        ("SYN+ACK from a client", syn(40001, flags=0x12)),
        ("SYN without DF", syn(40002, df=False)),
        ("SYN from port 20", syn(20)),
        ("to another port", syn(40003)[:36] + struct.pack("!H", 81) + syn(40003)[38:]),
    ):
        assert run_tc(t, frame).retval == ebpf.TC_ACT_OK, what
        assert run_filter(t, frame) == ACCEPT, what
    assert t.drain(1.0) == 0 and d.conns.conns == {}
    # a SYN of a flow the kernel already has (a retry): the core's reuse rule, applied in the
    # kernel (SYN_RECV is not a state a SYN reschedules from: the same connection's packet) ...
    run_tc(t, syn(40010))
    assert run_filter(t, syn(40010)) == 0 and run_tc(t, syn(40010)).retval == ebpf.TC_ACT_REDIRECT
    # ... unless the rule needs what only the core knows (expire_nodest_conn: the server's weight)
    d.sysctl.expire_nodest_conn = 1
    t.set_steps()
    assert run_filter(t, syn(40010)) == ACCEPT and run_tc(t, syn(40010)).retval == ebpf.TC_ACT_OK


def test_ineligible_services_and_an_empty_queue_go_the_per_packet_way() -> None:
    for d in (
        director("wlc", [1, 1]),  # depends on the servers' connections
        director("rr", [1, 1], u_threshold=10),  # thresholds
    ):
        t = ConnOffload(d, max_flows=64, ahead=True)
        try:
            t.load_ahead(way, 1.0)
            assert not t.ahead.served
            assert run_tc(t, syn(40000)).retval == ebpf.TC_ACT_OK
        finally:
            t.close()
    d = director("rr", [1, 1])
    t = ConnOffload(d, max_flows=64, ahead=True)
    try:
        t.load_ahead(lambda _r: None, 1.0)  # no server's MAC known yet
        assert not t.ahead.served and run_tc(t, syn(40000)).retval == ebpf.TC_ACT_OK
        t.sync(2.0, None, lambda _r: (7, RS_MAC), way, full=True)  # now they are: served from the next sync
        assert t.ahead.served and run_tc(t, syn(40001)).retval == ebpf.TC_ACT_REDIRECT
    finally:
        t.close()


def test_a_rule_change_drops_the_queue_and_a_lost_decision_gives_its_slot_back(nat: Any) -> None:
    _d, t = nat
    run_tc(t, syn(40000))
    t.drain(1.0)
    queued = len(t.ahead.queued)
    assert queued == QUEUE
    # a decision taken whose event never came (the ring was read meanwhile by nobody): its slot
    # comes back GRACE seconds after a sync first sees it taken
    run_tc(t, syn(40001))
    t.events.drain()  # lost
    free = len(t.free)
    t.sync(2.0, None, lambda _r: (7, RS_MAC), way, full=True)
    t.sync(5.0, None, lambda _r: (7, RS_MAC), way, full=True)
    assert t.stats()["ahead_reclaimed"] == 1 and len(t.free) >= free
    # a rule change: what is queued is no longer taken, a new queue from the new rules
    head = t.ahead.heads.get(0)
    t.load_ahead(way, 6.0)
    assert t.ahead.tails.get(0) - head == QUEUE  # refilled from the head on


@settings(max_examples=200, deadline=None)
@given(
    fwd=st.sampled_from([Fwd.MASQ, Fwd.FULLNAT, Fwd.DROUTE, Fwd.TUNNEL]),
    given_first=st.booleans(),
    flags=st.sampled_from([0x02, 0x12, 0x10, 0x18, 0x11, 0x14, 0x03, 0x00]),
    df=st.booleans(),
    payload=st.integers(0, 1600),
    queue=st.booleans(),
)
def test_the_filter_and_the_tc_program_agree_with_decisions_taken_ahead(
    fwd: Fwd, given_first: bool, flags: int, df: bool, payload: int, queue: bool
) -> None:
    """Whatever the frame, with or without a decision queued, for a flow the kernel made or not:
    the packet sockets see it exactly when the tc program leaves it."""
    d = director("rr", [1, 1], fwd)
    t = offload_for(d, 64)
    try:
        t.set_prefilter([VIP, LIP], SERVERS, ipv6=False)
        t.load_ahead(way, 1.0)
        if given_first:
            assert run_tc(t, syn(40000)).retval == ebpf.TC_ACT_REDIRECT
        if not queue:
            t.ahead.tails.set(0, t.ahead.heads.get(0))  # nothing queued
        frame = bytearray(syn(40000, flags=flags, df=df))
        if payload:
            frame += b"p" * payload
            struct.pack_into("!H", frame, 16, len(frame) - 14)
        seen = run_filter(t, bytes(frame)) == ACCEPT  # taps run before tc
        taken = run_tc(t, bytes(frame)).retval != ebpf.TC_ACT_OK
        assert taken != seen, (taken, seen)
    finally:
        t.close()


_FLAGS = [0x02, 0x10, 0x18, 0x11, 0x14, 0x04, 0x01]


@settings(max_examples=150, deadline=None)
@given(
    fwd=st.sampled_from([Fwd.MASQ, Fwd.DROUTE]),
    reuse_mode=st.sampled_from([0, 1, 2, 3]),
    packets=st.lists(st.tuples(st.booleans(), st.sampled_from(_FLAGS)), max_size=16),
    reads=st.lists(st.booleans(), min_size=1, max_size=17),
)
def test_syns_of_a_known_flow_follow_the_core_s_reuse_rule(
    fwd: Fwd, reuse_mode: int, packets: list[tuple[bool, int]], reads: list[bool]
) -> None:
    """One client port, SYNs included: a core that sees every packet (reusing, rescheduling) and
    the kernel with its events end with the same entry: same server, state, flags, counts. The
    events are read after some packets only (`reads`): a connection the kernel made and its next
    steps often come in one read."""
    seen, fed = director("rr", [1, 1, 1], fwd), director("rr", [1, 1, 1], fwd)
    for d in (seen, fed):
        d.sysctl.conn_reuse_mode = reuse_mode
    t = offload_for(fed)
    try:
        t.load_ahead(way, 1.0)
        now = 1.0
        for i, (from_server, flags) in enumerate([(False, 0x02), *packets]):
            now += 0.001
            if from_server and fwd != Fwd.MASQ:
                continue
            c = entry(seen, 40000)
            if from_server:
                if c is None:
                    continue
                server = c.dest.addr.packed
                frame = bytearray(syn(40000, flags=flags, src=server))
                frame[26:34] = server + CLIENT
                struct.pack_into("!HH", frame, 34, 8080, 40000)
                seen.process_out_tcp(c, 40, flags, now)
            else:
                frame = bytearray(syn(40000, flags=flags))
                seen.process_in(client_packet(40000, flags, 40), now)
            taken = run_tc(t, bytes(frame)).retval != ebpf.TC_ACT_OK
            if not taken:
                return  # Python's turn (a flow without element, flags the kernel leaves): not modelled here
            if reads[i % len(reads)]:
                t.drain(now)
        t.drain(now)
        a = entry(seen, 40000)
        b = entry(fed, 40000)
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert (b.dest.addr, b.state, b.flags) == (a.dest.addr, a.state, a.flags)
        for da, db in zip(
            seen.services.values() if hasattr(seen.services, "values") else seen.services,
            fed.services,
            strict=True,
        ):
            assert [(x.activeconns, x.inactconns, x.stats.conns) for x in da.dests] == [
                (x.activeconns, x.inactconns, x.stats.conns) for x in db.dests
            ]
    finally:
        t.close()


@pytest.mark.parametrize("fwd", [Fwd.DROUTE, Fwd.MASQ])
def test_elements_stay_while_the_core_would_keep_the_entry_for_a_new_syn(fwd: Fwd) -> None:
    """With decisions ahead the kernel makes a connection of any SYN it has no element for, so the
    elements of a closed connection stay until a SYN would be scheduled afresh anyway: a DR entry
    in FIN_WAIT (kept by conn_reuse_mode 1) keeps them; a NAT one in TIME_WAIT (rescheduled) not.
    Found by the benchmark: DR clients reusing a port got a new server the core did not know."""
    d = director("rr", [1, 1, 1], fwd)
    t = offload_for(d)
    try:
        t.load_ahead(way, 1.0)
        first = run_tc(t, syn(40000)).data[30:34]
        closing = [0x10, 0x11, 0x10] if fwd == Fwd.DROUTE else [0x10, 0x14]
        for flags in closing:
            run_tc(t, syn(40000, flags=flags))
        for now in (2.0, 5.0, 9.0):
            t.sync(now, None, lambda _r: (7, RS_MAC), way, full=True)
        c = entry(d, 40000)
        assert c is not None
        kept = t.flows.lookup(flow_key((6, CLIENT, 40000, VIP, 80))) is not None
        assert kept == (fwd == Fwd.DROUTE), coretcp.NAMES[c.state]
        again = run_tc(t, syn(40000))
        t.drain(10.0)
        c2 = entry(d, 40000)
        assert c2 is not None
        if fwd == Fwd.DROUTE:  # the same entry, the same server, as IPVS keeps it
            assert c2 is c and again.retval == ebpf.TC_ACT_REDIRECT and again.data[30:34] == first == VIP
        else:  # scheduled afresh, and the core knows the new entry's server
            assert c2 is not c and c2.dest.addr.packed == again.data[30:34]
    finally:
        t.close()


@pytest.mark.parametrize("fwd", [Fwd.MASQ, Fwd.FULLNAT, Fwd.DROUTE, Fwd.TUNNEL])
def test_a_restarted_pylvsd_can_tell_the_kernel_made_connections_server(fwd: Fwd) -> None:
    """The elements the tc program wrote for a SYN say which server (and for FULLNAT which local
    address and port) the connection has: offload.adoption_of, what a restarted pylvsd adopts."""
    d = director("rr", [1, 1, 1], fwd)
    t = offload_for(d)
    try:
        t.load_ahead(way, 1.0)
        assert run_tc(t, syn(40000)).retval == ebpf.TC_ACT_REDIRECT
        t.drain(1.0)
        conn = entry(d, 40000)
        assert conn is not None
        found = [(k, offload.flow_of(k), 0, v) for k, v in t.flows.items()]
        a = offload.adoption_of(found)
        assert a is not None and (a.fwd, a.raddr) == (fwd, conn.dest.addr.packed)
        if fwd in (Fwd.MASQ, Fwd.FULLNAT):
            assert a.rport == 8080
        if fwd == Fwd.FULLNAT:
            ((_c, _f, _r, _rp, laddr, lport),) = t.fullnat_seen  # type: ignore[attr-defined]
            assert (a.laddr, a.lport) == (laddr, lport) == (LIP, lport)
    finally:
        t.close()
