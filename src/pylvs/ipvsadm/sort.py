"""ipvsadm's sort: glibc's qsort (a stable top-down merge sort) with libipvs's comparators.

The comparators subtract unsigned 32-bit values and read the result as a signed int, so two
addresses more than 2**31 apart compare "backwards" and the order is not transitive for some
triples. Python's sorted() assumes a consistent order; this reproduces the C result exactly.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

from pylvs.core.snapshot import DestView, ServiceView
from pylvs.core.types import AF_INET6

T = TypeVar("T")


def s32(v: int) -> int:
    """C: (int)(unsigned)v."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def merge_sort(items: list[T], cmp: Callable[[T, T], int]) -> list[T]:
    """glibc msort: first half n//2, second half the rest; ties and 'less or equal' go left."""
    n = len(items)
    if n <= 1:
        return list(items)
    n1 = n // 2
    left = merge_sort(items[:n1], cmp)
    right = merge_sort(items[n1:], cmp)
    out: list[T] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if cmp(left[i], right[j]) <= 0:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    out.extend(left[i:])
    out.extend(right[j:])
    return out


def _words(addr: str) -> tuple[int, int, int, int]:
    """The address as four host-order 32-bit words (IPv4 in the first word, as in the C union)."""
    if not addr:
        return (0, 0, 0, 0)
    if ":" not in addr:
        return (int.from_bytes(socket.inet_aton(addr), "big"), 0, 0, 0)
    v = int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "big")
    return ((v >> 96) & 0xFFFFFFFF, (v >> 64) & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF, v & 0xFFFFFFFF)


def _cmp_addr(af1: int, w1: tuple[int, int, int, int], w2: tuple[int, int, int, int]) -> int:
    if af1 == AF_INET6:
        for a, b in zip(w1, w2, strict=True):
            r = s32(a - b)
            if r:
                return r
        return 0
    return s32(w1[0] - w2[0])


def cmp_services(s1: ServiceView, s2: ServiceView) -> int:
    return _cmp_svc_keys(_svc_key(s1), _svc_key(s2))


def cmp_dests(d1: DestView, d2: DestView) -> int:
    return _cmp_dest_keys(_dest_key(d1), _dest_key(d2))


Words = tuple[int, int, int, int]
_SvcKey = tuple[int, int, int, Words, int]
_DestKey = tuple[int, Words, int]


def _svc_key(s: ServiceView) -> _SvcKey:
    return (s.fwmark, s.af, s.protocol, _words(s.addr), s.port)


def _dest_key(d: DestView) -> _DestKey:
    return (AF_INET6 if ":" in d.addr else 2, _words(d.addr), d.port)


def _cmp_svc_keys(k1: _SvcKey, k2: _SvcKey) -> int:
    r = s32(k1[0] - k2[0])
    if r:
        return r
    r = k1[1] - k2[1]
    if r:
        return r
    r = k1[2] - k2[2]
    if r:
        return r
    r = _cmp_addr(k1[1], k1[3], k2[3])
    if r:
        return r
    return k1[4] - k2[4]


def _cmp_dest_keys(k1: _DestKey, k2: _DestKey) -> int:
    r = _cmp_addr(k1[0], k1[1], k2[1])
    if r:
        return r
    return k1[2] - k2[2]


_HALF = 1 << 31


def _spans_ok(values: list[int]) -> bool:
    """Differences of these unsigned values never wrap as a signed int: C order == plain order."""
    return not values or max(values) - min(values) < _HALF


def _words_ok(keys: list[tuple[int, int, int, int]]) -> bool:
    return all(_spans_ok([k[i] for k in keys]) for i in range(4))


def sort_services(services: list[ServiceView]) -> list[ServiceView]:
    return sort_keyed_services([(_svc_key(s), s) for s in services])


def sort_dests(dests: list[DestView]) -> list[DestView]:
    return sort_keyed_dests([(_dest_key(d), d) for d in dests])


def sort_keyed_services(keyed: list[tuple[_SvcKey, T]]) -> list[T]:
    """Items in ipvsadm's service order, given each one's (fwmark, af, protocol, words, port)."""
    # When no comparison can wrap, the comparator is a total order, and any stable sort gives the
    # merge sort's result: take Python's (much faster on big tables).
    addr_keys = [k for k, _ in keyed if not k[0]]
    consistent = _spans_ok([k[0] for k, _ in keyed]) and all(
        _words_ok([k[3] for k in addr_keys if k[1] == af]) for af in {k[1] for k in addr_keys}
    )
    if consistent:
        return [s for _, s in sorted(keyed, key=lambda ks: ks[0])]
    return [s for _, s in merge_sort(keyed, lambda a, b: _cmp_svc_keys(a[0], b[0]))]


def sort_keyed_dests(keyed: list[tuple[_DestKey, T]]) -> list[T]:
    """Items in ipvsadm's real-server order, given each one's (af, words, port)."""
    if len({k[0] for k, _ in keyed}) <= 1 and _words_ok([k[1] for k, _ in keyed]):
        return [d for _, d in sorted(keyed, key=lambda kd: (kd[0][1], kd[0][2]))]
    return [d for _, d in merge_sort(keyed, lambda a, b: _cmp_dest_keys(a[0], b[0]))]
