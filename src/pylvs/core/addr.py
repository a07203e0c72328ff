"""Address arithmetic the kernel's hash functions rely on."""

from __future__ import annotations

import ipaddress

from pylvs.core.types import IPAddr

GOLDEN_RATIO_32 = 0x61C88647


def fold(addr: IPAddr) -> int:
    """IPv4: the address as a 32-bit integer; IPv6: XOR of its four 32-bit words."""
    v = int(addr)
    if addr.version == 4:
        return v
    return ((v >> 96) ^ (v >> 64) ^ (v >> 32) ^ v) & 0xFFFFFFFF


def hash_32(val: int, bits: int) -> int:
    """The kernel's multiplicative hash_32()."""
    return ((val * GOLDEN_RATIO_32) & 0xFFFFFFFF) >> (32 - bits)


def mask_addr(addr: IPAddr, netmask: int) -> IPAddr:
    """Client network for persistence: IPv4 AND mask, IPv6 truncated to a prefix length."""
    if addr.version == 4:
        return ipaddress.IPv4Address(int(addr) & netmask)
    plen = netmask
    bits = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1) if plen < 128 else (1 << 128) - 1
    return ipaddress.IPv6Address(int(addr) & bits)
