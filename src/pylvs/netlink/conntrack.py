"""ctnetlink: conntrack events (NEW, UPDATE, DESTROY) and dumps filtered by mark.

The fast path's connections live in conntrack once their first packet is accepted; these messages
tell pylvsd about their TCP state changes, their end, and (with net.netfilter.nf_conntrack_acct=1)
their packet and byte counters, so the core's states, ActiveConn/InActConn and --stats stay true.
"""

from __future__ import annotations

import operator
import socket
import struct
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass

from pylvs import cbpf
from pylvs.cbpf import ACCEPT, JEQ_K, JGE_K, JSET_K, LD_B_ABS, LD_LEN, LD_W_ABS, RET_K, Insn
from pylvs.netlink.nlmsg import (
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    attr,
    attrs,
    error_of,
    messages,
    nested,
    nf_socket,
    nfmsg,
)

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
GROUP_NEW, GROUP_UPDATE, GROUP_DESTROY = 1, 2, 4  # bind() bitmask of NFNLGRP_CONNTRACK_*
CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_PROTOINFO = 4
CTA_TIMEOUT = 7
CTA_MARK = 8
CTA_COUNTERS_ORIG = 9
CTA_COUNTERS_REPLY = 10
CTA_ID = 12
CTA_MARK_MASK = 21
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE = 1
CTA_COUNTERS_PACKETS = 1
CTA_COUNTERS_BYTES = 2

NEW, UPDATE, DESTROY = "new", "update", "destroy"
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_U16 = struct.Struct("!H")

# Conntrack's TCP states (nf_conntrack_tcp.h, enum tcp_conntrack).
CT_NONE, CT_SYN_SENT, CT_SYN_RECV, CT_ESTABLISHED, CT_FIN_WAIT = 0, 1, 2, 3, 4
CT_CLOSE_WAIT, CT_LAST_ACK, CT_TIME_WAIT, CT_CLOSE, CT_SYN_SENT2 = 5, 6, 7, 8, 9

Tuple = tuple[int, bytes, int, bytes, int]  # proto, src, sport, dst, dport


@dataclass(slots=True)
class CtEntry:
    kind: str  # new / update / destroy (a dump gives "new")
    ct_id: int
    orig: Tuple
    reply: Tuple
    mark: int = 0
    tcp_state: int = -1
    timeout: int = 0
    pkts_orig: int = 0
    bytes_orig: int = 0
    pkts_reply: int = 0
    bytes_reply: int = 0


def _layout_test(fields: Iterable[tuple[int, int, int]]) -> Callable[[bytes], bool]:
    """A test that each (offset, length, type) attribute header is where given: one C call (an
    itemgetter over the header bytes) instead of a comparison each, per event."""
    pos: list[int] = []
    want: list[int] = []
    for off, ln, kind in fields:
        pos += [off, off + 2]
        want += [ln & 0xFF, kind]
    get = operator.itemgetter(*pos)
    expected = tuple(want)

    def test(d: bytes) -> bool:
        return bool(get(d) == expected)

    return test


_HH = struct.Struct("=HH")
_NO_TUPLE: Tuple = (0, b"", 0, b"", 0)


def _tuple(data: bytes, a: int, b: int) -> Tuple:
    """CTA_TUPLE_*: addresses and ports (tight loops: this runs for every conntrack event)."""
    proto = sport = dport = 0
    src = dst = b""
    hh = _HH.unpack_from
    while a + 4 <= b:
        n, kind = hh(data, a)
        if n < 4:
            break
        kind &= 0x3FFF
        x, y = a + 4, a + n
        if kind == CTA_TUPLE_IP:
            while x + 4 <= y:
                n2, k2 = hh(data, x)
                if n2 < 4:
                    break
                k2 &= 0x3FFF
                if k2 == CTA_IP_V4_SRC:
                    src = data[x + 4 : x + 8]
                elif k2 == CTA_IP_V4_DST:
                    dst = data[x + 4 : x + 8]
                x += (n2 + 3) & ~3
        elif kind == CTA_TUPLE_PROTO:
            while x + 4 <= y:
                n2, k2 = hh(data, x)
                if n2 < 4:
                    break
                k2 &= 0x3FFF
                if k2 == CTA_PROTO_NUM:
                    proto = data[x + 4]
                elif k2 == CTA_PROTO_SRC_PORT:
                    sport = (data[x + 4] << 8) | data[x + 5]
                elif k2 == CTA_PROTO_DST_PORT:
                    dport = (data[x + 4] << 8) | data[x + 5]
                x += (n2 + 3) & ~3
        a += (n + 3) & ~3
    return proto, src, sport, dst, dport


