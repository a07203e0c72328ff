"""Frame layout and builders: virtio-net header, Ethernet, ARP, IPv4, ICMP, IP-in-IP, TCP segmentation.

Every frame the engine reads or writes starts with the 10-byte virtio_net_hdr that PACKET_VNET_HDR
adds (host byte order), then the Ethernet header; offsets below are from the start of that buffer.
"""

from __future__ import annotations

import struct

from pylvs.engines.packet.csum import checksum, fold, get16, pseudo_sum_v4, put16, sum16

VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_LEN = 10
ETH = VNET_LEN  # Ethernet header offset
IP = ETH + 14  # IP header offset (no VLAN tags: the engine skips tagged frames)

F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6
NO_VNET = bytes(VNET_LEN)

IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17

IP_DF = 0x4000


def eth_header(dst: bytes, src: bytes, ethertype: int) -> bytes:
    return dst + src + struct.pack("!H", ethertype)


def arp_request(src_mac: bytes, src_ip: bytes, target_ip: bytes) -> bytes:
    """A whole frame (virtio header included) asking who has `target_ip`."""
    body = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + src_mac + src_ip + bytes(6) + target_ip
    return NO_VNET + eth_header(BROADCAST, src_mac, ETH_P_ARP) + body + bytes(18)


def parse_arp(f: bytes | bytearray) -> tuple[int, bytes, bytes, bytes] | None:
    """(opcode, sender MAC, sender IP, target IP) of an Ethernet/IPv4 ARP frame, else None."""
    a = IP
    if len(f) < a + 28 or f[a : a + 6] != b"\x00\x01\x08\x00\x06\x04":
        return None
    return (
        get16(bytearray(f[a + 6 : a + 8]), 0),
        bytes(f[a + 8 : a + 14]),
        bytes(f[a + 14 : a + 18]),
        bytes(f[a + 24 : a + 28]),
    )


def ipv4_header(
    src: bytes,
    dst: bytes,
    proto: int,
    payload_len: int,
    ident: int = 0,
    df: bool = True,
    ttl: int = 64,
    tos: int = 0,
) -> bytearray:
    h = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            tos,
            20 + payload_len,
            ident & 0xFFFF,
            IP_DF if df else 0,
            ttl,
            proto,
            0,
            src,
            dst,
        )
    )
    put16(h, 10, checksum(h))
    return h


def icmp_error(
    src_mac: bytes,
    dst_mac: bytes,
    src_ip: bytes,
    orig_ip: bytes | bytearray,
    icmp_type: int,
    code: int,
    info: int = 0,
) -> bytes:
    """A frame carrying an ICMP error about `orig_ip` (an IPv4 packet) back to its sender."""
    ihl = (orig_ip[0] & 0xF) * 4
    quoted = bytes(orig_ip[: ihl + 8])
    icmp = bytearray(struct.pack("!BBHI", icmp_type, code, 0, info) + quoted)
    put16(icmp, 2, checksum(icmp))
    ip = ipv4_header(src_ip, bytes(orig_ip[12:16]), IPPROTO_ICMP, len(icmp), df=False)
    return NO_VNET + eth_header(dst_mac, src_mac, ETH_P_IP) + bytes(ip) + bytes(icmp)


def complete_checksum(f: bytearray, csum_start: int, csum_offset: int, end: int) -> None:
    """Finish a CHECKSUM_PARTIAL frame: sum from csum_start (frame-relative, after the virtio header)
    to `end`, the seed already in place, and store the complement."""
    start = VNET_LEN + csum_start
    pos = start + csum_offset
    c = checksum(memoryview(f)[start:end])
    if c == 0 and f[IP + 9] == IPPROTO_UDP:
        c = 0xFFFF
    put16(f, pos, c)


def l4_full_checksum(ip_hdr: bytes | bytearray, l4: bytearray, proto: int, check_off: int) -> None:
    """Compute the L4 checksum of `l4` (field at check_off zeroed first) for the IPv4 header ip_hdr."""
    put16(l4, check_off, 0)
    s = pseudo_sum_v4(bytes(ip_hdr[12:16]), bytes(ip_hdr[16:20]), proto, len(l4))
    c = ~fold(sum16(l4) + s) & 0xFFFF
    if c == 0 and proto == IPPROTO_UDP:
        c = 0xFFFF
    put16(l4, check_off, c)


def segment_ipv4(pkt: bytes | bytearray, gso_type: int, gso_size: int) -> list[bytearray]:
    """Cut a TCP (or UDP_L4) super-packet (an IPv4 packet, no link header) into finished packets of at
    most gso_size payload bytes each, checksums computed, as the kernel's GSO would."""
    ihl = (pkt[0] & 0xF) * 4
    total = get16(bytearray(pkt[2:4]), 0)
    ident = get16(bytearray(pkt[4:6]), 0)
    proto = pkt[9]
    out: list[bytearray] = []
    if proto == IPPROTO_TCP and gso_type & 0x7F in (GSO_TCPV4,):
        thl = (pkt[ihl + 12] >> 4) * 4
        hdr_end = ihl + thl
        payload = memoryview(pkt)[hdr_end:total]
        seq = struct.unpack_from("!I", pkt, ihl + 4)[0]
        flags = pkt[ihl + 13]
        n = len(payload)
        off = 0
        i = 0
        while off < n or (n == 0 and i == 0):
            chunk = payload[off : off + gso_size]
            seg = bytearray(pkt[:hdr_end]) + chunk
            put16(seg, 2, len(seg))
            put16(seg, 4, (ident + i) & 0xFFFF)
            put16(seg, 10, 0)
            put16(seg, 10, checksum(seg[:ihl]))
            struct.pack_into("!I", seg, ihl + 4, (seq + off) & 0xFFFFFFFF)
            last = off + gso_size >= n
            f = flags
            if not last:
                f &= ~0x09  # FIN and PSH only on the last segment
            if i:
                f &= ~0x80  # CWR only on the first
            seg[ihl + 13] = f
            tcp = seg[ihl:]
            l4_full_checksum(seg, tcp, IPPROTO_TCP, 16)
            seg[ihl:] = tcp
            out.append(seg)
            off += gso_size
            i += 1
            if n == 0:
                break
        return out
    if proto == IPPROTO_UDP and gso_type == GSO_UDP_L4:
        payload = memoryview(pkt)[ihl + 8 : total]
        for i, off in enumerate(range(0, len(payload), gso_size)):
            chunk = payload[off : off + gso_size]
            seg = bytearray(pkt[: ihl + 8]) + chunk
            put16(seg, 2, len(seg))
            put16(seg, 4, (ident + i) & 0xFFFF)
            put16(seg, 10, 0)
            put16(seg, 10, checksum(seg[:ihl]))
            udp = seg[ihl:]
            put16(udp, 4, len(udp))
            l4_full_checksum(seg, udp, IPPROTO_UDP, 6)
            seg[ihl:] = udp
            out.append(seg)
        return out
    return out


