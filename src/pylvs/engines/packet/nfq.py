"""A small nfnetlink_queue client (NETLINK_NETFILTER, subsystem QUEUE) on the standard library.

Used for firewall-mark services: AF_PACKET taps run before netfilter and never see marks, so packets
the user's rules mark are queued to us by an iptables NFQUEUE rule; we read each one with its mark,
input device and source MAC, forward it ourselves and give the kernel a verdict (drop: it is ours now).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_PACKET = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
NFQA_IFINDEX_INDEV = 5
NFQA_HWADDR = 9
NFQA_PAYLOAD = 10
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NF_DROP = 0
NF_ACCEPT = 1

_NLH = struct.Struct("=IHHII")
_NFG = struct.Struct("=BBH")  # family, version, res_id (big-endian queue number, packed separately)


@dataclass(slots=True)
class Queued:
    packet_id: int
    mark: int
    indev: int
    hwaddr: bytes
    payload: bytes


def _attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + bytes((4 - n % 4) % 4)


class NfQueue:
    def __init__(self, queue_num: int) -> None:
        self.queue_num = queue_num
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)))
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_PACKET)))
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def _msg(self, msg: int, body: bytes, flags: int) -> bytes:
        self.seq += 1
        nfg = _NFG.pack(socket.AF_UNSPEC, 0, 0)[:2] + struct.pack("!H", self.queue_num)
        payload = nfg + body
        return _NLH.pack(16 + len(payload), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, self.seq, 0) + payload

    def _config(self, body: bytes) -> None:
        self.sock.send(self._msg(NFQNL_MSG_CONFIG, body, NLM_F_REQUEST | NLM_F_ACK))
        data = self.sock.recv(8192)
        _ln, kind, _f, _s, _p = _NLH.unpack_from(data, 0)
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, 16)
            if err:
                raise OSError(-err, f"nfqueue {self.queue_num}: config refused ({-err})")

    def verdict(self, packet_id: int, verdict: int) -> None:
        body = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
        try:
            self.sock.send(self._msg(NFQNL_MSG_VERDICT, body, NLM_F_REQUEST))
        except OSError:
            pass

    def receive(self) -> list[Queued]:
        """Every queued packet waiting now (non-blocking)."""
        out: list[Queued] = []
        while True:
            try:
                data = self.sock.recv(70000)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:  # ENOBUFS: the kernel dropped some; keep going
                return out
            off = 0
            while off + 16 <= len(data):
                ln, kind, _f, _s, _p = _NLH.unpack_from(data, off)
                if ln < 16:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    q = _parse_packet(data[off + 20 : off + ln])
                    if q is not None:
                        out.append(q)
                off += (ln + 3) & ~3

    def close(self) -> None:
        try:
            self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, socket.AF_INET)))
        except OSError:
            pass
        self.sock.close()


def _parse_packet(attrs: bytes) -> Queued | None:
    pid = -1
    mark = indev = 0
    hw = b""
    payload = b""
    off = 0
    while off + 4 <= len(attrs):
        n, kind = struct.unpack_from("=HH", attrs, off)
        if n < 4:
            break
        val = attrs[off + 4 : off + n]
        kind &= 0x3FFF
        if kind == NFQA_PACKET_HDR:
            (pid,) = struct.unpack_from("!I", val)
        elif kind == NFQA_MARK:
            (mark,) = struct.unpack_from("!I", val)
        elif kind == NFQA_IFINDEX_INDEV:
            (indev,) = struct.unpack_from("!I", val)
        elif kind == NFQA_HWADDR:
            (hlen,) = struct.unpack_from("!H", val)
            hw = bytes(val[4 : 4 + hlen])
        elif kind == NFQA_PAYLOAD:
            payload = bytes(val)
        off += (n + 3) & ~3
    if pid < 0:
        return None
    return Queued(pid, mark, indev, hw, payload)