def _counters(data: bytes, a: int, b: int) -> tuple[int, int]:
    pk = by = 0
    for kind, x, _y in attrs(data, a, b):
        if kind == CTA_COUNTERS_PACKETS:
            pk = _U64.unpack_from(data, x)[0]
        elif kind == CTA_COUNTERS_BYTES:
            by = _U64.unpack_from(data, x)[0]
    return pk, by


def mark_of(data: bytes, off: int, end: int) -> int:
    """The CTA_MARK of a message body, found before parsing the rest (most events are not ours)."""
    hh = _HH.unpack_from
    while off + 4 <= end:
        n, kind = hh(data, off)
        if n < 4:
            break
        if kind & 0x3FFF == CTA_MARK:
            return int(_U32.unpack_from(data, off + 4)[0])
        off += (n + 3) & ~3
    return 0


def peek(data: bytes, off: int, end: int) -> tuple[int, int, int]:
    """(mark, conntrack id, TCP state or -1) of a message body without parsing its tuples: enough
    for an event about a connection we already follow."""
    hh = _HH.unpack_from
    mark = cid = 0
    state = -1
    while off + 4 <= end:
        n, t = hh(data, off)
        if n < 4:
            break
        t &= 0x3FFF
        if t == CTA_MARK:
            mark = _U32.unpack_from(data, off + 4)[0]
        elif t == CTA_ID:
            cid = _U32.unpack_from(data, off + 4)[0]
        elif t == CTA_PROTOINFO:
            state = _tcp_state(data, off + 4, off + n)
        off += (n + 3) & ~3
    return mark, cid, state


def _tcp_state(data: bytes, x: int, y: int) -> int:
    """CTA_PROTOINFO -> CTA_PROTOINFO_TCP -> CTA_PROTOINFO_TCP_STATE, or -1."""
    for k2, p, q in attrs(data, x, y):
        if k2 == CTA_PROTOINFO_TCP:
            for k3, a, _b in attrs(data, p, q):
                if k3 == CTA_PROTOINFO_TCP_STATE:
                    return data[a]
    return -1


def parse(data: bytes, off: int, end: int, kind: str, tuples: bool = True) -> CtEntry:
    """One ctnetlink message body (after the nfgenmsg header); `tuples=False`: addresses and
    ports left out (an event about a connection already followed by its id)."""
    e = CtEntry(kind, 0, _NO_TUPLE, _NO_TUPLE)
    hh = _HH.unpack_from
    while off + 4 <= end:
        n, t = hh(data, off)
        if n < 4:
            break
        t &= 0x3FFF
        a, b = off + 4, off + n
        if t == CTA_TUPLE_ORIG:
            if tuples:
                e.orig = _tuple(data, a, b)
        elif t == CTA_TUPLE_REPLY:
            if tuples:
                e.reply = _tuple(data, a, b)
        elif t == CTA_MARK:
            e.mark = _U32.unpack_from(data, a)[0]
        elif t == CTA_ID:
            e.ct_id = _U32.unpack_from(data, a)[0]
        elif t == CTA_TIMEOUT:
            e.timeout = _U32.unpack_from(data, a)[0]
        elif t == CTA_PROTOINFO:
            e.tcp_state = _tcp_state(data, a, b)
        elif t == CTA_COUNTERS_ORIG:
            e.pkts_orig, e.bytes_orig = _counters(data, a, b)
        elif t == CTA_COUNTERS_REPLY:
            e.pkts_reply, e.bytes_reply = _counters(data, a, b)
        off += (n + 3) & ~3
    return e


