"""Classic BPF prefilter for the engine's packet sockets: only ARP and IPv4 frames to a virtual
address or from a NAT real server / to a FULLNAT local address are copied to user space."""

from __future__ import annotations

from pylvs.cbpf import ACCEPT, JEQ_K, LD_H_ABS, LD_W_ABS, RET_K, Insn

MAX_JUMP = 250  # jump offsets are 8 bits wide


def program(dsts: list[bytes], srcs: list[bytes], ipv6: bool = False) -> list[Insn]:
    """Instructions (code, jt, jf, k): accept ARP; IPv4 with daddr in dsts or saddr in srcs; with
    ipv6, every IPv6 frame (16-byte addresses do not fit classic BPF's 32-bit compares cheaply)."""
    dsts = sorted(set(dsts))
    srcs = sorted(set(srcs))
    if len(dsts) + len(srcs) + 8 > MAX_JUMP:
        # Too many addresses for 8-bit jumps: take every ARP and IP frame, Python sorts them out.
        return [
            (LD_H_ABS, 0, 0, 12),
            (JEQ_K, 3, 0, 0x0806),
            (JEQ_K, 2, 0, 0x0800),
            (JEQ_K, 1, 0, 0x86DD if ipv6 else 0x0800),
            (RET_K, 0, 0, 0),
            (RET_K, 0, 0, ACCEPT),
        ]
    body: list[tuple[str, int]] = [("ld", 30)] + [("eq", int.from_bytes(a, "big")) for a in dsts]
    body += [("ld", 26)] + [("eq", int.from_bytes(a, "big")) for a in srcs]
    extra = 1 if ipv6 else 0
    n = 3 + extra + len(body)  # index of the reject instruction; accept follows it
    insns: list[Insn] = [(LD_H_ABS, 0, 0, 12)]
    insns.append((JEQ_K, n + 1 - 2, 0, 0x0806))
    if ipv6:
        insns.append((JEQ_K, n + 1 - 3, 0, 0x86DD))
    insns.append((JEQ_K, 0, n - (3 + extra), 0x0800))
    for kind, k in body:
        pc = len(insns)
        if kind == "ld":
            insns.append((LD_W_ABS, 0, 0, k))
        else:
            insns.append((JEQ_K, n + 1 - (pc + 1), 0, k))
    insns.append((RET_K, 0, 0, 0))
    insns.append((RET_K, 0, 0, ACCEPT))
    return insns
