"""The few places the packet engine touches the core's packet API, kept in one module.

The core decides (scheduling, connection table, states, counters); the engine only asks and obeys.
"""

from __future__ import annotations

from typing import Any

from pylvs.core.director import Director
from pylvs.core.proto.tcp import ESTABLISHED as TCP_ESTABLISHED
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


def find_in(
    director: Director, proto: Proto, caddr: IPAddr, cport: int, vaddr: IPAddr, vport: int
) -> Conn | None:
    return director.lookup_in(proto, caddr, cport, vaddr, vport)


def note_out(director: Director, conn: Conn, pkt: Packet, now: float) -> None:
    director.process_out(conn, pkt, now)


def steady(conn: Conn, proto: int) -> bool:
    """True when the next packets of `conn` without SYN/FIN/RST cannot change its state: TCP in
    ESTABLISHED, or UDP. The engine may then skip the core for them (see account())."""
    if getattr(conn, "dead", False) or not hasattr(conn, "state"):
        return False
    if proto == 6:
        return bool(conn.state == TCP_ESTABLISHED)
    return proto == 17


def stats_of(director: Director, conn: Conn) -> tuple[Any, ...]:
    """The counters process_in/out add a packet to (server, service, total); for a steady
    connection the engine adds to them itself and re-arms the entry's timer (conns.arm)."""
    dest = conn.dest
    return (dest.stats, dest.service.stats, director.services.tot_stats)


def conn_alive(conn: Conn) -> bool:
    """False once the core has expired the entry (its FULLNAT port can go back to the pool)."""
    return not getattr(conn, "dead", False)
