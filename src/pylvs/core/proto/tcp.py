"""TCP (ip_vs_proto_tcp.c): eleven states, three direction tables, and the secure_tcp variant."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.core.proto import Direction, Protocol, Table
from pylvs.core.types import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Packet, Proto, Timeouts

if TYPE_CHECKING:
    from pylvs.core.sysctl import Sysctls

NONE, ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, SYNACK = (
    range(11)
)

NAMES = (
    "NONE",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "SYNACK",
)
_ABBR = {
    "NO": NONE,
    "ES": ESTABLISHED,
    "SS": SYN_SENT,
    "SR": SYN_RECV,
    "FW": FIN_WAIT,
    "TW": TIME_WAIT,
    "CL": CLOSE,
    "CW": CLOSE_WAIT,
    "LA": LAST_ACK,
    "LI": LISTEN,
    "SA": SYNACK,
}

# Default timeouts (s) by state; ESTABLISHED and FIN_WAIT follow `--set tcp tcpfin`.
DEFAULT_TIMEOUTS = (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)

SYN, FIN, ACK, RST = range(4)  # events, the columns of the tables below

# Rows: current state (NONE .. SYNACK, in state order); columns: SYN FIN ACK RST (spec §A6).
_NORMAL_TEXT = {
    Direction.INPUT: """
        SR CL ES CL
        ES CW ES CL
        ES SS SS CL
        SR TW ES SR
        SR TW FW CL
        SR TW TW CL
        SR CL CL CL
        SR CW CW CL
        SR LA CL LA
        SR LI LI LI
        SR TW ES SR""",
    Direction.OUTPUT: """
        SS TW ES CL
        ES FW ES CL
        SS SS SS SS
        SR TW ES CL
        SS FW FW CL
        SS TW TW TW
        SS CL CL CL
        SS TW CW CL
        SS LA LA CL
        LI LI ES CL
        SR TW ES CL""",
    Direction.INPUT_ONLY: """
        SR CL ES CL
        ES FW ES CL
        ES SS SS CL
        SR TW ES SR
        SR FW FW CL
        SR TW TW CL
        SR CL CL CL
        SR CW CW CL
        SR LA CL LA
        SR LI LI LI
        SR TW ES CL""",
}

# secure_tcp: the same tables with a few cells changed (spec §A6).
_SECURE_TEXT = {
    Direction.INPUT: """
        SR CL ES CL
        ES CW ES CL
        ES SS SS CL
        SR TW SR SR
        SR TW FW CL
        SR TW TW CL
        SR CL CL CL
        SR CW CW CL
        SR LA CL LA
        SR LI LI LI
        SA SA SA CL""",
    Direction.OUTPUT: """
        SS TW ES CL
        ES FW ES CL
        SS SS SS SS
        SA TW ES CL
        SS FW FW CL
        SS TW TW TW
        SS CL CL CL
        SS TW CW CL
        SS LA LA CL
        LI LI ES CL
        SA TW ES CL""",
    Direction.INPUT_ONLY: """
        SA CL ES CL
        ES FW ES CL
        ES SS SS CL
        SR TW ES SR
        SA FW FW CL
        SA TW TW CL
        SA CL CL CL
        SA CW CW CL
        SA LA CL LA
        SA LI LI LI
        SA TW ES CL""",
}


def _parse(texts: dict[Direction, str]) -> Table:
    """Turn the row-per-state text into TABLE[direction][event][state]."""
    tables = []
    for direction in (Direction.INPUT, Direction.OUTPUT, Direction.INPUT_ONLY):
        rows = [line.split() for line in texts[direction].strip().splitlines()]
        assert len(rows) == len(NAMES) and all(len(r) == 4 for r in rows)
        tables.append(tuple(tuple(_ABBR[rows[s][ev]] for s in range(len(NAMES))) for ev in range(4)))
    return tuple(tables)


NORMAL: Table = _parse(_NORMAL_TEXT)
SECURE: Table = _parse(_SECURE_TEXT)


def tcp_event(flags: int) -> int:
    """The table column for a segment; -1 when no flag we know is set (the entry goes to CLOSE)."""
    if flags & TCP_RST:
        return RST
    if flags & TCP_SYN:
        return SYN
    if flags & TCP_FIN:
        return FIN
    if flags & TCP_ACK:
        return ACK
    return -1


# tcp_event depends only on these bits: a table of it saves a function call per segment
_EVENT_BITS = TCP_RST | TCP_SYN | TCP_FIN | TCP_ACK
_EVENT = tuple(tcp_event(f) for f in range(_EVENT_BITS + 1))
EVENT_BITS = _EVENT_BITS


def _flatten(table: Table) -> tuple[tuple[int, ...], ...]:
    """Per direction, the next state indexed by `(flags & EVENT_BITS) << 4 | state`: the event,
    its table row and the no-flag rule (CLOSE) folded into one index, so the packet path moves a
    segment with a single tuple subscript instead of a call and three (see packet.transition)."""
    out = []
    for d in range(len(table)):
        flat = [CLOSE] * ((_EVENT_BITS + 1) << 4)
        for f in range(_EVENT_BITS + 1):
            ev = _EVENT[f]
            for s in range(len(NAMES)):
                flat[f << 4 | s] = CLOSE if ev < 0 else table[d][ev][s]
        out.append(tuple(flat))
    return tuple(out)


# STEP[direction][(flags & EVENT_BITS) << 4 | state] -> new state, for each variant
NORMAL_STEP = _flatten(NORMAL)
SECURE_STEP = _flatten(SECURE)


class TCP(Protocol):
    proto = Proto.TCP
    names = NAMES
    active = frozenset({ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK})
    established = ESTABLISHED

    def may_schedule(self, pkt: Packet, sysctl: Sysctls) -> bool:
        # A SYN (SYN+ACK too, for active FTP) without RST; with sloppy_tcp any segment but a RST.
        if pkt.tcp_flags & TCP_RST:
            return False
        return bool(pkt.tcp_flags & TCP_SYN) or bool(sysctl.sloppy_tcp)

    def is_new_conn(self, pkt: Packet) -> bool:
        return bool(pkt.tcp_flags & TCP_SYN)

    def reusable(self, state: int, no_output: bool, reuse_mode: int) -> bool:
        if state in (TIME_WAIT, CLOSE):
            return True
        return bool(reuse_mode & 2) and state == FIN_WAIT and no_output

    def next_state(self, state: int, pkt: Packet, direction: Direction, sysctl: Sysctls) -> int:
        step = SECURE_STEP if sysctl.secure_tcp == 3 else NORMAL_STEP
        return step[direction][(pkt.tcp_flags & _EVENT_BITS) << 4 | state]

    def timeouts(self, t: Timeouts) -> tuple[int, ...]:
        return _timeouts(t.tcp, t.tcpfin)


def _timeouts(tcp: int, tcpfin: int) -> tuple[int, ...]:
    out = list(DEFAULT_TIMEOUTS)
    out[ESTABLISHED] = tcp
    out[FIN_WAIT] = tcpfin
    return tuple(out)
