"""The DR fast path's packet socket: only the SYN, FIN and RST frames to a DR virtual address reach
pylvsd (a classic BPF filter), with their virtio header so checksum-offloaded frames stay correct
when we send them on. The kernel forwards every other packet through the netdev flow map."""

from __future__ import annotations

import socket

from pylvs import cbpf
from pylvs.cbpf import (
    ACCEPT,
    ALU_AND_K,
    JEQ_K,
    JSET_K,
    LD_B_ABS,
    LD_B_IND,
    LD_H_ABS,
    LD_W_ABS,
    LDX_B_MSH,
    RET_K,
    Insn,
)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
VNET_LEN = 10
VNET_F_DATA_VALID = 2


def program(vips: list[bytes]) -> list[Insn]:
    """IPv4, TCP, daddr in vips, not a fragment, and (SYN without ACK, or FIN, or RST)."""
    vips = sorted(set(vips))[:200]  # 8-bit jump offsets
    if not vips:
        return [(RET_K, 0, 0, 0)]
    n = len(vips)
    p: list[Insn] = [
        (LD_H_ABS, 0, 0, 12),
        (JEQ_K, 0, 0, 0x0800),  # jf patched below
        (LD_B_ABS, 0, 0, 23),
        (JEQ_K, 0, 0, 6),
        (LD_H_ABS, 0, 0, 20),
        (JSET_K, 0, 0, 0x1FFF),  # a fragment after the first: no TCP header
        (LD_W_ABS, 0, 0, 30),
    ]
    for i, v in enumerate(vips):
        # match: jump over the remaining compares to the flags check
        p.append((JEQ_K, n - i - 1 + 1, 0, int.from_bytes(v, "big")))
    p.append((RET_K, 0, 0, 0))  # no VIP matched
    flags_at = len(p)
    p += [
        (LDX_B_MSH, 0, 0, 14),
        (LD_B_IND, 0, 0, 14 + 13),
        (JSET_K, 3, 0, 0x05),  # FIN or RST -> accept
        (ALU_AND_K, 0, 0, 0x12),
        (JEQ_K, 1, 0, 0x02),  # SYN without ACK -> accept
        (RET_K, 0, 0, 0),
        (RET_K, 0, 0, ACCEPT),
    ]
    reject = flags_at - 1

    def jf(pc: int) -> int:
        return reject - (pc + 1)

    p[1] = (JEQ_K, 0, jf(1), 0x0800)
    p[3] = (JEQ_K, 0, jf(3), 6)
    p[5] = (JSET_K, jf(5), 0, 0x1FFF)
    # the VIP compares: on match go to flags_at
    for i in range(n):
        pc = 7 + i
        p[pc] = (JEQ_K, flags_at - (pc + 1), 0, p[pc][3])
    return p


def open_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    cbpf.attach(s, [(RET_K, 0, 0, 0)])
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    # Frames queued before the filter was attached: drop them.
    while True:
        try:
            s.recv(65536)
        except BlockingIOError:
            break
    return s
