"""SCTP (ip_vs_proto_sctp.c): fourteen states; the event is the first chunk's type."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.core.proto import Direction, Protocol, Table
from pylvs.core.types import Packet, Proto, Timeouts

if TYPE_CHECKING:
    from pylvs.core.sysctl import Sysctls

NAMES = (
    "NONE",
    "INIT1",
    "INIT",
    "C-SENT",
    "C-REPLIED",
    "C-WAIT",
    "COOKIE",
    "C-ECHOED",
    "ESTABLISHED",
    "S-SENT",
    "S-RECEIVED",
    "S-ACK-SENT",
    "REJECTED",
    "CLOSED",
)
_STATE = {name: i for i, name in enumerate(NAMES)}
(
    NONE,
    INIT1,
    INIT,
    COOKIE_SENT,
    COOKIE_REPLIED,
    COOKIE_WAIT,
    COOKIE,
    COOKIE_ECHOED,
    ESTABLISHED,
    SHUTDOWN_SENT,
    SHUTDOWN_RECEIVED,
    SHUTDOWN_ACK_SENT,
    REJECTED,
    CLOSED,
) = range(14)

DEFAULT_TIMEOUTS = (2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61)  # `--set` leaves SCTP alone

# Chunk types (RFC 9260) and the events they map to; anything else is DATA.
CHUNK_DATA, CHUNK_INIT, CHUNK_INIT_ACK = 0, 1, 2
CHUNK_ABORT, CHUNK_SHUTDOWN, CHUNK_SHUTDOWN_ACK, CHUNK_ERROR = 6, 7, 8, 9
CHUNK_COOKIE_ECHO, CHUNK_COOKIE_ACK, CHUNK_SHUTDOWN_COMPLETE = 10, 11, 14

EVENTS = (
    "DATA",
    "INIT",
    "INIT_ACK",
    "COOKIE_ECHO",
    "COOKIE_ACK",
    "SHUTDOWN",
    "SHUTDOWN_ACK",
    "SHUTDOWN_COMPLETE",
    "ERROR",
    "ABORT",
)
_EVENT_OF_CHUNK = {
    CHUNK_INIT: 1,
    CHUNK_INIT_ACK: 2,
    CHUNK_COOKIE_ECHO: 3,
    CHUNK_COOKIE_ACK: 4,
    CHUNK_SHUTDOWN: 5,
    CHUNK_SHUTDOWN_ACK: 6,
    CHUNK_SHUTDOWN_COMPLETE: 7,
    CHUNK_ERROR: 8,
    CHUNK_ABORT: 9,
}
EV_ABORT = 9

# Rows: event; columns: current state in state order (spec §A6).
_TEXT = {
    Direction.INPUT: """
        DATA              ESTABLISHED INIT1       INIT        C-SENT      C-REPLIED   C-WAIT      COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        INIT              INIT1       INIT        INIT        C-SENT      C-REPLIED   C-WAIT      COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  INIT        INIT
        INIT_ACK          C-WAIT      C-WAIT      C-WAIT      C-SENT      C-REPLIED   COOKIE      COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        COOKIE_ECHO       C-REPLIED   INIT        INIT        C-REPLIED   C-REPLIED   C-WAIT      COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        COOKIE_ACK        ESTABLISHED INIT1       INIT        C-SENT      C-REPLIED   C-WAIT      COOKIE      ESTABLISHED ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        SHUTDOWN          S-RECEIVED  INIT1       INIT        C-SENT      C-REPLIED   C-WAIT      COOKIE      C-ECHOED    S-RECEIVED  S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        SHUTDOWN_ACK      CLOSED      INIT        INIT        C-SENT      C-REPLIED   C-WAIT      COOKIE      C-ECHOED    ESTABLISHED CLOSED      S-RECEIVED  CLOSED      REJECTED    CLOSED
        SHUTDOWN_COMPLETE CLOSED      CLOSED      CLOSED      C-SENT      C-REPLIED   C-WAIT      COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  CLOSED      REJECTED    CLOSED
        ERROR             CLOSED      INIT1       INIT        C-SENT      C-REPLIED   C-WAIT      COOKIE      CLOSED      ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        ABORT             CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      REJECTED    CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED""",
    Direction.OUTPUT: """
        DATA              ESTABLISHED INIT1       INIT        C-SENT      C-REPLIED   C-WAIT      COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        INIT              C-WAIT      C-WAIT      C-WAIT      C-WAIT      C-WAIT      C-WAIT      C-WAIT      C-WAIT      ESTABLISHED C-WAIT      C-WAIT      C-WAIT      C-WAIT      C-WAIT
        INIT_ACK          C-SENT      C-SENT      C-SENT      C-SENT      C-REPLIED   C-WAIT      COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        COOKIE_ECHO       C-ECHOED    C-ECHOED    C-ECHOED    C-ECHOED    C-ECHOED    C-ECHOED    C-ECHOED    C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        COOKIE_ACK        ESTABLISHED ESTABLISHED ESTABLISHED ESTABLISHED ESTABLISHED ESTABLISHED ESTABLISHED ESTABLISHED ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        SHUTDOWN          S-SENT      S-SENT      S-SENT      S-SENT      S-SENT      S-SENT      S-SENT      S-SENT      S-SENT      S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        SHUTDOWN_ACK      S-ACK-SENT  S-ACK-SENT  S-ACK-SENT  S-ACK-SENT  S-ACK-SENT  C-WAIT      COOKIE      C-ECHOED    ESTABLISHED S-ACK-SENT  S-ACK-SENT  S-ACK-SENT  REJECTED    CLOSED
        SHUTDOWN_COMPLETE CLOSED      INIT1       INIT        C-SENT      C-REPLIED   C-WAIT      COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        ERROR             CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      C-WAIT      COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        ABORT             CLOSED      REJECTED    CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED""",
    Direction.INPUT_ONLY: """
        DATA              ESTABLISHED INIT1       INIT        C-SENT      C-REPLIED   ESTABLISHED COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        INIT              INIT1       INIT        INIT        INIT        INIT        INIT        COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  INIT        INIT
        INIT_ACK          C-ECHOED    C-ECHOED    C-ECHOED    C-ECHOED    C-ECHOED    C-ECHOED    COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        COOKIE_ECHO       ESTABLISHED ESTABLISHED ESTABLISHED ESTABLISHED ESTABLISHED ESTABLISHED COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        COOKIE_ACK        ESTABLISHED INIT1       INIT        ESTABLISHED ESTABLISHED C-WAIT      ESTABLISHED ESTABLISHED ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        SHUTDOWN          S-RECEIVED  INIT1       INIT        C-SENT      C-REPLIED   C-WAIT      COOKIE      C-ECHOED    S-RECEIVED  S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        SHUTDOWN_ACK      CLOSED      INIT        INIT        C-SENT      C-REPLIED   C-WAIT      COOKIE      C-ECHOED    CLOSED      CLOSED      S-RECEIVED  CLOSED      REJECTED    CLOSED
        SHUTDOWN_COMPLETE CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      C-WAIT      COOKIE      C-ECHOED    ESTABLISHED S-SENT      CLOSED      CLOSED      REJECTED    CLOSED
        ERROR             CLOSED      INIT1       INIT        C-SENT      C-REPLIED   C-WAIT      COOKIE      C-ECHOED    ESTABLISHED S-SENT      S-RECEIVED  S-ACK-SENT  REJECTED    CLOSED
        ABORT             CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      REJECTED    CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED      CLOSED""",
}


def _parse(texts: dict[Direction, str]) -> Table:
    tables = []
    for direction in (Direction.INPUT, Direction.OUTPUT, Direction.INPUT_ONLY):
        rows = [line.split() for line in texts[direction].strip().splitlines()]
        assert [r[0] for r in rows] == list(EVENTS) and all(len(r) == 15 for r in rows)
        tables.append(tuple(tuple(_STATE[cell] for cell in row[1:]) for row in rows))
    return tuple(tables)


TABLE: Table = _parse(_TEXT)


def sctp_event(pkt: Packet) -> int:
    """The event of a packet: its first chunk, where COOKIE_ECHO/ACK followed by ABORT counts as ABORT."""
    chunk = pkt.sctp_chunk
    if chunk in (CHUNK_COOKIE_ECHO, CHUNK_COOKIE_ACK) and pkt.sctp_abort_next:
        return EV_ABORT
    return _EVENT_OF_CHUNK.get(chunk, 0)


class SCTP(Protocol):
    proto = Proto.SCTP
    names = NAMES
    active = frozenset({ESTABLISHED})
    established = ESTABLISHED

    def may_schedule(self, pkt: Packet, sysctl: Sysctls) -> bool:
        if pkt.sctp_chunk == CHUNK_ABORT:
            return False
        return pkt.sctp_chunk == CHUNK_INIT or bool(sysctl.sloppy_sctp)

    def is_new_conn(self, pkt: Packet) -> bool:
        return pkt.sctp_chunk == CHUNK_INIT

    def reusable(self, state: int, no_output: bool, reuse_mode: int) -> bool:
        return state == CLOSED

    def next_state(self, state: int, pkt: Packet, direction: Direction, sysctl: Sysctls) -> int:
        return TABLE[direction][sctp_event(pkt)][state]

    def timeouts(self, t: Timeouts) -> tuple[int, ...]:
        return DEFAULT_TIMEOUTS
