"""Socket events turned into the packets the core would have seen.

The proxy terminates TCP, so the core never sees real segments; this module is the one place that
synthesises them: accept = the client's SYN, a successful connect = the server's SYN+ACK and the
client's ACK, relayed bytes = data segments (packets estimated from the bytes), EOF = FIN, reset = RST.
That keeps the connection states, counters and rates of `pylvsadm -Lnc/--stats/--rate` live.
"""

from __future__ import annotations

from typing import Any

from pylvs.core.conn import Connection
from pylvs.core.director import Director
from pylvs.core.packet import Verdict
from pylvs.core.types import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, IPAddr, Packet, Proto

MSS = 1460  # on-the-wire segment size used to estimate packets from relayed bytes
TCP_HDR4, TCP_HDR6 = 40, 60
UDP_HDR4, UDP_HDR6 = 28, 48
SYN_ACK = TCP_SYN | TCP_ACK


def packets_for(nbytes: int) -> int:
    return (nbytes + MSS - 1) // MSS if nbytes > 0 else 1


class Flow:
    """The addresses of one client flow as the core keys it, and its connection entry."""

    __slots__ = ("caddr", "conn", "cport", "fwmark", "hdr", "proto", "vaddr", "vport")

    def __init__(
        self, proto: Proto, caddr: IPAddr, cport: int, vaddr: IPAddr, vport: int, fwmark: int
    ) -> None:
        self.proto = proto
        self.caddr = caddr
        self.cport = cport
        self.vaddr = vaddr
        self.vport = vport
        self.fwmark = fwmark
        v6 = caddr.version == 6
        if proto == Proto.UDP:
            self.hdr = UDP_HDR6 if v6 else UDP_HDR4
        else:
            self.hdr = TCP_HDR6 if v6 else TCP_HDR4
        self.conn: Any = None  # the core's Connection once scheduled

    def inbound(self, flags: int, length: int) -> Packet:
        """A packet from the client to the virtual service."""
        return Packet(self.proto, self.caddr, self.cport, self.vaddr, self.vport, self.fwmark, length, flags)

    def outbound(self, flags: int, length: int) -> Packet:
        """A reply from the real server, as it reaches the director (before NAT)."""
        conn = self.conn
        return Packet(self.proto, conn.daddr, conn.dport, self.caddr, self.cport, 0, length, flags)


def send_in(director: Director, flow: Flow, flags: int, nbytes: int, now: float) -> Verdict:
    """One synthetic client->VS segment (or datagram); returns the core's verdict."""
    return director.process_in(flow.inbound(flags, nbytes + flow.hdr), now)


def send_out(director: Director, flow: Flow, flags: int, nbytes: int, now: float) -> None:
    director.process_out(flow.conn, flow.outbound(flags, nbytes + flow.hdr), now)


def data_in(
    director: Director, flow: Flow, nbytes: int, npkts: int, now: float, flags: int = TCP_ACK
) -> Verdict:
    """Relayed client bytes: one core packet carrying all the bytes (and the flags of the last
    segment: a FIN may ride on it), plus the extra packet count."""
    npkts = max(npkts, 1)
    v = director.process_in(flow.inbound(flags, nbytes + npkts * flow.hdr), now)
    if npkts > 1 and v.conn is not None and v.conn is flow.conn:
        _more_packets(v.conn, npkts - 1, inbound=True, director=director)
    return v


def data_out(
    director: Director, flow: Flow, nbytes: int, npkts: int, now: float, flags: int = TCP_ACK
) -> None:
    npkts = max(npkts, 1)
    director.process_out(flow.conn, flow.outbound(flags, nbytes + npkts * flow.hdr), now)
    if npkts > 1:
        _more_packets(flow.conn, npkts - 1, inbound=False, director=director)


def _more_packets(conn: Connection, n: int, inbound: bool, director: Director) -> None:
    """Packet counters for segments folded into one synthetic packet (bytes are already counted)."""
    dest = conn.dest
    if dest is None:
        return
    for st in (dest.stats, dest.service.stats, director.services.tot_stats):
        if inbound:
            st.inpkts += n
        else:
            st.outpkts += n


__all__ = ["SYN_ACK", "TCP_ACK", "TCP_FIN", "TCP_RST", "TCP_SYN", "Flow", "packets_for"]
