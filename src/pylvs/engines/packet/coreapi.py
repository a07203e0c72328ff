"""The few places the packet engine touches the core's packet API, kept in one module.

The core decides (scheduling, connection table, states, counters); the engine only asks and obeys.
"""

from __future__ import annotations

from typing import Any

from pylvs.core.director import Director
from pylvs.core.types import IPAddr, Packet, Proto

Conn = Any  # pylvs.core.conn.Connection (duck-typed so tests can drive the path with a small fake)


def decide_in(director: Director, pkt: Packet, now: float) -> tuple[str, Conn | None]:
    """The core's verdict on a packet to a virtual service: (action name, connection)."""
    v = director.process_in(pkt, now)
    return v.action.name, v.conn


def find_out(
    director: Director, proto: Proto, raddr: IPAddr, rport: int, caddr: IPAddr, cport: int
) -> Conn | None:
    return director.lookup_out(proto, raddr, rport, caddr, cport)


def note_out(director: Director, conn: Conn, pkt: Packet, now: float) -> None:
    director.process_out(conn, pkt, now)


def conn_alive(conn: Conn) -> bool:
    """False once the core has expired the entry (its FULLNAT port can go back to the pool)."""
    return not getattr(conn, "dead", False)
