"""Where the fast path talks to the core: conntrack's view of a kernel-forwarded connection turned
into the core's packet API (synthetic packets carrying the TCP flags of each state change), counters
added to the right stats, and adoption of connections that outlived a previous pylvsd.

The core stays the only place that decides: a new connection is scheduled by `process_in` on its
first packet; afterwards the kernel forwards, and these helpers keep the core's entry (state,
ActiveConn/InActConn, timer, byte and packet counters) in step with what the kernel saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pylvs.core.director import Director
from pylvs.core.proto import tcp as coretcp
from pylvs.core.types import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Packet, Proto
from pylvs.engines.packet.coreapi import ip4
from pylvs.netlink import conntrack as ct

Conn = Any  # pylvs.core.conn.Connection

# conntrack TCP state -> (direction, flags) of the packet that moved conntrack there.
# FIN_WAIT is entered by the first FIN of either side; we say the client's (the common case for
# HTTP/1.0 servers is the reverse, but the core's timeouts for both orders are the same).
CT_TO_PACKET: dict[int, tuple[str, int]] = {
    ct.CT_SYN_RECV: ("out", TCP_SYN | TCP_ACK),
    ct.CT_ESTABLISHED: ("in", TCP_ACK),
    ct.CT_FIN_WAIT: ("in", TCP_FIN | TCP_ACK),
    ct.CT_CLOSE_WAIT: ("out", TCP_ACK),
    ct.CT_LAST_ACK: ("out", TCP_FIN | TCP_ACK),
    ct.CT_TIME_WAIT: ("in", TCP_ACK),
    ct.CT_CLOSE: ("in", TCP_RST),
}
# conntrack's TCP states in the order a connection goes through them, and the ones among them whose
# packet moves the core (SYN_RECV, CLOSE_WAIT and TIME_WAIT leave it where the one before put it).
_ORDER = {
    ct.CT_SYN_SENT: 0,
    ct.CT_SYN_RECV: 1,
    ct.CT_ESTABLISHED: 2,
    ct.CT_FIN_WAIT: 3,
    ct.CT_CLOSE_WAIT: 4,
    ct.CT_LAST_ACK: 5,
    ct.CT_TIME_WAIT: 6,
}
_STEPS = (ct.CT_ESTABLISHED, ct.CT_FIN_WAIT, ct.CT_LAST_ACK)
# The kernel does not send us events of the others (conntrack.event_filter): three events of six
# per connection. When a later state shows up (an event, a dump, the closing GET), the core is taken
# through the steps it missed first (see ct_state_changed).
UNNEEDED_EVENTS = (ct.CT_SYN_RECV, ct.CT_CLOSE_WAIT, ct.CT_TIME_WAIT)
# conntrack states whose packet leaves the core where it is once it reached this state.
_SETTLED = {ct.CT_TIME_WAIT: coretcp.TIME_WAIT, ct.CT_CLOSE_WAIT: coretcp.CLOSE_WAIT}
# conntrack TCP state -> the core's state for an adopted entry.
CT_TO_CORE = {
    ct.CT_SYN_SENT: coretcp.SYN_RECV,
    ct.CT_SYN_RECV: coretcp.SYN_RECV,
    ct.CT_ESTABLISHED: coretcp.ESTABLISHED,
    ct.CT_FIN_WAIT: coretcp.FIN_WAIT,
    ct.CT_CLOSE_WAIT: coretcp.CLOSE_WAIT,
    ct.CT_LAST_ACK: coretcp.LAST_ACK,
    ct.CT_TIME_WAIT: coretcp.TIME_WAIT,
    ct.CT_CLOSE: coretcp.CLOSE,
}


@dataclass(slots=True)
class Flow:
    """One kernel-forwarded connection as the fast path follows it."""

    conn: Conn
    proto: int
    caddr: bytes
    cport: int
    vaddr: bytes
    vport: int
    ct_state: int = -1
    # What the core's counters already hold for this flow (the first packet, synthetic packets,
    # earlier syncs); the kernel's counters minus these are added on the next sync.
    in_pkts: int = 0
    in_bytes: int = 0
    out_pkts: int = 0
    out_bytes: int = 0
    replied: bool = False
    final: bool = False  # counters synced after the connection closed: no dump needed any more
    left_open: float = 0.0  # when the periodic sync first found it no longer open
    reaped: float = 0.0  # when a walk of conntrack's table (which removes expired entries) passed it
    asked: float = 0.0  # when a lookup by its tuple found nothing (its DESTROY may still come)


def synthetic(flow: Flow, direction: str, flags: int) -> Packet:
    if direction == "in":
        return Packet(
            Proto(flow.proto), ip4(flow.caddr), flow.cport, ip4(flow.vaddr), flow.vport, tcp_flags=flags
        )
    c = flow.conn
    return Packet(Proto(flow.proto), c.daddr, c.dport, ip4(flow.caddr), flow.cport, tcp_flags=flags)


def feed(director: Director, flow: Flow, direction: str, flags: int, now: float) -> None:
    """Give the core one synthetic packet of `flow` (counted: see Flow)."""
    conn = flow.conn
    if conn is None or conn.dead:
        return
    if flow.proto == 6:  # the core's entry points for a held entry: the same steps, no Packet
        if direction == "in":
            director.process_in_tcp(conn, 0, flags, now)
            flow.in_pkts += 1
        else:
            director.process_out_tcp(conn, 0, flags, now)
            flow.out_pkts += 1
        return
    pkt = synthetic(flow, direction, flags)
    if direction == "in":
        director.process_in(pkt, now)
        flow.in_pkts += 1
    else:
        director.process_out(conn, pkt, now)
        flow.out_pkts += 1


def ct_state_changed(director: Director, flow: Flow, state: int, now: float) -> None:
    """conntrack moved a TCP connection to `state`: the core sees the packet that did it, after the
    packets of the steps in between if their events did not come (filtered, or lost to overruns)."""
    old = flow.ct_state
    if state == old or state < 0:
        return
    flow.ct_state = state
    missed = _MISSED.get((old, state))
    if missed is None:
        missed = _MISSED[(old, state)] = _missed_steps(old, state)
    for direction, flags in missed:
        feed(director, flow, direction, flags, now)
    last = CT_TO_PACKET.get(state)
    if last is None:
        return
    settled = _SETTLED.get(state)
    if settled is not None and flow.conn is not None and flow.conn.state == settled:
        return  # e.g. TIME_WAIT after LAST_ACK: the core is there already, nothing to move
    feed(director, flow, last[0], last[1], now)


# (conntrack state the core last saw, new state) -> the packets of the steps in between
_MISSED: dict[tuple[int, int], tuple[tuple[str, int], ...]] = {}


def _missed_steps(old: int, state: int) -> tuple[tuple[str, int], ...]:
    before = _ORDER.get(old, 1)  # -1: a flow we scheduled, the core in SYN_RECV
    after = _ORDER.get(state, -1)
    return tuple(CT_TO_PACKET[m] for m in _STEPS if before < _ORDER[m] < after)


def add_counters(director: Director, flow: Flow, e: ct.CtEntry, now: float) -> bool:
    """Add what the kernel counted since the last sync; True if the connection moved packets."""
    conn = flow.conn
    dp = max(0, e.pkts_orig - flow.in_pkts)
    db = max(0, e.bytes_orig - flow.in_bytes)
    rp = max(0, e.pkts_reply - flow.out_pkts)
    rb = max(0, e.bytes_reply - flow.out_bytes)
    flow.in_pkts += dp
    flow.in_bytes += db
    flow.out_pkts += rp
    flow.out_bytes += rb
    if not (dp or rp or db or rb):
        return False
    if conn is not None:
        # Counted even when the core's entry has ended: a client reusing the port finds the
        # core's TIME_WAIT entry and is scheduled afresh (the old entry expired) before the old
        # conntrack entry's DESTROY, with its last counters, is read.
        dest = conn.dest
        if dest.available:
            for st in (dest.stats, dest.service.stats, director.services.tot_stats):
                st.inpkts += dp
                st.inbytes += db
                st.outpkts += rp
                st.outbytes += rb
        if not conn.dead:
            director.conns.arm(conn, now)  # traffic keeps the entry alive, as each packet would
    return True


def add_packet_counts(director: Director, conn: Conn, pkts: int, nbytes: int, now: float) -> None:
    """Client->server packets the kernel forwarded for a DR flow (nft set element counters)."""
    if conn is None or conn.dead:
        return
    dest = conn.dest
    if dest.available:
        for st in (dest.stats, dest.service.stats, director.services.tot_stats):
            st.inpkts += pkts
            st.inbytes += nbytes
    director.conns.arm(conn, now)
