"""IP-in-IP decapsulation in user space, for real servers whose kernel has no ipip module.

A raw socket for protocol 4 receives the director's tunnelled packets (and, because a raw socket took
them, the kernel sends no protocol-unreachable). The agent checks that the outer source is an allowed
director and that the inner packet is IPv4 to one of our VIPs, strips the outer header and writes the
inner packet to a TUN device: the stack then receives it as if it had arrived on that device, from the
client's address to the VIP, and the reply leaves by the normal route, straight to the client.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import subprocess

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_IPIP = 4


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _sysctl(key: str, value: str) -> None:
    try:
        with open("/proc/sys/" + key.replace(".", "/"), "w") as fh:
            fh.write(value)
    except OSError:
        pass


class TunAgent:
    def __init__(self, vips: list[str], directors: list[str], tun_name: str = "plvtun0") -> None:
        self.vips = {socket.inet_aton(v) for v in vips}
        self.directors = {socket.inet_aton(d) for d in directors}
        self.tun_name = tun_name
        self.counters = {"rx": 0, "decap": 0, "refused": 0}
        self.tun_fd = open_tun(tun_name)
        subprocess.run(["ip", "link", "set", tun_name, "up"], check=True, capture_output=True)
        # Inner packets come from clients the tun device has no route back to: loose reverse-path checks.
        _sysctl(f"net.ipv4.conf.{tun_name}.rp_filter", "0")
        _sysctl("net.ipv4.conf.all.rp_filter", "0")
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)

    def decap(self, data: bytes) -> bytes | None:
        """The inner packet of one tunnelled datagram, or None if it is not for us."""
        if len(data) < 40 or data[0] >> 4 != 4:
            return None
        ihl = (data[0] & 0xF) * 4
        if self.directors and data[12:16] not in self.directors:
            return None
        inner = data[ihl:]
        if len(inner) < 20 or inner[0] >> 4 != 4:
            return None
        if self.vips and inner[16:20] not in self.vips:
            return None
        return inner

    def run(self, stop_fd: int | None = None) -> None:
        fds = [self.raw.fileno()] + ([stop_fd] if stop_fd is not None else [])
        while True:
            ready, _, _ = select.select(fds, [], [])
            if stop_fd is not None and stop_fd in ready:
                return
            data = self.raw.recv(65535)
            self.counters["rx"] += 1
            inner = self.decap(data)
            if inner is None:
                self.counters["refused"] += 1
                continue
            try:
                os.write(self.tun_fd, inner)
                self.counters["decap"] += 1
            except OSError:
                self.counters["refused"] += 1

    def close(self) -> None:
        self.raw.close()
        os.close(self.tun_fd)


def run_forever(vips: list[str], directors: list[str], tun_name: str) -> int:
    agent = TunAgent(vips, directors, tun_name)
    r, w = os.pipe()

    def _stop(*_a: object) -> None:
        os.write(w, b"x")

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        agent.run(r)
    finally:
        agent.close()
    return 0