IP6_HLEN = 40
IPPROTO_ICMPV6 = 58


def ndp_solicit(src_mac: bytes, src_ip: bytes, target: bytes) -> bytes:
    """A whole frame (virtio header included): IPv6 neighbour solicitation for `target`, sent to its
    solicited-node multicast address, with our MAC as the source link-layer option."""
    dst_ip = bytes.fromhex("ff0200000000000000000001ff") + target[13:]
    dst_mac = b"\x33\x33" + dst_ip[12:]
    icmp = bytearray(struct.pack("!BBHI", 135, 0, 0, 0) + target + b"\x01\x01" + src_mac)
    s = sum16(src_ip + dst_ip) + len(icmp) + IPPROTO_ICMPV6
    put16(icmp, 2, ~fold(sum16(icmp) + s) & 0xFFFF)
    ip6 = struct.pack("!IHBB", 0x60000000, len(icmp), IPPROTO_ICMPV6, 255) + src_ip + dst_ip
    return NO_VNET + eth_header(dst_mac, src_mac, ETH_P_IPV6) + ip6 + bytes(icmp)


def parse_ndp(f: bytes | bytearray) -> tuple[bytes, bytes] | None:
    """(address, MAC) announced by an IPv6 neighbour advertisement (target + target link-layer
    option) or solicitation (source + source link-layer option) frame, else None."""
    if len(f) < IP + IP6_HLEN + 24 or f[IP + 6] != IPPROTO_ICMPV6:
        return None
    icmp = IP + IP6_HLEN
    kind = f[icmp]
    if kind not in (135, 136):
        return None
    addr = bytes(f[icmp + 8 : icmp + 24]) if kind == 136 else bytes(f[IP + 8 : IP + 24])
    opt = icmp + 24
    want = 2 if kind == 136 else 1
    while opt + 8 <= len(f):
        otype, olen = f[opt], f[opt + 1]
        if olen == 0:
            break
        if otype == want:
            return addr, bytes(f[opt + 2 : opt + 8])
        opt += olen * 8
    return None


def icmp6_error(
    src_mac: bytes, dst_mac: bytes, src_ip: bytes, orig: bytes | bytearray, icmp_type: int, code: int
) -> bytes:
    """A frame carrying an ICMPv6 error about the IPv6 packet `orig` back to its sender (as much of
    the packet quoted as keeps the error within the IPv6 minimum MTU)."""
    quoted = bytes(orig[: 1280 - 40 - 8])
    dst_ip = bytes(orig[8:24])
    icmp = bytearray(struct.pack("!BBHI", icmp_type, code, 0, 0) + quoted)
    s = sum16(src_ip + dst_ip) + len(icmp) + IPPROTO_ICMPV6
    put16(icmp, 2, ~fold(sum16(icmp) + s) & 0xFFFF)
    ip6 = struct.pack("!IHBB", 0x60000000, len(icmp), IPPROTO_ICMPV6, 64) + src_ip + dst_ip
    return NO_VNET + eth_header(dst_mac, src_mac, ETH_P_IPV6) + ip6 + bytes(icmp)


def tcp_reset(src_mac: bytes, dst_mac: bytes, orig_ip: bytes | bytearray) -> bytes | None:
    """The RST a host's stack sends for a TCP segment (IPv4) that reaches no socket (RFC 793 reset
    generation), as a frame back to the sender; None for a segment that itself carries RST."""
    ihl = (orig_ip[0] & 0xF) * 4
    total = (orig_ip[2] << 8) | orig_ip[3]
    sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", orig_ip, ihl)
    if flags & 0x04:
        return None
    seglen = total - ihl - (off >> 4) * 4 + (1 if flags & 0x02 else 0) + (1 if flags & 0x01 else 0)
    if flags & 0x10:
        rseq, rack, rflags = ack, 0, 0x04
    else:
        rseq, rack, rflags = 0, (seq + seglen) & 0xFFFFFFFF, 0x14
    tcp = bytearray(struct.pack("!HHIIBBHHH", dport, sport, rseq, rack, 0x50, rflags, 0, 0, 0))
    src, dst = bytes(orig_ip[16:20]), bytes(orig_ip[12:16])
    put16(tcp, 16, checksum(tcp, pseudo_sum_v4(src, dst, IPPROTO_TCP, len(tcp))))
    ip = ipv4_header(src, dst, IPPROTO_TCP, len(tcp))
    return NO_VNET + eth_header(dst_mac, src_mac, ETH_P_IP) + bytes(ip) + bytes(tcp)
