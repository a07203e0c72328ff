"""Address folding and the kernel's multiplicative hash, shared by dh, sh, lblc and lblcr."""

from __future__ import annotations

from pylvs.core.types import IPAddr

GOLDEN_RATIO_32 = 0x61C88647
MASK32 = 0xFFFFFFFF


def fold(addr: IPAddr) -> int:
    """IPv4: the address as a 32-bit integer; IPv6: the XOR of its four 32-bit words."""
    v = int(addr)
    if addr.version == 4:
        return v
    return (v >> 96 ^ v >> 64 ^ v >> 32 ^ v) & MASK32


def hash_32(value: int, bits: int) -> int:
    """hash_32(): multiply by the 32-bit golden ratio and keep the top `bits` bits."""
    return ((value * GOLDEN_RATIO_32) & MASK32) >> (32 - bits)
