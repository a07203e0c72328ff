"""TCP, UDP and SCTP state machines, row by row against the spec's tables (ipvs-semantics.md §A6)."""

from __future__ import annotations

import ipaddress

import pytest

from pylvs.core.proto import PROTOCOLS, Direction, get_protocol, sctp, tcp
from pylvs.core.sysctl import Sysctls
from pylvs.core.types import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Packet, Proto, Timeouts

A = ipaddress.ip_address("10.0.0.1")

# The spec's tables with full names: current state -> (SYN, FIN, ACK, RST).
TCP_SPEC = {
    Direction.INPUT: {
        "NONE": "SYN_RECV CLOSE ESTABLISHED CLOSE",
        "ESTABLISHED": "ESTABLISHED CLOSE_WAIT ESTABLISHED CLOSE",
        "SYN_SENT": "ESTABLISHED SYN_SENT SYN_SENT CLOSE",
        "SYN_RECV": "SYN_RECV TIME_WAIT ESTABLISHED SYN_RECV",
        "FIN_WAIT": "SYN_RECV TIME_WAIT FIN_WAIT CLOSE",
        "TIME_WAIT": "SYN_RECV TIME_WAIT TIME_WAIT CLOSE",
        "CLOSE": "SYN_RECV CLOSE CLOSE CLOSE",
        "CLOSE_WAIT": "SYN_RECV CLOSE_WAIT CLOSE_WAIT CLOSE",
        "LAST_ACK": "SYN_RECV LAST_ACK CLOSE LAST_ACK",
        "LISTEN": "SYN_RECV LISTEN LISTEN LISTEN",
        "SYNACK": "SYN_RECV TIME_WAIT ESTABLISHED SYN_RECV",
    },
    Direction.OUTPUT: {
        "NONE": "SYN_SENT TIME_WAIT ESTABLISHED CLOSE",
        "ESTABLISHED": "ESTABLISHED FIN_WAIT ESTABLISHED CLOSE",
        "SYN_SENT": "SYN_SENT SYN_SENT SYN_SENT SYN_SENT",
        "SYN_RECV": "SYN_RECV TIME_WAIT ESTABLISHED CLOSE",
        "FIN_WAIT": "SYN_SENT FIN_WAIT FIN_WAIT CLOSE",
        "TIME_WAIT": "SYN_SENT TIME_WAIT TIME_WAIT TIME_WAIT",
        "CLOSE": "SYN_SENT CLOSE CLOSE CLOSE",
        "CLOSE_WAIT": "SYN_SENT TIME_WAIT CLOSE_WAIT CLOSE",
        "LAST_ACK": "SYN_SENT LAST_ACK LAST_ACK CLOSE",
        "LISTEN": "LISTEN LISTEN ESTABLISHED CLOSE",
        "SYNACK": "SYN_RECV TIME_WAIT ESTABLISHED CLOSE",
    },
    Direction.INPUT_ONLY: {
        "NONE": "SYN_RECV CLOSE ESTABLISHED CLOSE",
        "ESTABLISHED": "ESTABLISHED FIN_WAIT ESTABLISHED CLOSE",
        "SYN_SENT": "ESTABLISHED SYN_SENT SYN_SENT CLOSE",
        "SYN_RECV": "SYN_RECV TIME_WAIT ESTABLISHED SYN_RECV",
        "FIN_WAIT": "SYN_RECV FIN_WAIT FIN_WAIT CLOSE",
        "TIME_WAIT": "SYN_RECV TIME_WAIT TIME_WAIT CLOSE",
        "CLOSE": "SYN_RECV CLOSE CLOSE CLOSE",
        "CLOSE_WAIT": "SYN_RECV CLOSE_WAIT CLOSE_WAIT CLOSE",
        "LAST_ACK": "SYN_RECV LAST_ACK CLOSE LAST_ACK",
        "LISTEN": "SYN_RECV LISTEN LISTEN LISTEN",
        "SYNACK": "SYN_RECV TIME_WAIT ESTABLISHED CLOSE",
    },
}
FLAGS = (TCP_SYN, TCP_FIN, TCP_ACK, TCP_RST)
ROWS = [(d, s) for d in TCP_SPEC for s in TCP_SPEC[d]]


def seg(flags: int) -> Packet:
    return Packet(Proto.TCP, A, 1, A, 2, tcp_flags=flags)


@pytest.mark.parametrize(("direction", "state"), ROWS, ids=[f"{d.name}-{s}" for d, s in ROWS])
def test_tcp_row(direction: Direction, state: str) -> None:
    proto = PROTOCOLS[Proto.TCP]
    cur = tcp.NAMES.index(state)
    got = [tcp.NAMES[proto.next_state(cur, seg(f), direction, Sysctls())] for f in FLAGS]
    assert got == TCP_SPEC[direction][state].split()


