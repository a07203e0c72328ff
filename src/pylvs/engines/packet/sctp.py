"""SCTP on the packet path: the first chunk the core's state machine needs, and the CRC32c checksum.

An SCTP packet is a 12-byte common header (source port, destination port, verification tag,
checksum) and chunks (type, flags, length, value; each padded to 4 bytes). The checksum is CRC32c
(Castagnoli) over the whole SCTP packet with the checksum field zero, stored little-endian (RFC 9260
appendix A). It covers no pseudo-header: changing addresses leaves it valid, changing ports does not.

CHECKSUM_PARTIAL: an offloading sender (Linux SCTP over a device with NETIF_F_SCTP_CRC, e.g. veth)
leaves the CRC to the device and the virtio header says only NEEDS_CSUM with csum_offset 8; the
header cannot say "CRC32c, not the Internet checksum", so a frame sent back with that flag could be
finished with the wrong algorithm by the next device. The engine therefore finishes such a frame's
CRC itself on arrival and clears the flag (`accept`).

GSO: the virtio header has no SCTP GSO type, so the kernel fails the read of an SCTP GSO frame on a
packet socket with a virtio header (the frame is lost, the read returns EINVAL). Such frames come only
from a local SCTP sender on a veth (tx-sctp-segmentation), never from a wire (there is no SCTP GRO);
a frame that claims to be GSO anyway is refused here.
"""

from __future__ import annotations

import struct

import google_crc32c

from pylvs.core.proto.sctp import ESTABLISHED
from pylvs.engines.packet.frames import F_NEEDS_CSUM, NO_VNET, eth_header, ipv4_header

IPPROTO_SCTP = 132
COMMON = 12  # the common header's length
CHECK_OFF = 8  # the checksum field's offset in it
ZERO4 = bytes(4)

# Chunk types (RFC 9260 section 3.2)
DATA, INIT, INIT_ACK, SACK = 0, 1, 2, 3
HEARTBEAT, HEARTBEAT_ACK, ABORT, SHUTDOWN, SHUTDOWN_ACK = 4, 5, 6, 7, 8
ERROR, COOKIE_ECHO, COOKIE_ACK, SHUTDOWN_COMPLETE = 9, 10, 11, 14
T_BIT = 0x01  # ABORT / SHUTDOWN_COMPLETE flag: the verification tag is the receiver's own (reflected)

# First chunks that may move an association's state (everything else is the DATA event, which
# leaves ESTABLISHED as it is): a steady association's packet with one of these goes to the core.
MOVING_CHUNKS = frozenset(
    {INIT, INIT_ACK, ABORT, SHUTDOWN, SHUTDOWN_ACK, ERROR, COOKIE_ECHO, COOKIE_ACK, SHUTDOWN_COMPLETE}
)

_HHI = struct.Struct("!HHI")
_LE32 = struct.Struct("<I")
_CHUNK = struct.Struct("!BBH")


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32c of `data` as SCTP computes it (initial value and final complement included)."""
    return int(google_crc32c.value(bytes(data)))


def compute(f: bytes | bytearray, l4: int, end: int) -> int:
    """The checksum the SCTP packet f[l4:end] should carry (its checksum field taken as zero)."""
    crc = google_crc32c.value(bytes(f[l4 : l4 + CHECK_OFF]) + ZERO4)
    return int(google_crc32c.extend(crc, bytes(f[l4 + COMMON : end])))


def stored(f: bytes | bytearray, l4: int) -> int:
    """The checksum the SCTP packet at l4 carries."""
    return int(_LE32.unpack_from(f, l4 + CHECK_OFF)[0])


def store(f: bytearray, l4: int, value: int) -> None:
    _LE32.pack_into(f, l4 + CHECK_OFF, value)


def checksum_ok(f: bytes | bytearray, l4: int, end: int) -> bool:
    return stored(f, l4) == compute(f, l4, end)


def seal(pkt: bytearray) -> bytearray:
    """Put the right checksum into the SCTP packet `pkt` (offset 0, to its end); returns it."""
    store(pkt, 0, compute(pkt, 0, len(pkt)))
    return pkt


def steady(conn: object) -> bool:
    """True when the association is ESTABLISHED: its next DATA-event packets cannot change its state,
    so the engine's fast path may count them and re-arm the timer itself (see Forwarder._fast)."""
    return getattr(conn, "state", None) == ESTABLISHED and not getattr(conn, "dead", False)


def accept(f: bytearray, l4: int, end: int) -> bool:
    """Make an SCTP frame fit to forward: the common header and a chunk header within the frame, no
    GSO, and a CHECKSUM_PARTIAL CRC finished here (the flag cleared, see the module doc). False: leave
    it (an SCTP packet without a chunk means nothing to either end)."""
    if end < l4 + COMMON + 4 or end > len(f) or f[1]:  # truncated, or a gso_type
        return False
    if f[0] & F_NEEDS_CSUM:
        store(f, l4, compute(f, l4, end))
        f[0] &= ~F_NEEDS_CSUM & 0xFF
    return True


