"""Protocol state machines (ip_vs_proto_*.c): one module per protocol, each a table of data.

A protocol tells the packet path four things: which packets may start a connection, which count as
"new" for connection reuse, the event a packet is for the state table, and the state names, active
states and timeouts. The tables are consulted by one small function, `next_state`.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, ClassVar

from pylvs.core.types import Packet, Proto, Timeouts

if TYPE_CHECKING:
    from pylvs.core.sysctl import Sysctls


class Direction(IntEnum):
    """Which table a packet consults: client->director, reply, or client->director without replies."""

    INPUT = 0
    OUTPUT = 1
    INPUT_ONLY = 2


# A table: TABLE[direction][event][state] -> new state.
Table = tuple[tuple[tuple[int, ...], ...], ...]


class Protocol:
    """What differs between TCP, UDP and SCTP on the packet path."""

    proto: ClassVar[Proto]
    names: ClassVar[tuple[str, ...]]  # printed state names, by state number
    active: ClassVar[frozenset[int]]  # states counted in ActiveConn
    established: ClassVar[int] = -1  # reaching it marks the controlling template ASSURED

    def may_schedule(self, pkt: Packet, sysctl: Sysctls) -> bool:
        """May this packet, finding no entry, create a connection?"""
        raise NotImplementedError

    def is_new_conn(self, pkt: Packet) -> bool:
        """Does this packet start a new connection (conn_reuse_mode looks at it)?"""
        return False

    def reusable(self, state: int, no_output: bool, reuse_mode: int) -> bool:
        """May an uncontrolled entry in `state` be replaced by a new connection (conn_reuse_mode)?"""
        return False

    def next_state(self, state: int, pkt: Packet, direction: Direction, sysctl: Sysctls) -> int:
        raise NotImplementedError

    def timeouts(self, t: Timeouts) -> tuple[int, ...]:
        """Timeout in seconds of each state, with the `--set` values applied."""
        raise NotImplementedError


# Persistence templates have their own two states.
TEMPLATE_NAMES = ("NONE", "ASSURED")
TPL_NONE = 0
TPL_ASSURED = 1


def get_protocol(proto: int) -> Protocol | None:
    """The state machine of an IP protocol IPVS balances, or None (the packet is not IPVS's business)."""
    return PROTOCOLS.get(proto)


# Imported last: the protocol modules subclass Protocol above.
from pylvs.core.proto.sctp import SCTP  # noqa: E402
from pylvs.core.proto.tcp import TCP  # noqa: E402
from pylvs.core.proto.udp import UDP  # noqa: E402

PROTOCOLS: dict[int, Protocol] = {Proto.TCP: TCP(), Proto.UDP: UDP(), Proto.SCTP: SCTP()}