def test_tcp_event_priority_and_no_flags() -> None:
    proto = PROTOCOLS[Proto.TCP]
    s = Sysctls()
    est = tcp.ESTABLISHED
    assert proto.next_state(est, seg(TCP_RST | TCP_SYN), Direction.INPUT, s) == tcp.CLOSE  # RST first
    assert proto.next_state(est, seg(TCP_SYN | TCP_FIN), Direction.INPUT, s) == tcp.ESTABLISHED  # then SYN
    assert proto.next_state(est, seg(TCP_FIN | TCP_ACK), Direction.INPUT, s) == tcp.CLOSE_WAIT  # FIN
    assert proto.next_state(est, seg(0x08), Direction.INPUT, s) == tcp.CLOSE  # no known flag


def test_tcp_secure_differences() -> None:
    proto = PROTOCOLS[Proto.TCP]
    sec = Sysctls(secure_tcp=3)
    i, o, io = Direction.INPUT, Direction.OUTPUT, Direction.INPUT_ONLY
    assert [tcp.NAMES[proto.next_state(tcp.SYNACK, seg(f), i, sec)] for f in FLAGS] == [
        "SYNACK",
        "SYNACK",
        "SYNACK",
        "CLOSE",
    ]
    assert proto.next_state(tcp.SYN_RECV, seg(TCP_ACK), i, sec) == tcp.SYN_RECV
    assert proto.next_state(tcp.SYN_RECV, seg(TCP_SYN), o, sec) == tcp.SYNACK
    assert proto.next_state(tcp.SYNACK, seg(TCP_SYN), o, sec) == tcp.SYNACK
    for st in ("NONE", "FIN_WAIT", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK"):
        assert proto.next_state(tcp.NAMES.index(st), seg(TCP_SYN), io, sec) == tcp.SYNACK
    assert proto.next_state(tcp.ESTABLISHED, seg(TCP_SYN), io, sec) == tcp.ESTABLISHED
    assert proto.next_state(tcp.SYN_SENT, seg(TCP_SYN), io, sec) == tcp.ESTABLISHED
    assert proto.next_state(tcp.SYN_RECV, seg(TCP_SYN), io, sec) == tcp.SYN_RECV
    # secure_tcp 1 and 2 (automatic) behave as off: the model has no memory pressure
    assert proto.next_state(tcp.SYN_RECV, seg(TCP_ACK), i, Sysctls(secure_tcp=2)) == tcp.ESTABLISHED


def test_tcp_timeouts_and_set() -> None:
    proto = PROTOCOLS[Proto.TCP]
    default = dict(zip(tcp.NAMES, proto.timeouts(Timeouts()), strict=True))
    assert default == {
        "NONE": 2,
        "ESTABLISHED": 900,
        "SYN_SENT": 120,
        "SYN_RECV": 60,
        "FIN_WAIT": 120,
        "TIME_WAIT": 120,
        "CLOSE": 10,
        "CLOSE_WAIT": 60,
        "LAST_ACK": 30,
        "LISTEN": 120,
        "SYNACK": 120,
    }
    t = proto.timeouts(Timeouts(tcp=100, tcpfin=7, udp=3))
    assert t[tcp.ESTABLISHED] == 100 and t[tcp.FIN_WAIT] == 7 and t[tcp.TIME_WAIT] == 120
    assert PROTOCOLS[Proto.UDP].timeouts(Timeouts(udp=3)) == (3,)
    assert PROTOCOLS[Proto.SCTP].timeouts(Timeouts(1, 1, 1))[sctp.ESTABLISHED] == 900


def test_active_states() -> None:
    names = {tcp.NAMES[s] for s in PROTOCOLS[Proto.TCP].active}
    assert names == {"ESTABLISHED", "SYN_SENT", "SYN_RECV", "SYNACK"}
    assert not PROTOCOLS[Proto.UDP].active
    assert {sctp.NAMES[s] for s in PROTOCOLS[Proto.SCTP].active} == {"ESTABLISHED"}
    assert get_protocol(1) is None  # ICMP: not IPVS's business here


def walk(proto_num: Proto, steps: list[tuple[Direction, Packet]]) -> list[str]:
    proto = PROTOCOLS[proto_num]
    state, out = 0, []
    for direction, pkt in steps:
        state = proto.next_state(state, pkt, direction, Sysctls())
        out.append(proto.names[state])
    return out


def test_tcp_typical_sequences() -> None:
    io, i, o = Direction.INPUT_ONLY, Direction.INPUT, Direction.OUTPUT
    dr = [
        (io, seg(TCP_SYN)),
        (io, seg(TCP_ACK)),
        (io, seg(TCP_FIN | TCP_ACK)),
        (io, seg(TCP_ACK)),
        (io, seg(TCP_RST)),
    ]
    assert walk(Proto.TCP, dr) == ["SYN_RECV", "ESTABLISHED", "FIN_WAIT", "FIN_WAIT", "CLOSE"]
    nat = [
        (i, seg(TCP_SYN)),
        (o, seg(TCP_SYN | TCP_ACK)),
        (i, seg(TCP_ACK)),
        (i, seg(TCP_FIN)),
        (o, seg(TCP_FIN)),
    ]
    assert walk(Proto.TCP, nat) == ["SYN_RECV", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "TIME_WAIT"]


def chunk(t: int, abort_next: bool = False) -> Packet:
    return Packet(Proto.SCTP, A, 1, A, 2, sctp_chunk=t, sctp_abort_next=abort_next)


def test_sctp_sequences() -> None:
    i, o, io = Direction.INPUT, Direction.OUTPUT, Direction.INPUT_ONLY
    nat = [(i, chunk(1)), (o, chunk(2)), (i, chunk(10)), (o, chunk(11)), (i, chunk(0))]
    assert walk(Proto.SCTP, nat) == ["INIT1", "C-SENT", "C-REPLIED", "ESTABLISHED", "ESTABLISHED"]
    close = [(i, chunk(7)), (o, chunk(8)), (i, chunk(14))]
    proto = PROTOCOLS[Proto.SCTP]
    state = sctp.ESTABLISHED
    names = []
    for direction, pkt in close:
        state = proto.next_state(state, pkt, direction, Sysctls())
        names.append(sctp.NAMES[state])
    assert names == ["S-RECEIVED", "S-ACK-SENT", "CLOSED"]
    dr = [(io, chunk(1)), (io, chunk(10)), (io, chunk(0))]
    assert walk(Proto.SCTP, dr) == ["INIT1", "ESTABLISHED", "ESTABLISHED"]
    # COOKIE_ECHO immediately followed by ABORT counts as ABORT; unknown chunk types are DATA
    assert walk(Proto.SCTP, [(i, chunk(1)), (i, chunk(10, abort_next=True))]) == ["INIT1", "CLOSED"]
    assert walk(Proto.SCTP, [(i, chunk(200))]) == ["ESTABLISHED"]


def test_sctp_spec_cells() -> None:
    t = sctp.TABLE
    ev = sctp.EVENTS.index
    assert sctp.NAMES[t[Direction.OUTPUT][ev("INIT")][sctp.ESTABLISHED]] == "ESTABLISHED"
    assert sctp.NAMES[t[Direction.OUTPUT][ev("ABORT")][sctp.INIT1]] == "REJECTED"
    assert sctp.NAMES[t[Direction.INPUT][ev("ABORT")][sctp.COOKIE_WAIT]] == "REJECTED"
    assert sctp.NAMES[t[Direction.INPUT_ONLY][ev("DATA")][sctp.COOKIE_WAIT]] == "ESTABLISHED"
    assert sctp.NAMES[t[Direction.INPUT][ev("INIT")][sctp.CLOSED]] == "INIT"
    assert sctp.DEFAULT_TIMEOUTS == (2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61)


def test_new_connection_rules() -> None:
    t, s, u = PROTOCOLS[Proto.TCP], PROTOCOLS[Proto.SCTP], PROTOCOLS[Proto.UDP]
    off, sloppy = Sysctls(), Sysctls(sloppy_tcp=1, sloppy_sctp=1)
    assert t.may_schedule(seg(TCP_SYN), off) and t.may_schedule(seg(TCP_SYN | TCP_ACK), off)
    assert not t.may_schedule(seg(TCP_SYN | TCP_RST), off)
    assert not t.may_schedule(seg(TCP_ACK), off) and t.may_schedule(seg(TCP_ACK), sloppy)
    assert not t.may_schedule(seg(TCP_RST), sloppy)
    assert s.may_schedule(chunk(1), off) and not s.may_schedule(chunk(0), off)
    assert s.may_schedule(chunk(0), sloppy) and not s.may_schedule(chunk(6), sloppy)
    assert u.may_schedule(Packet(Proto.UDP, A, 1, A, 2), off)
    assert t.reusable(tcp.TIME_WAIT, False, 1) and t.reusable(tcp.CLOSE, False, 1)
    assert not t.reusable(tcp.FIN_WAIT, True, 1) and t.reusable(tcp.FIN_WAIT, True, 2)
    assert not t.reusable(tcp.FIN_WAIT, False, 3) and not t.reusable(tcp.ESTABLISHED, False, 3)
    assert s.reusable(sctp.CLOSED, False, 1) and not u.reusable(0, False, 1)
