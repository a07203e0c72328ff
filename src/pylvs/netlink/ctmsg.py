"""ctnetlink event messages laid out as this kernel (6.18) writes them: the layouts conntrack.py
reads in place and its BPF filter checks. For the tests and the benchmark that replay conntrack
without a kernel."""

from __future__ import annotations

import socket
import struct

from pylvs.netlink import conntrack as ct
from pylvs.netlink.nlmsg import attr, nested

_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


def event(
    state: int,
    orig: ct.Tuple,
    reply: ct.Tuple,
    cid: int,
    mark: int = 0x80010000,
    destroy: bool = False,
    counters: tuple[int, int, int, int] = (0, 0, 0, 0),
    msg_type: int | None = None,
) -> bytes:
    """An update event (tuples, id, status, timeout, TCP protoinfo, mark) or, `destroy`, a DESTROY
    event with accounting on (tuples, id, status, counters orig/reply, TCP state, mark). No mark
    attribute when `mark` is 0 (the kernel leaves it out). `msg_type`: another message type."""
    body = (
        ct.encode_tuple(ct.CTA_TUPLE_ORIG, orig)
        + ct.encode_tuple(ct.CTA_TUPLE_REPLY, reply)
        + attr(ct.CTA_ID, _U32.pack(cid))
        + attr(3, _U32.pack(0x19E))  # CTA_STATUS
    )
    if destroy:
        po, bo, pr, br = counters
        body += nested(
            ct.CTA_COUNTERS_ORIG,
            attr(ct.CTA_COUNTERS_PACKETS, _U64.pack(po)),
            attr(ct.CTA_COUNTERS_BYTES, _U64.pack(bo)),
        ) + nested(
            ct.CTA_COUNTERS_REPLY,
            attr(ct.CTA_COUNTERS_PACKETS, _U64.pack(pr)),
            attr(ct.CTA_COUNTERS_BYTES, _U64.pack(br)),
        )
        tcp = nested(ct.CTA_PROTOINFO_TCP, attr(ct.CTA_PROTOINFO_TCP_STATE, bytes([state])))
    else:
        body += attr(ct.CTA_TIMEOUT, _U32.pack(120))
        tcp = nested(
            ct.CTA_PROTOINFO_TCP,
            attr(ct.CTA_PROTOINFO_TCP_STATE, bytes([state])),
            attr(2, b"\x07"),  # window scales, flags of both directions
            attr(3, b"\x07"),
            attr(4, b"\x23\x00"),
            attr(5, b"\x23\x00"),
        )
    body += nested(ct.CTA_PROTOINFO, tcp) + (attr(ct.CTA_MARK, _U32.pack(mark)) if mark else b"")
    if msg_type is None:
        msg_type = ct.IPCTNL_MSG_CT_DELETE if destroy else ct.IPCTNL_MSG_CT_NEW
    payload = struct.pack("!BBH", socket.AF_INET, 0, 0) + body
    head = struct.pack("=IHHII", 16 + len(payload), (ct.NFNL_SUBSYS_CTNETLINK << 8) | msg_type, 0, 0, 0)
    return head + payload
