"""Netlink message and attribute packing shared by the nfnetlink clients."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

NLH = struct.Struct("=IHHII")
NFGEN = struct.Struct("!BBH")  # family, version, res_id (big endian)


def attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + bytes((4 - n % 4) % 4)


def nested(kind: int, *parts: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def nfmsg(msg_type: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    payload = NFGEN.pack(family, 0, res_id) + body
    return NLH.pack(16 + len(payload), msg_type, flags, seq, 0) + payload


def attrs(data: bytes | memoryview, off: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int]]:
    """(type, value offset, value end) of each attribute in data[off:end]."""
    end = len(data) if end is None else end
    while off + 4 <= end:
        n, kind = struct.unpack_from("=HH", data, off)
        if n < 4:
            return
        yield kind & NLA_TYPE_MASK, off + 4, off + n
        off += (n + 3) & ~3


def messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(type, seq, payload offset, message end) of each netlink message in one datagram."""
    off = 0
    while off + 16 <= len(data):
        ln, kind, _flags, seq, _pid = NLH.unpack_from(data, off)
        if ln < 16:
            return
        yield kind, seq, off + 16, off + ln
        off += (ln + 3) & ~3


def error_of(data: bytes, off: int) -> int:
    """The errno of an NLMSG_ERROR payload (0 = an ACK)."""
    err: int = struct.unpack_from("=i", data, off)[0]
    return -err


def nf_socket(groups: int = 0, rcvbuf: int = 4 << 20) -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    except OSError:
        pass
    s.bind((0, groups))
    return s
