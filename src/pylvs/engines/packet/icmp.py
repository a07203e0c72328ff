"""ICMP errors about tracked connections, relayed like IPVS does (ip_vs_in_icmp / ip_vs_out_icmp).

- From the client's side, to the VIP (e.g. fragmentation needed for a reply, or port unreachable):
  the quoted packet is a reply VIP:vport -> CIP:cport. The error goes to the connection's real server:
  unchanged for DR and TUN (the RS sent that reply with the VIP as source), and for NAT with the outer
  destination and the quoted source turned back into RIP:rport.
- From a NAT real server, to the client: the quoted packet is CIP:cport -> RIP:rport; the outer source
  and the quoted destination become the VIP and its port, then the error goes to the client.
FULLNAT connections are not relayed (their errors end at the director).
"""

from __future__ import annotations

import struct

from pylvs.engines.packet.csum import checksum

ERROR_TYPES = frozenset({3, 4, 11, 12})  # unreachable, source quench, time exceeded, parameter problem


def quoted(icmp: bytes | bytearray) -> tuple[int, bytes, int, bytes, int, int] | None:
    """(proto, src, sport, dst, dport, offset of the quoted IP header) of an ICMP error message."""
    if len(icmp) < 8 + 20 + 8 or icmp[0] not in ERROR_TYPES:
        return None
    q = 8
    if icmp[q] >> 4 != 4:
        return None
    ihl = (icmp[q] & 0xF) * 4
    proto = icmp[q + 9]
    if proto not in (6, 17, 132) or len(icmp) < q + ihl + 4:  # TCP, UDP, SCTP: ports first
        return None
    sport, dport = struct.unpack_from("!HH", icmp, q + ihl)
    return proto, bytes(icmp[q + 12 : q + 16]), sport, bytes(icmp[q + 16 : q + 20]), dport, q


def rewrite(
    pkt: bytearray,
    outer_src: bytes | None,
    outer_dst: bytes | None,
    q_src: tuple[bytes, int] | None,
    q_dst: tuple[bytes, int] | None,
) -> None:
    """Rewrite an IPv4 packet carrying an ICMP error (at offset 0 of `pkt`): outer addresses, the quoted
    header's addresses/ports; every checksum recomputed (the quoted L4 checksum is left: it covers
    data the error does not carry, and nobody checks it)."""
    ihl = (pkt[0] & 0xF) * 4
    if outer_src is not None:
        pkt[12:16] = outer_src
    if outer_dst is not None:
        pkt[16:20] = outer_dst
    q = ihl + 8
    qihl = (pkt[q] & 0xF) * 4
    if q_src is not None:
        pkt[q + 12 : q + 16] = q_src[0]
        struct.pack_into("!H", pkt, q + qihl, q_src[1])
    if q_dst is not None:
        pkt[q + 16 : q + 20] = q_dst[0]
        struct.pack_into("!H", pkt, q + qihl + 2, q_dst[1])
    struct.pack_into("!H", pkt, q + 10, 0)
    struct.pack_into("!H", pkt, q + 10, checksum(pkt[q : q + qihl]))
    total = struct.unpack_from("!H", pkt, 2)[0]
    struct.pack_into("!H", pkt, ihl + 2, 0)
    struct.pack_into("!H", pkt, ihl + 2, checksum(pkt[ihl:total]))
    struct.pack_into("!H", pkt, 10, 0)
    struct.pack_into("!H", pkt, 10, checksum(pkt[:ihl]))
