"""Address and port rewriting with incremental checksums (RFC 1624), IPv4 and IPv6.

An L4 checksum reaches us in one of two forms: finished (the sender computed it), or as the
CHECKSUM_PARTIAL seed of an offloading sender (veth, NICs), which covers only the pseudo-header and
is finished by the kernel or NIC on the way out. Both are kept right; the IPv4 header checksum is
always finished.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from pylvs.engines.packet import sctp
from pylvs.engines.packet.frames import F_NEEDS_CSUM, IP, IP6_HLEN, IPPROTO_TCP, IPPROTO_UDP

_HH = struct.Struct("!HH")
_H = struct.Struct("!H")
_W8 = struct.Struct("!8H")
_SCTP = sctp.IPPROTO_SCTP


def iplen(f: bytearray) -> int:
    """The IP packet's length (IPv4 total length, or IPv6 payload length plus its header)."""
    if f[IP] >> 4 == 6:
        return ((f[IP + 4] << 8) | f[IP + 5]) + IP6_HLEN
    return (f[IP + 2] << 8) | f[IP + 3]


def _delta16(old: bytes | bytearray, new: bytes) -> int:
    return int(sum(o ^ 0xFFFF for o in _W8.unpack(old)) + sum(_W8.unpack(new)))


def _fold(x: int) -> int:
    x = (x & 0xFFFF) + (x >> 16)
    return (x & 0xFFFF) + (x >> 16)


def rewrite(
    f: bytearray,
    proto: int,
    l4: int,
    saddr: bytes | None,
    sport: int | None,
    daddr: bytes | None,
    dport: int | None,
) -> None:
    """Change addresses/ports of the IP packet at IP, keeping the IPv4 header checksum finished and the
    L4 checksum right in either of its two forms (finished, or a CHECKSUM_PARTIAL seed)."""
    # One's complement deltas (RFC 1624): for each 16-bit word, ~old + new.
    ad = 0
    if f[IP] >> 4 == 6:
        if saddr is not None:
            ad += _delta16(f[IP + 8 : IP + 24], saddr)
            f[IP + 8 : IP + 24] = saddr
        if daddr is not None:
            ad += _delta16(f[IP + 24 : IP + 40], daddr)
            f[IP + 24 : IP + 40] = daddr
        _l4_rewrite(f, proto, l4, ad, sport, dport)
        return
    if saddr is not None:
        o1, o2 = _HH.unpack_from(f, IP + 12)
        n1, n2 = _HH.unpack(saddr)
        ad += (o1 ^ 0xFFFF) + (o2 ^ 0xFFFF) + n1 + n2
        f[IP + 12 : IP + 16] = saddr
    if daddr is not None:
        o1, o2 = _HH.unpack_from(f, IP + 16)
        n1, n2 = _HH.unpack(daddr)
        ad += (o1 ^ 0xFFFF) + (o2 ^ 0xFFFF) + n1 + n2
        f[IP + 16 : IP + 20] = daddr
    (ipc,) = _H.unpack_from(f, IP + 10)
    _H.pack_into(f, IP + 10, _fold((ipc ^ 0xFFFF) + ad) ^ 0xFFFF)
    _l4_rewrite(f, proto, l4, ad, sport, dport)


def _l4_rewrite(f: bytearray, proto: int, l4: int, ad: int, sport: int | None, dport: int | None) -> None:
    """Ports, and the L4 checksum for the address delta `ad` plus the ports' own."""
    if proto == _SCTP:  # CRC32c over the SCTP packet alone: only the ports matter
        sctp.rewrite_ports(f, l4, IP + iplen(f), sport, dport)
        return
    pd = 0
    if sport is not None or dport is not None:
        osp, odp = _HH.unpack_from(f, l4)
        nsp = osp if sport is None else sport
        ndp = odp if dport is None else dport
        pd = (osp ^ 0xFFFF) + (odp ^ 0xFFFF) + nsp + ndp
        _HH.pack_into(f, l4, nsp, ndp)
    co = l4 + (16 if proto == IPPROTO_TCP else 6)
    (check,) = _H.unpack_from(f, co)
    if f[0] & F_NEEDS_CSUM:
        # The seed covers only the pseudo-header; the ports are summed when the checksum is finished.
        _H.pack_into(f, co, _fold(check + ad))
    elif proto == IPPROTO_UDP and check == 0:
        return  # no UDP checksum stays no checksum (IPv4; IPv6 UDP always has one)
    else:
        new = _fold((check ^ 0xFFFF) + ad + pd) ^ 0xFFFF
        if proto == IPPROTO_UDP and new == 0:
            new = 0xFFFF
        _H.pack_into(f, co, new)


class FixedRewrite(NamedTuple):
    """One connection's rewrite with its checksum deltas worked out once (IPv4): the packets of a
    steady connection all change the same addresses and ports from the same values."""

    saddr: bytes | None
    daddr: bytes | None
    ports: bytes | None  # the new source and destination ports, packed
    ad: int  # the addresses' one's complement delta (IPv4 header, and L4 pseudo-header)
    pd: int  # the ports' delta (L4 only)


def _words_delta(old: bytes, new: bytes) -> int:
    o1, o2 = _HH.unpack(old)
    n1, n2 = _HH.unpack(new)
    return int((o1 ^ 0xFFFF) + (o2 ^ 0xFFFF) + n1 + n2)


def fixed_rewrite(
    flow: tuple[int, bytes, int, bytes, int],
    saddr: bytes | None,
    sport: int | None,
    daddr: bytes | None,
    dport: int | None,
) -> FixedRewrite | None:
    """What rewrite() would do to every IPv4 packet of `flow`, precomputed (None for IPv6)."""
    _proto, osa, osp, oda, odp = flow
    if len(osa) != 4:
        return None
    ad = (_words_delta(osa, saddr) if saddr is not None else 0) + (
        _words_delta(oda, daddr) if daddr is not None else 0
    )
    if sport is None and dport is None:
        return FixedRewrite(saddr, daddr, None, ad, 0)
    nsp = osp if sport is None else sport
    ndp = odp if dport is None else dport
    pd = (osp ^ 0xFFFF) + (odp ^ 0xFFFF) + nsp + ndp
    return FixedRewrite(saddr, daddr, _HH.pack(nsp, ndp), ad, pd)


def apply_fixed(f: bytearray, proto: int, l4: int, r: FixedRewrite) -> None:
    """rewrite() with the deltas of fixed_rewrite(): same result, less work per packet."""
    if r.saddr is not None:
        f[IP + 12 : IP + 16] = r.saddr
    if r.daddr is not None:
        f[IP + 16 : IP + 20] = r.daddr
    ad = r.ad
    (ipc,) = _H.unpack_from(f, IP + 10)
    _H.pack_into(f, IP + 10, _fold((ipc ^ 0xFFFF) + ad) ^ 0xFFFF)
    if r.ports is not None:
        f[l4 : l4 + 4] = r.ports
    co = l4 + (16 if proto == IPPROTO_TCP else 6)
    (check,) = _H.unpack_from(f, co)
    if f[0] & F_NEEDS_CSUM:
        _H.pack_into(f, co, _fold(check + ad))
    elif proto == IPPROTO_UDP and check == 0:
        return
    else:
        new = _fold((check ^ 0xFFFF) + ad + r.pd) ^ 0xFFFF
        if proto == IPPROTO_UDP and new == 0:
            new = 0xFFFF
        _H.pack_into(f, co, new)
