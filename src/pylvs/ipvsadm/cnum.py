"""C library number and address parsing as ipvsadm relies on it (strtol, atoi, inet_aton, inet_pton)."""

from __future__ import annotations

import ipaddress
import socket

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
_C_SPACE = " \t\n\v\f\r"


def _strtol_prefix(s: str) -> tuple[int, int, bool]:
    """(value clamped to long, characters used, overflowed) of strtol(s, &end, 10); used=0: no number."""
    i = 0
    n = len(s)
    while i < n and s[i] in _C_SPACE:
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    start = i
    while i < n and "0" <= s[i] <= "9":
        i += 1
    if i == start:
        return 0, 0, False
    value = int(s[start:i])
    if neg:
        value = -value
    if value > LONG_MAX:
        return LONG_MAX, i, True
    if value < LONG_MIN:
        return LONG_MIN, i, True
    return value, i, False


def strtol_full(s: str) -> int | None:
    """strtol base 10 that must use the whole string and not overflow; None otherwise."""
    value, used, overflow = _strtol_prefix(s)
    if used == 0 or used != len(s) or overflow:
        return None
    return value


def string_to_number(s: str, lo: int, hi: int) -> int | None:
    """ipvsadm's string_to_number(): a whole decimal number within lo..hi, else None."""
    v = strtol_full(s)
    if v is None or not lo <= v <= hi:
        return None
    return v


def atoi(s: str) -> int:
    """atoi(): strtol's prefix, then C's conversion of long to int (wraps modulo 2**32)."""
    value, _, _ = _strtol_prefix(s)
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def inet_aton(s: str) -> ipaddress.IPv4Address | None:
    """glibc inet_aton (accepts 10.1, 0x0a000001, 012.0.0.1 and trailing white space)."""
    if "\x00" in s:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(s))
    except (OSError, ValueError):
        return None


def inet_pton6(s: str) -> ipaddress.IPv6Address | None:
    if "\x00" in s:
        return None
    try:
        return ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, s))
    except (OSError, ValueError):
        return None


def inet_pton4(s: str) -> ipaddress.IPv4Address | None:
    if "\x00" in s:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, s))
    except (OSError, ValueError):
        return None


def ntop(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """inet_ntop text (glibc's, e.g. ::ffff:1.2.3.4 for mapped addresses)."""
    if addr.version == 4:
        return str(addr)
    return socket.inet_ntop(socket.AF_INET6, addr.packed)