def _kind(msg_type: int, flags: int) -> str | None:
    if msg_type >> 8 != NFNL_SUBSYS_CTNETLINK:
        return None
    m = msg_type & 0xFF
    if m == IPCTNL_MSG_CT_DELETE:
        return DESTROY
    if m == IPCTNL_MSG_CT_NEW:
        return NEW if flags & 0x600 else UPDATE  # NLM_F_CREATE|NLM_F_EXCL mark a new entry
    return None


# -- a classic BPF filter on the event socket ---------------------------------------------------
# SO_ATTACH_FILTER works on netlink sockets: the program sees each event message (netlink header
# first) and returns 0 to drop it before it is queued to us. Most TCP state changes are of no use
# to the core (see coreglue.CT_TO_PACKET) and an event costs pylvsd ~10 us; the filter drops those
# states, and events of connections that are not ours, in the kernel.
SO_RCVBUFFORCE = 33
# Where each attribute of an IPv4 TCP update event sits (offset, length, type): the order in which
# ctnetlink writes them (two tuples, id, status, timeout, protoinfo, then the mark). The filter
# checks every one and lets the message through untouched if anything differs.
_TCP_LAYOUT = (
    (20, 52, CTA_TUPLE_ORIG),
    (72, 52, CTA_TUPLE_REPLY),
    (124, 8, CTA_ID),
    (132, 8, 3),  # CTA_STATUS
    (140, 8, CTA_TIMEOUT),
    (148, 48, CTA_PROTOINFO),
    (152, 44, CTA_PROTOINFO_TCP),
    (156, 5, CTA_PROTOINFO_TCP_STATE),
)
_STATE_AT, _MARK_AT = 160, 196
_FIXED_LEN = _MARK_AT + 8  # that layout with the mark as the last attribute
# Inside a 52-byte IPv4 tuple: CTA_TUPLE_IP (20 bytes: source, destination) then CTA_TUPLE_PROTO
# (28 bytes: number, source port, destination port), each attribute where that size puts it.
_TUPLE_LAYOUT = (
    (4, 20, CTA_TUPLE_IP),
    (8, 8, CTA_IP_V4_SRC),
    (16, 8, CTA_IP_V4_DST),
    (24, 28, CTA_TUPLE_PROTO),
    (28, 5, CTA_PROTO_NUM),
    (36, 6, CTA_PROTO_SRC_PORT),
    (44, 6, CTA_PROTO_DST_PORT),
)


# Both tuples of an event in the fixed layout are laid out as _TUPLE_LAYOUT.
_fixed_tuples = _layout_test((b + off, ln, kind) for b in (20, 72) for off, ln, kind in _TUPLE_LAYOUT)


def _tuple_at(d: bytes, base: int) -> Tuple:
    """A tuple laid out as _TUPLE_LAYOUT at `base` (the attribute's header)."""
    return (
        d[base + 32],
        d[base + 12 : base + 16],
        (d[base + 40] << 8) | d[base + 41],
        d[base + 20 : base + 24],
        (d[base + 48] << 8) | d[base + 49],
    )


# An event laid out as _TCP_LAYOUT, mark last: id, state and mark are read in place.
_fixed_layout = _layout_test((*_TCP_LAYOUT, (_MARK_AT, 8, CTA_MARK)))


