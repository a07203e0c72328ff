"""In-process cost of SCTP on the packet engine's path (no sockets, no kernel, no root): synthetic
frames of an established association (after a whole handshake) through the Forwarder and the real core,
per forwarding method: DATA packets of an ESTABLISHED association take the engine's fast path. Also the
CRC32c cost alone.

    flock /tmp/pylvs-bench.lock .venv/bin/python bench/bench_sctp.py [--n 20000] [--size 1000]
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import time

from pylvs.core.director import Director
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from pylvs.engines.packet import sctp
from pylvs.engines.packet.forward import Forwarder, Iface, Route
from pylvs.engines.packet.frames import ipv4_header
from pylvs.engines.packet.neigh import Neighbours
from pylvs.engines.packet.ports import PortPool
from pylvs.lab.sctppeer import chunk, packet

A = socket.inet_aton
ME, LAN, CL, RSMAC = (
    bytes.fromhex(x) for x in ("020000000001", "020000000002", "02000000000c", "0200000000a1")
)
VIP, CIP, RIP, LIP = "172.25.254.100", "172.25.254.10", "192.168.1.10", "192.168.1.100"


def frame(src: str, sp: int, dst: str, dp: int, chunks: list[bytes], to: bytes) -> bytearray:
    pkt = packet(sp, dp, 1, chunks)
    ip = ipv4_header(A(src), A(dst), sctp.IPPROTO_SCTP, len(pkt))
    return bytearray(bytes(10) + to + CL + b"\x08\x00" + bytes(ip) + bytes(pkt))


def forwarder(fwd: Fwd, rport: int) -> Forwarder:
    d = Director()
    key = ServiceKey.for_addr(Proto.SCTP, ipaddress.ip_address(VIP), 80)
    d.add_service(key, ServiceConfig(scheduler="rr"))
    d.add_dest(key, DestConfig(addr=ipaddress.ip_address(RIP), port=rport, fwd=fwd))
    ifaces = {1: Iface(1, "eth0", ME, 1500, [A(VIP)]), 2: Iface(2, "eth1", LAN, 1500, [A(LIP)])}

    def route(dst: bytes) -> Route:
        return Route(2, dst, A(LIP)) if dst.startswith(A(RIP)[:3]) else Route(1, dst, A(VIP))

    nb = Neighbours(kernel_table=None)
    nb.macs[A(RIP)] = RSMAC
    f = Forwarder(d, ifaces, route, nb, PortPool(10000, 30000))
    f.load_rules()
    return f


def run(fwd: Fwd, rport: int, n: int, size: int) -> tuple[float, int]:
    """(us per DATA packet, how many of them took the fast path) after a whole handshake."""
    f = forwarder(fwd, rport)
    t = 1.0
    init = struct.pack("!IIHHI", 1, 65536, 1, 1, 1)
    out = f.handle(1, frame(CIP, 5000, VIP, 80, [chunk(sctp.INIT, 0, init)], ME), t)
    lport = struct.unpack_from("!H", out[0][1], 44)[0]  # virtio 10 + Ethernet 14 + IPv4 20
    to, port = (LIP, lport) if fwd == Fwd.FULLNAT else (CIP, 5000)
    if fwd in (Fwd.MASQ, Fwd.FULLNAT):  # DR and TUN replies bypass the director
        f.handle(2, frame(RIP, rport, to, port, [chunk(sctp.INIT_ACK, 0, init)], LAN), t)
    f.handle(1, frame(CIP, 5000, VIP, 80, [chunk(sctp.COOKIE_ECHO, 0, b"c" * 16)], ME), t)
    if fwd in (Fwd.MASQ, Fwd.FULLNAT):
        f.handle(2, frame(RIP, rport, to, port, [chunk(sctp.COOKIE_ACK)], LAN), t)
    data = frame(CIP, 5000, VIP, 80, [chunk(sctp.DATA, 3, bytes(12) + bytes(size))], ME)
    frames = [bytearray(data) for _ in range(n)]  # handle() rewrites in place
    fast = f.counters["fast"]
    start = time.perf_counter()
    for fr in frames:
        t += 0.0001
        f.handle(1, fr, t)
    return (time.perf_counter() - start) * 1e6 / n, f.counters["fast"] - fast


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=1000, help="DATA payload bytes")
    a = ap.parse_args()
    print(f"SCTP DATA packets of {a.size} payload bytes, client -> real server, {a.n} packets per row")
    print(f"{'method':<26} {'us/pkt':>7} {'fast path':>10}")
    for name, fwd, rport in (
        ("Masq, same port", Fwd.MASQ, 80),
        ("Masq, port 80 -> 8080", Fwd.MASQ, 8080),
        ("Route", Fwd.DROUTE, 80),
        ("Tunnel", Fwd.TUNNEL, 80),
        ("FullNat", Fwd.FULLNAT, 80),
    ):
        us, fast = run(fwd, rport, a.n, a.size)
        print(f"{name:<26} {us:>7.1f} {fast * 100 / a.n:>9.0f}%")
    buf = bytearray(frame(CIP, 5000, VIP, 80, [chunk(sctp.DATA, 3, bytes(12) + bytes(a.size))], ME))
    end = len(buf)
    start = time.perf_counter()
    for _ in range(a.n):
        sctp.compute(buf, 44, end)
    print(f"{'CRC32c of one packet':<26} {(time.perf_counter() - start) * 1e6 / a.n:>7.2f}")


if __name__ == "__main__":
    main()
