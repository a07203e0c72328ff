"""nfnetlink_queue client: packets an NFQUEUE rule hands us, and our verdicts (with a mark).

The fast path queues only the first packet of each connection (conntrack state NEW): pylvsd reads
its headers (a copy range of 128 bytes is enough), asks the core, and answers ACCEPT with a mark that
names the real server, or DROP. No libnetfilter_queue: the protocol is a handful of attributes.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass

from pylvs.netlink.nlmsg import (
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    attr,
    error_of,
    messages,
    nf_socket,
    nfmsg,
)

NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQA_CFG_F_FAIL_OPEN = 1
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_PACKET = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
NFQA_IFINDEX_INDEV = 5
NFQA_HWADDR = 9
NFQA_PAYLOAD = 10
NF_DROP = 0
NF_ACCEPT = 1

PACKET_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
_VERDICT_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_VHDR = struct.Struct("!II")
_HEAD = struct.Struct("=IHHII")
_HH = struct.Struct("=HH")
_IH = struct.Struct("=IH")  # a netlink header's length and type
_VATTR = _HH.pack(12, NFQA_VERDICT_HDR)  # attribute headers of a verdict and of its mark
_MATTR = _HH.pack(8, NFQA_MARK)


@dataclass(slots=True)
class Queued:
    packet_id: int
    mark: int
    indev: int
    payload: bytes
    hwaddr: bytes = b""  # the sender's link-layer address, when the kernel knows it


class NfQueue:
    """One bound queue. `fail_open`: when the queue is full, the kernel accepts instead of dropping."""

    def __init__(
        self, queue_num: int, copy_range: int = 128, maxlen: int = 4096, fail_open: bool = True
    ) -> None:
        self.queue_num = queue_num
        self.sock = nf_socket()
        self.seq = 0
        self._config(attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)))
        self._config(attr(NFQA_CFG_PARAMS, struct.pack("!IB", copy_range, NFQNL_COPY_PACKET)))
        self._config(attr(NFQA_CFG_QUEUE_MAXLEN, _U32.pack(maxlen)))
        flags = NFQA_CFG_F_FAIL_OPEN if fail_open else 0
        self._config(
            attr(NFQA_CFG_FLAGS, _U32.pack(flags)) + attr(NFQA_CFG_MASK, _U32.pack(NFQA_CFG_F_FAIL_OPEN))
        )
        self.sock.setblocking(False)
        self.buf = bytearray(max(1 << 16, copy_range + 4096))  # one whole message, headers included
        # A prebuilt verdict message; only seq, verdict, id and mark change.
        self._nfg = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue_num)
        self._outq: queue.SimpleQueue[bytes | None] | None = None
        self._sender: threading.Thread | None = None
        self.send_seconds = 0.0  # inside the verdict sends (the kernel forwarding the packets)
        self.sends = 0

    def start_sender(self) -> None:
        """Send verdicts from a thread of their own. The kernel forwards each accepted packet inside
        the verdict's send() on the sender's CPU (on veth, even the real server's and the client's
        TCP work happens there); the call releases the GIL, so that work overlaps the next
        decisions instead of stalling them."""
        if self._sender is not None:
            return
        self._outq = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name="nfq-verdicts", daemon=True)
        self._sender.start()

    def _send_loop(self) -> None:
        q = self._outq
        assert q is not None
        send = self.sock.send
        clock = time.perf_counter
        while True:
            m = q.get()
            if m is None:
                return
            # Whatever else is waiting goes in the same datagram: one system call for them all.
            while len(m) < 32768:
                try:
                    more = q.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    q.put(None)
                    break
                m += more
            t = clock()
            try:
                send(m)
            except OSError:
                pass  # the kernel drops or times out the packets; nothing better to do here
            self.send_seconds += clock() - t
            self.sends += 1

    def fileno(self) -> int:
        return self.sock.fileno()

    def _config(self, body: bytes) -> None:
        self.seq += 1
        msg = nfmsg(
            (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            self.seq,
            socket.AF_UNSPEC,
            self.queue_num,
            body,
        )
        self.sock.send(msg)
        data = self.sock.recv(8192)
        for kind, _seq, off, _end in messages(data):
            if kind == NLMSG_ERROR:
                err = error_of(data, off)
                if err:
                    raise OSError(err, f"nfqueue {self.queue_num}: configuration refused")

    def verdict_msg(self, packet_id: int, verdict: int, mark: int | None = None) -> bytes:
        """One verdict message; several can go in one send (see send_verdicts)."""
        self.seq += 1
        if mark is None:
            return (
                _HEAD.pack(32, _VERDICT_TYPE, NLM_F_REQUEST, self.seq, 0)
                + self._nfg
                + _VATTR
                + _VHDR.pack(verdict, packet_id)
            )
        return (
            _HEAD.pack(40, _VERDICT_TYPE, NLM_F_REQUEST, self.seq, 0)
            + self._nfg
            + _VATTR
            + _VHDR.pack(verdict, packet_id)
            + _MATTR
            + _U32.pack(mark)
        )

    def send_verdicts(self, msgs: list[bytes]) -> None:
        """Verdict messages in one datagram (the kernel reads them all): one system call per batch.
        The kernel forwards each accepted packet inside this call, on our CPU."""
        if not msgs:
            return
        if self._outq is not None:
            self._outq.put(b"".join(msgs))
            return
        t = time.perf_counter()
        try:
            self.sock.send(b"".join(msgs))
        except OSError:
            pass  # the kernel drops or times out the packets; nothing better to do here
        self.send_seconds += time.perf_counter() - t
        self.sends += 1

    def verdict(self, packet_id: int, verdict: int, mark: int | None = None) -> None:
        self.send_verdicts([self.verdict_msg(packet_id, verdict, mark)])

    def receive(self, limit: int = 256) -> list[Queued]:
        """Queued packets waiting now (non-blocking), at most about `limit`."""
        out: list[Queued] = []
        buf = self.buf
        while len(out) < limit:
            try:
                n = self.sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ENOBUFS: the kernel dropped some; the rest still come
                continue
            data = bytes(buf[:n])
            for kind, _seq, off, end in messages(data):
                if kind == PACKET_TYPE:
                    q = parse_packet(data, off + 4, end)
                    if q is not None:
                        out.append(q)
        return out

    def receive_ids(self, limit: int = 256) -> list[tuple[int, int, bytes]]:
        """Like receive(), for the fast path's hot loop: (packet id, mark, payload) only."""
        out: list[tuple[int, int, bytes]] = []
        buf = self.buf
        recv = self.sock.recv_into
        hh = _HH.unpack_from
        ih = _IH.unpack_from
        u32 = _U32.unpack_from
        while len(out) < limit:
            try:
                n = recv(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ENOBUFS: the kernel dropped some; the rest still come
                continue
            data = bytes(buf[:n])
            msg = 0
            while msg + 16 <= n:
                ln, kind = ih(data, msg)
                if ln < 16:
                    break
                end = min(msg + ln, n)
                if kind == PACKET_TYPE:
                    pid, mark, payload = -1, 0, b""
                    off = msg + 20  # netlink header, nfgenmsg
                    while off + 4 <= end:
                        alen, atype = hh(data, off)
                        if alen < 4:
                            break
                        atype &= 0x3FFF
                        if atype == NFQA_PACKET_HDR:
                            pid = u32(data, off + 4)[0]
                        elif atype == NFQA_MARK:
                            mark = u32(data, off + 4)[0]
                        elif atype == NFQA_PAYLOAD:
                            payload = data[off + 4 : off + alen]
                        off += (alen + 3) & ~3
                    if pid >= 0:
                        out.append((pid, mark, payload))
                msg += (ln + 3) & ~3
        return out

    def close(self) -> None:
        if self._sender is not None and self._outq is not None:
            self._outq.put(None)  # after the verdicts already waiting
            self._sender.join(2.0)
            self._sender = None
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(1.0)
            self._config(attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, socket.AF_INET)))
        except OSError:
            pass
        self.sock.close()


def parse_packet(data: bytes, off: int, end: int) -> Queued | None:
    pid = -1
    mark = indev = 0
    payload = hwaddr = b""
    hh = _HH.unpack_from
    while off + 4 <= end:
        n, kind = hh(data, off)
        if n < 4:
            break
        kind &= 0x3FFF
        if kind == NFQA_PACKET_HDR:
            pid = _U32.unpack_from(data, off + 4)[0]
        elif kind == NFQA_MARK:
            mark = _U32.unpack_from(data, off + 4)[0]
        elif kind == NFQA_IFINDEX_INDEV:
            indev = _U32.unpack_from(data, off + 4)[0]
        elif kind == NFQA_PAYLOAD:
            payload = data[off + 4 : off + n]
        elif kind == NFQA_HWADDR:  # struct nfqnl_msg_packet_hw: length, padding, address
            hwaddr = data[off + 8 : off + 8 + _U16.unpack_from(data, off + 4)[0]]
        off += (n + 3) & ~3
    if pid < 0:
        return None
    return Queued(pid, mark, indev, payload, hwaddr)