_EVENT_MAX = 16384  # an event is one datagram of a few hundred bytes
_NLHDR = struct.Struct("=IHH")
_UPDATE_TYPE = struct.pack("=H", (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW)
_DESTROY_TYPE = struct.pack("=H", (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE)
# A DESTROY event of an IPv4 TCP connection with accounting on (no timestamps): the tuples, id and
# status as in an update, then both counters (packets, bytes), the TCP state, the mark.
_DESTROY_LAYOUT = (
    (124, 8, CTA_ID),
    (140, 28, CTA_COUNTERS_ORIG),
    (144, 12, CTA_COUNTERS_PACKETS),
    (156, 12, CTA_COUNTERS_BYTES),
    (168, 28, CTA_COUNTERS_REPLY),
    (172, 12, CTA_COUNTERS_PACKETS),
    (184, 12, CTA_COUNTERS_BYTES),
    (196, 16, CTA_PROTOINFO),
    (200, 12, CTA_PROTOINFO_TCP),
    (204, 5, CTA_PROTOINFO_TCP_STATE),
    (212, 8, CTA_MARK),
)
_DESTROY_LEN, _DESTROY_STATE_AT, _DESTROY_MARK_AT = 220, 208, 216
_DESTROY_COUNTERS = struct.Struct("!Q4xQ8xQ4xQ")  # at 148: orig packets, bytes; reply packets, bytes


# A DESTROY event laid out as _DESTROY_LAYOUT (tuples as in an update).
_fixed_destroy = _layout_test(((20, 52, CTA_TUPLE_ORIG), (72, 52, CTA_TUPLE_REPLY), *_DESTROY_LAYOUT))


def event_filter(mask: int, drop_states: Iterable[int]) -> list[Insn]:
    """Drop update events of IPv4 TCP connections in one of `drop_states`, and those whose ct mark
    has no bit of `mask` (not ours); keep everything else (other messages, other layouts)."""
    prog: list[tuple[int, str | None, str | None, int]] = [
        (LD_LEN, None, None, 0),
        (JGE_K, None, "keep", _STATE_AT + 4),
        (LD_B_ABS, None, None, 4),  # nlmsg_type, low byte (host order): the message
        (JEQ_K, None, "keep", IPCTNL_MSG_CT_NEW),
        (LD_B_ABS, None, None, 5),  # high byte: the subsystem
        (JEQ_K, None, "keep", NFNL_SUBSYS_CTNETLINK),
    ]
    for off, ln, kind in _TCP_LAYOUT:
        prog += [
            (LD_B_ABS, None, None, off),
            (JEQ_K, None, "keep", ln),
            (LD_B_ABS, None, None, off + 2),
            (JEQ_K, None, "keep", kind),
        ]
    prog += [
        (LD_LEN, None, None, 0),
        (JGE_K, None, "state", _MARK_AT + 8),
        (LD_B_ABS, None, None, _MARK_AT + 2),
        (JEQ_K, None, "state", CTA_MARK),
        (LD_W_ABS, None, None, _MARK_AT + 4),  # the mark, network order like the load
        (JSET_K, "state", "drop", mask),
    ]
    labels = {"state": len(prog)}
    prog.append((LD_B_ABS, None, None, _STATE_AT))
    for st in sorted(set(drop_states)):
        prog.append((JEQ_K, "drop", None, st))
    labels["keep"] = len(prog)
    prog.append((RET_K, None, None, ACCEPT))
    labels["drop"] = len(prog)
    prog.append((RET_K, None, None, 0))
    out: list[Insn] = []
    for pc, (code, jt, jf, k) in enumerate(prog):
        t = labels[jt] - pc - 1 if jt else 0
        f = labels[jf] - pc - 1 if jf else 0
        out.append((code, t, f, k))
    return out


class CtEvents:
    """A socket subscribed to conntrack events; `read()` returns entries whose mark & mask is set.
    `drop_states`: TCP states whose update events the kernel need not send us (see event_filter)."""

    def __init__(
        self,
        mask: int,
        groups: int = GROUP_NEW | GROUP_UPDATE | GROUP_DESTROY,
        drop_states: Iterable[int] | None = None,
    ) -> None:
        self.mask = mask
        self.sock = nf_socket(groups, rcvbuf=8 << 20)
        try:  # past net.core.rmem_max (root): a burst of events must not overflow the socket
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        except OSError:
            pass
        if drop_states is not None:
            cbpf.attach(self.sock, event_filter(mask, drop_states))
        self.sock.setblocking(False)
        self.buf = bytearray(1 << 17)
        self.overruns = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, known: Container[int] = (), limit: int = 256) -> list[CtEntry]:
        """Events of our connections; for an UPDATE of one in `known` (conntrack ids) only the
        kind, id, mark and TCP state are filled in, for a DESTROY its counters and state too (the
        tuples are not parsed). Each event is one datagram; the usual layouts are read in place.
        An id whose DESTROY comes in this read is no longer known for the events after it: the
        kernel gives a new connection of the same tuple the same id when it reuses the ended
        one's memory (a client port reused while the old entry waited for the garbage collector;
        the new SYN's lookup reaps it), and that connection's first event needs its tuples."""
        out: list[CtEntry] = []
        ended: set[int] = set()
        recv = self.sock.recv
        mask = self.mask
        u32 = _U32.unpack_from
        while len(out) < limit:
            try:
                data = recv(_EVENT_MAX)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ENOBUFS: events were lost; the periodic dump catches up
                self.overruns += 1
                continue
            n = len(data)
            if n == _FIXED_LEN and data[4:6] == _UPDATE_TYPE and not data[7] & 0x06 and _fixed_layout(data):
                # (flags: not NLM_F_CREATE / NLM_F_EXCL, which mark a NEW event)
                # The usual IPv4 TCP update (the layout event_filter checks): no walk.
                mark = u32(data, _MARK_AT + 4)[0]
                if mark & mask:
                    cid = u32(data, 128)[0]
                    if cid in known and cid not in ended:  # followed: no tuples needed
                        out.append(CtEntry(UPDATE, cid, _NO_TUPLE, _NO_TUPLE, mark, data[_STATE_AT]))
                    elif _fixed_tuples(data):  # the first event of a connection: tuples in place too
                        t = _tuple_at
                        out.append(CtEntry(UPDATE, cid, t(data, 20), t(data, 72), mark, data[_STATE_AT]))
                    else:
                        out.append(parse(data, 20, n, UPDATE))
                continue
            if n == _DESTROY_LEN and data[4:6] == _DESTROY_TYPE and _fixed_destroy(data):
                mark = u32(data, _DESTROY_MARK_AT)[0]
                if mark & mask:
                    cid = u32(data, 128)[0]
                    orig = reply = _NO_TUPLE
                    fresh = cid not in known or cid in ended
                    ended.add(cid)
                    if fresh and _fixed_tuples(data):
                        orig, reply = _tuple_at(data, 20), _tuple_at(data, 72)
                    elif fresh:
                        out.append(parse(data, 20, n, DESTROY))
                        continue
                    po, bo, pr, br = _DESTROY_COUNTERS.unpack_from(data, 148)
                    out.append(
                        CtEntry(DESTROY, cid, orig, reply, mark, data[_DESTROY_STATE_AT], 0, po, bo, pr, br)
                    )
                continue
            off = 0
            while off + 16 <= n:
                ln, mtype, flags = _NLHDR.unpack_from(data, off)
                if ln < 16:
                    break
                kind = _kind(mtype, flags)
                if kind is not None:
                    mark, cid, state = peek(data, off + 20, off + ln)
                    if mark & mask:
                        fresh = cid not in known or cid in ended
                        if kind == DESTROY:
                            ended.add(cid)
                        if kind == UPDATE and not fresh:
                            out.append(CtEntry(kind, cid, _NO_TUPLE, _NO_TUPLE, mark, state))
                        else:
                            out.append(parse(data, off + 20, off + ln, kind, fresh))
                off += (ln + 3) & ~3
        return out

    def close(self) -> None:
        self.sock.close()


def dump(mark: int, mask: int, skip: Container[int] = (), timeout: float = 5.0) -> list[CtEntry]:
    """Every IPv4 conntrack entry whose mark & mask == mark (the kernel filters), except those whose
    id is in `skip` (connections whose counters can no longer change much: closing ones)."""
    s = nf_socket()
    s.settimeout(timeout)
    try:
        s.send(
            nfmsg(
                (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
                NLM_F_REQUEST | NLM_F_DUMP,
                1,
                socket.AF_INET,
                0,
                attr(CTA_MARK, _U32.pack(mark)) + attr(CTA_MARK_MASK, _U32.pack(mask)),
            )
        )
        out: list[CtEntry] = []
        while True:
            data = s.recv(1 << 17)
            for kind, _seq, off, end in messages(data):
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    err = error_of(data, off)
                    if err:
                        raise OSError(err, "conntrack dump refused")
                    return out
                if kind == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW:
                    if skip and peek(data, off + 4, end)[1] in skip:
                        continue
                    e = parse(data, off + 4, end, NEW)
                    if e.mark & mask == mark:
                        out.append(e)
    finally:
        s.close()


def encode_tuple(kind: int, t: Tuple) -> bytes:
    """CTA_TUPLE_ORIG / CTA_TUPLE_REPLY of an IPv4 (proto, source, port, destination, port)."""
    proto, src, sport, dst, dport = t
    return nested(
        kind,
        nested(CTA_TUPLE_IP, attr(CTA_IP_V4_SRC, src), attr(CTA_IP_V4_DST, dst)),
        nested(
            CTA_TUPLE_PROTO,
            attr(CTA_PROTO_NUM, bytes((proto,))),
            attr(CTA_PROTO_SRC_PORT, _U16.pack(sport)),
            attr(CTA_PROTO_DST_PORT, _U16.pack(dport)),
        ),
    )


# A GET by original tuple is 72 bytes; its constant parts are cut out of one template.
_GET_TEMPLATE = nfmsg(
    (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
    NLM_F_REQUEST,
    0,
    socket.AF_INET,
    0,
    encode_tuple(CTA_TUPLE_ORIG, (0, bytes(4), 0, bytes(4), 0)),
)
_GET_HEAD = _GET_TEMPLATE[:8]  # length, type, flags (seq and port id follow)
_GET_MID = _GET_TEMPLATE[16:32]  # nfgenmsg, tuple and IP headers, source attribute header
_GET_DST = _GET_TEMPLATE[36:40]
_GET_PROTO = _GET_TEMPLATE[44:52]  # protocol headers, protocol number attribute header
_GET_PORTS = _GET_TEMPLATE[53:60]  # padding, source port attribute header
_GET_DPORT = _GET_TEMPLATE[62:68]  # padding, destination port attribute header
_SEQ = struct.Struct("=II")


def _get_request(seq: int, t: Tuple) -> bytes:
    proto, src, sport, dst, dport = t
    return b"".join(
        (
            _GET_HEAD,
            _SEQ.pack(seq, 0),
            _GET_MID,
            src,
            _GET_DST,
            dst,
            _GET_PROTO,
            bytes((proto,)),
            _GET_PORTS,
            _U16.pack(sport),
            _GET_DPORT,
            _U16.pack(dport),
            b"\0\0",
        )
    )


def get_many(
    tuples: list[Tuple], timeout: float = 2.0, chunk: int = 512, strict: bool = False
) -> list[CtEntry | None]:
    """The entry of each IPv4 original-direction tuple now (None: no such connection any more).
    Requests go many to a datagram; the kernel answers each with the entry or an error. A socket
    error or a timeout leaves the unanswered ones None, or raises OSError when `strict` (a caller
    that would take None for "closed" must not be told so by a slow kernel)."""
    out: list[CtEntry | None] = [None] * len(tuples)
    if not tuples:
        return out
    new = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
    s = nf_socket()
    s.settimeout(timeout)
    try:
        for start in range(0, len(tuples), chunk):
            part = tuples[start : start + chunk]
            s.send(b"".join(_get_request(start + i + 1, t) for i, t in enumerate(part)))
            want = len(part)
            while want > 0:
                data = s.recv(1 << 17)
                for kind, seq, off, end in messages(data):
                    if kind == NLMSG_ERROR:
                        want -= 1
                    elif kind == new and 0 < seq <= len(tuples):
                        out[seq - 1] = parse(data, off + 4, end, NEW)
                        want -= 1
    except OSError:  # a timeout: the rest count as gone; their DESTROY events say the rest
        if strict:
            raise
    finally:
        s.close()
    return out


__all__ = ["CtEntry", "CtEvents", "dump", "get_many"]
