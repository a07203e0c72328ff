"""The few places the packet engine touches the core's packet API, kept in one module.

The core decides (scheduling, connection table, states, counters); the engine only asks and obeys.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pylvs.core import packet as corepkt
from pylvs.core.conn import make_key, make_key_v4, set_active
from pylvs.core.director import Director
from pylvs.core.proto import Protocol, get_protocol
from pylvs.core.proto.tcp import ESTABLISHED as TCP_ESTABLISHED
from pylvs.core.types import IPAddr, Packet, Proto, ServiceKey

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


ADDR_CACHE: dict[bytes, ipaddress.IPv4Address] = {}  # hot loops read it before calling ip4


def ip4(b: bytes) -> ipaddress.IPv4Address:
    """bytes -> IPv4Address, cached (a handful of VIPs and servers, many clients: bounded)."""
    a = ADDR_CACHE.get(b)
    if a is None:
        if len(ADDR_CACHE) > 65536:
            ADDR_CACHE.clear()
        a = ADDR_CACHE[b] = ipaddress.IPv4Address(b)
    return a


# -- adoption: connections the kernel already forwards, decided by an earlier pylvsd ----------------


def find_service(director: Director, proto: int, vaddr: bytes, vport: int, fwmark: int) -> Any:
    table = director.services
    if fwmark:
        svc = table.get(ServiceKey.for_fwmark(fwmark))
        if svc is not None:
            return svc
    v = ip4(vaddr)
    return table.get(ServiceKey.for_addr(Proto(proto), v, vport)) or table.get(
        ServiceKey.for_addr(Proto(proto), v, 0)
    )


def adopt(
    director: Director,
    proto: int,
    caddr: bytes,
    cport: int,
    vaddr: bytes,
    vport: int,
    fwmark: int,
    raddr: bytes,
    rport: int,
    core_state: int,
    now: float,
) -> Conn | None:
    """An entry for a connection the kernel already forwards to (raddr, rport): found, or made
    without scheduling (pylvsd restarted; the decision was taken by the previous one)."""
    existing = director.lookup_in(proto, ip4(caddr), cport, ip4(vaddr), vport)
    if existing is not None and not existing.dead:
        return existing
    svc = find_service(director, proto, vaddr, vport, fwmark)
    if svc is None:
        return None
    ra = ip4(raddr)
    dest = next((d for d in svc.dests if d.addr == ra and d.port in (rport, 0)), None)
    if dest is None:
        return None
    key = make_key(proto, ip4(caddr), cport, ip4(vaddr), vport)
    p = get_protocol(proto)
    return _new_entry(director, svc, dest, key, rport, fwmark, p, core_state if proto == 6 else 0, now)


def _new_entry(
    director: Director,
    svc: Any,
    dest: Any,
    key: int,
    rport: int,
    fwmark: int,
    proto: Protocol | None,
    core_state: int,
    now: float,
) -> Conn:
    """A new entry to `dest` not scheduled here (the kernel forwards it already), counted as the
    service's new connection, in `core_state`."""
    conn = corepkt.new_conn(director, key, dest, rport, 0, fwmark)
    dest.stats.conns += 1
    svc.stats.conns += 1
    director.services.tot_stats.conns += 1
    if proto is not None:
        _enter(director, conn, proto, core_state, now)
    else:
        director.conns.arm(conn, now)
    return conn


def _enter(director: Director, conn: Conn, proto: Protocol, core_state: int, now: float) -> None:
    """The entry is in `core_state`: ActiveConn/InActConn, the state's timeout, its timer."""
    conn.state = core_state
    set_active(conn, core_state in proto.active)
    conn.timeout = director.state_timeouts(proto)[core_state]
    director.conns.arm(conn, now)


def keeps_entry(director: Director, conn: Conn) -> bool:
    """A new TCP connection's SYN found `conn` for its flow: True when IPVS keeps using that entry
    (conn_reuse_mode, expire_nodest_conn); False when it schedules afresh, the old entry freed."""
    proto = get_protocol(6)
    assert proto is not None
    return corepkt.reuse_entry(director, proto, conn) is not None


_TCP = get_protocol(6)


def adopt_decided(
    director: Director,
    svc: Any,
    dest: Any,
    caddr: int,
    cport: int,
    vaddr: int,
    vport: int,
    rport: int,
    core_state: int,
    now: float,
) -> Conn:
    """adopt() for a TCP connection over IPv4 whose service and server are known (decided ahead by
    the core's scheduler, set up by the kernel): no lookups, the same entry and counters."""
    key = make_key_v4(6, caddr, cport, vaddr, vport)
    return _new_entry(director, svc, dest, key, rport, 0, _TCP, core_state, now)


def enter_state(director: Director, conn: Conn, core_state: int, now: float) -> None:
    """A TCP entry the kernel stepped with the core's own table (offload.py) is now in
    `core_state`: ActiveConn/InActConn, the state's timeout and the entry's timer, as the steps
    that led there would have left them. For entries without a persistence template (a step to
    ESTABLISHED would otherwise assure it)."""
    assert _TCP is not None
    _enter(director, conn, _TCP, core_state, now)
