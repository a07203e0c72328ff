"""Classic BPF as the kernel takes it from setsockopt: the instruction codes the filters here use,
and the `struct sock_fprog` for SO_ATTACH_FILTER (packet and netlink sockets) and
PACKET_FANOUT_DATA. Each program is built where its job is (engines/packet/bpf.py, fanout.py,
fastpath/drsock.py, netlink/conntrack.py)."""

from __future__ import annotations

import ctypes
import socket
import struct

Insn = tuple[int, int, int, int]  # (code, jump if true, jump if false, k)

SO_ATTACH_FILTER = 26
ACCEPT = 0x40000  # a return value that keeps the whole packet or message

# loads
LD_IMM = 0x00
LD_W_ABS, LD_H_ABS, LD_B_ABS = 0x20, 0x28, 0x30
LD_H_IND, LD_B_IND = 0x48, 0x50
LD_LEN = 0x80
LDX_MEM = 0x61
LDX_B_MSH = 0xB1  # X = 4 * (packet[k] & 0xf): an IPv4 header's length
ST = 0x02
# arithmetic
ALU_SUB_K, ALU_MUL_K, ALU_DIV_K = 0x14, 0x24, 0x34
ALU_AND_K, ALU_RSH_K, ALU_MOD_K = 0x54, 0x74, 0x94
ALU_XOR_X = 0xAC
# jumps and returns
JEQ_K, JGE_K, JSET_K = 0x15, 0x35, 0x45
RET_K, RET_A = 0x06, 0x16


def fprog(insns: list[Insn]) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    """The sock_fprog for `insns`, and the buffer it points to (keep it until setsockopt returns)."""
    raw = b"".join(struct.pack("HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    return struct.pack("HL", len(insns), ctypes.addressof(buf)), buf


def attach(sock: socket.socket, insns: list[Insn]) -> None:
    """Attach `insns` as the socket's filter (replacing any before)."""
    prog, _keep = fprog(insns)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