def first_chunk(f: bytes | bytearray, l4: int, end: int) -> tuple[int, bool]:
    """(type of the first chunk, or -1 when there is none; whether a COOKIE_ECHO or COOKIE_ACK first
    chunk is followed by an ABORT chunk, which the state machine takes as ABORT)."""
    c = l4 + COMMON
    if c + 4 > end:
        return -1, False
    kind, _flags, length = _CHUNK.unpack_from(f, c)
    if kind != COOKIE_ECHO and kind != COOKIE_ACK:
        return kind, False
    nxt = c + ((length + 3) & ~3)
    return kind, length >= 4 and nxt + 4 <= end and f[nxt] == ABORT


def port_delta(delta: int, n: int) -> int:
    """What a change of the first 4 bytes by XOR `delta` does to the CRC32c of an n-byte packet.

    CRC32c is affine over GF(2): crc(m) = L(m) ^ c(n) for messages of one length n, so
    crc(m ^ d) = crc(m) ^ crc(d) ^ crc(0 * n). The packet itself is not read, only its length: the
    update costs the same for any size, and a connection's (delta, length) pairs repeat, so they are
    cached."""
    key = (delta, n)
    v = _DELTAS.get(key)
    if v is None:
        if len(_DELTAS) >= 4096:
            _DELTAS.clear()
        zeros = bytes(n - 4)
        v = _DELTAS[key] = int(
            google_crc32c.value(delta.to_bytes(4, "big") + zeros) ^ google_crc32c.value(ZERO4 + zeros)
        )
    return v


_DELTAS: dict[tuple[int, int], int] = {}
_PORTS = struct.Struct("!I")


def rewrite_ports(f: bytearray, l4: int, end: int, sport: int | None, dport: int | None) -> None:
    """Change the ports of the SCTP packet f[l4:end] and update its checksum for that change alone
    (port_delta), so a wrong checksum stays wrong by the same error and the next hop still drops a
    damaged packet instead of the director laundering it. Addresses are none of the CRC's business."""
    (old,) = _PORTS.unpack_from(f, l4)
    new = ((old >> 16) if sport is None else sport) << 16 | ((old & 0xFFFF) if dport is None else dport)
    if f[0] & F_NEEDS_CSUM:  # not finished on arrival (accept() was not called): finish it now
        _PORTS.pack_into(f, l4, new)
        store(f, l4, compute(f, l4, end))
        f[0] &= ~F_NEEDS_CSUM & 0xFF
        return
    if new == old:
        return
    _PORTS.pack_into(f, l4, new)
    store(f, l4, stored(f, l4) ^ port_delta(old ^ new, end - l4))


def ootb_reply(sctp: bytes | bytearray) -> bytearray | None:
    """What a host's SCTP stack answers to an "out of the blue" packet (no association; RFC 9260
    section 8.4) as an SCTP packet, or None when it stays silent: an ABORT (with the T bit and the
    packet's own tag, or the INIT's initiate tag) for most, SHUTDOWN_COMPLETE (T bit) for a
    SHUTDOWN_ACK, nothing for ABORT, SHUTDOWN_COMPLETE, COOKIE_ECHO, COOKIE_ACK and ERROR packets."""
    if len(sctp) < COMMON:
        return None
    sport, dport, vtag = _HHI.unpack_from(sctp, 0)
    kinds = []
    c = COMMON
    while c + 4 <= len(sctp):
        kind, _fl, length = _CHUNK.unpack_from(sctp, c)
        kinds.append(kind)
        if length < 4:
            break
        c += (length + 3) & ~3
    # a COOKIE_ECHO's cookie was signed by another host: a stack finds it invalid and stays silent
    silent = (ABORT, SHUTDOWN_COMPLETE, COOKIE_ECHO, COOKIE_ACK, ERROR)
    if not kinds or kinds[0] in silent or ABORT in kinds:
        return None
    flags = T_BIT
    answer = ABORT
    if kinds[0] == INIT:
        if len(sctp) < COMMON + 8:
            return None
        vtag = struct.unpack_from("!I", sctp, COMMON + 4)[0]  # the initiate tag
        flags = 0
    elif kinds[0] == SHUTDOWN_ACK:
        answer = SHUTDOWN_COMPLETE
    pkt = bytearray(_HHI.pack(dport, sport, vtag) + ZERO4 + _CHUNK.pack(answer, flags, 4))
    return seal(pkt)


def ootb_frame(src_mac: bytes, dst_mac: bytes, orig_ip: bytes | bytearray) -> bytes | None:
    """ootb_reply() for the IPv4 packet `orig_ip`, as a whole frame back to its sender."""
    ihl = (orig_ip[0] & 0xF) * 4
    total = (orig_ip[2] << 8) | orig_ip[3]
    reply = ootb_reply(orig_ip[ihl:total])
    if reply is None:
        return None
    src, dst = bytes(orig_ip[16:20]), bytes(orig_ip[12:16])
    ip = ipv4_header(src, dst, IPPROTO_SCTP, len(reply))
    return NO_VNET + eth_header(dst_mac, src_mac, 0x0800) + bytes(ip) + bytes(reply)
