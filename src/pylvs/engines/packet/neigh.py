"""Neighbour cache for the packet engine: IPv4 -> MAC, from ARP frames we see, from the kernel's own
table, and from our own ARP requests. Frames wait (a few per address) until their next hop answers."""

from __future__ import annotations

import socket
from collections.abc import Callable

MAX_PENDING = 16  # frames held per unresolved address; more are dropped, as the kernel's queue does


def read_proc_arp(path: str = "/proc/net/arp") -> dict[bytes, bytes]:
    """The kernel's complete IPv4 neighbour entries (of the caller's network namespace)."""
    out: dict[bytes, bytes] = {}
    try:
        with open(path) as fh:
            next(fh, None)
            for line in fh:
                parts = line.split()
                if len(parts) >= 4 and parts[2] != "0x0" and parts[3] != "00:00:00:00:00:00":
                    out[socket.inet_aton(parts[0])] = bytes.fromhex(parts[3].replace(":", ""))
    except OSError:
        pass
    return out


class Neighbours:
    def __init__(self, kernel_table: Callable[[], dict[bytes, bytes]] | None = read_proc_arp) -> None:
        self.macs: dict[bytes, bytes] = {}
        self.pending: dict[bytes, list[tuple[int, bytearray]]] = {}
        self.kernel_table = kernel_table

    def lookup(self, ip: bytes) -> bytes | None:
        mac = self.macs.get(ip)
        if mac is None and self.kernel_table is not None:
            # Miss: the kernel may know it already (e.g. the director talked to the RS itself).
            table = self.kernel_table()
            mac = table.get(ip)
            if mac is not None:
                self.macs[ip] = mac
        return mac

    def hold(self, ip: bytes, ifindex: int, frame: bytearray, now: float = 0.0) -> bool:
        """Keep `frame` until `ip` resolves; True when an ARP request should go out now."""
        q = self.pending.get(ip)
        if q is None:
            self.pending[ip] = [(ifindex, frame)]
            return True
        if len(q) < MAX_PENDING:
            q.append((ifindex, frame))
        # Ask again every few held frames, so a lost request or reply does not stall forever.
        return len(q) % 4 == 0

    def learn(self, ip: bytes, mac: bytes) -> list[tuple[int, bytearray]]:
        """Record `ip` at `mac`; returns the frames that were waiting for it."""
        if ip == b"\0\0\0\0" or mac[0] & 1:
            return []
        if ip in self.macs or ip in self.pending:
            self.macs[ip] = mac
        return self.pending.pop(ip, [])

    def forget(self, ip: bytes) -> None:
        self.macs.pop(ip, None)
