"""A tiny SCTP peer on raw IP sockets (protocol 132), for labs and tests on a kernel without SCTP.

The kernel here has no SCTP module, so `socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP)` fails; a raw socket
for protocol 132 still receives every SCTP packet to the namespace (and, because a raw socket took
it, the kernel answers nothing itself). Only what a test association needs is spoken:

    server: INIT -> INIT_ACK (with a state cookie); COOKIE_ECHO -> COOKIE_ACK; DATA -> SACK + DATA
            (a JSON answer: its own name, the client address:port it saw, bad checksums so far);
            HEARTBEAT -> HEARTBEAT_ACK; SHUTDOWN -> SHUTDOWN_ACK; SHUTDOWN_COMPLETE / ABORT end it.
    client: INIT, COOKIE_ECHO, DATA (n messages), then SHUTDOWN and SHUTDOWN_COMPLETE.

Every packet received is checked for its CRC32c; a bad one is counted and ignored.

    python -m pylvs.lab.sctppeer serve --name 192.168.1.10 --port 80
    python -m pylvs.lab.sctppeer client --vip 172.25.254.100 --port 80 [--messages 2] [--hold]

The client prints one JSON line after the data exchange and, with --hold, waits for a line on stdin
before it shuts the association down (so a test can look at the director's connection table while
the association is established); then it prints a second JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

from pylvs.engines.packet import sctp

IPPROTO_SCTP = 132
STATE_COOKIE = 7  # INIT_ACK parameter type
Chunk = tuple[int, int, bytes]  # (type, flags, value)


def chunk(kind: int, flags: int = 0, value: bytes = b"") -> bytes:
    body = struct.pack("!BBH", kind, flags, 4 + len(value)) + value
    return body + bytes(-len(body) % 4)


def packet(sport: int, dport: int, vtag: int, chunks: list[bytes], good: bool = True) -> bytearray:
    """An SCTP packet with its CRC32c (a wrong one when not `good`)."""
    pkt = sctp.seal(bytearray(struct.pack("!HHI", sport, dport, vtag) + bytes(4) + b"".join(chunks)))
    if not good:
        pkt[8] ^= 0xFF
    return pkt


def parse(pkt: bytes | bytearray) -> tuple[int, int, int, list[Chunk]]:
    """(source port, destination port, verification tag, chunks) of an SCTP packet."""
    sport, dport, vtag = struct.unpack_from("!HHI", pkt, 0)
    out: list[Chunk] = []
    c = sctp.COMMON
    while c + 4 <= len(pkt):
        kind, flags, length = struct.unpack_from("!BBH", pkt, c)
        if length < 4:
            break
        out.append((kind, flags, bytes(pkt[c + 4 : c + length])))
        c += (length + 3) & ~3
    return sport, dport, vtag, out


def ip_packet(src: str, dst: str, payload: bytes | bytearray) -> bytes:
    """An IPv4 header for IP_HDRINCL (the kernel fills in the checksum and an ident when zero)."""
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0,
        0x4000,
        64,
        IPPROTO_SCTP,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return hdr + bytes(payload)


class RawSCTP:
    """Raw protocol-132 sockets (IPv4, and IPv6 when the namespace has it) that yield (source,
    destination, SCTP packet) for packets with good checksums and count the others."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        self.sock6: socket.socket | None = None
        try:
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_SCTP)
            # IPv6 raw sockets get no IP header: the destination comes as ancillary data
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            self.sock6 = s6
        except OSError:
            pass
        self.bad_crc = 0

    def send(self, src: str, dst: str, pkt: bytes | bytearray) -> None:
        if ":" not in dst:
            self.sock.sendto(ip_packet(src, dst, pkt), (dst, 0))
            return
        if self.sock6 is None:
            raise OSError("no IPv6 raw socket")
        info = socket.inet_pton(socket.AF_INET6, src) + bytes(4)  # in6_pktinfo: source, any interface
        self.sock6.sendmsg([bytes(pkt)], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)], 0, (dst, 0))

    def recv(self, timeout: float) -> tuple[str, str, bytearray] | None:
        end = time.monotonic() + timeout
        socks = [self.sock] + ([self.sock6] if self.sock6 is not None else [])
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready = select.select(socks, [], [], left)[0]
            if not ready:
                return None
            if ready[0] is self.sock:
                data = bytearray(self.sock.recv(65535))
                ihl = (data[0] & 0xF) * 4
                total = struct.unpack_from("!H", data, 2)[0]
                pkt = data[ihl:total]
                src, dst = socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20])
            else:
                raw, anc, _flags, addr = ready[0].recvmsg(65535, 256)
                pkt = bytearray(raw)
                src = str(addr[0])
                dst = next(
                    (
                        socket.inet_ntop(socket.AF_INET6, d[:16])
                        for lvl, kind, d in anc
                        if lvl == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO
                    ),
                    "::",
                )
            if len(pkt) < sctp.COMMON:
                continue
            if not sctp.checksum_ok(pkt, 0, len(pkt)):
                self.bad_crc += 1
                continue
            return src, dst, pkt


def endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


# -- server -------------------------------------------------------------------------------------
@dataclass
class Assoc:
    peer_tag: int
    my_tag: int
    my_tsn: int
    cookie: bytes
    established: bool = False
    got: list[str] = field(default_factory=list)


class Server:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.raw = RawSCTP()
        self.assocs: dict[tuple[str, int], Assoc] = {}

    def serve(self, until: float | None = None) -> None:
        print(f"sctp peer {self.name} on port {self.port}", flush=True)
        while until is None or time.monotonic() < until:
            got = self.raw.recv(1.0)
            if got is not None:
                self.handle(*got)

    def handle(self, src: str, dst: str, pkt: bytearray) -> None:
        sport, dport, vtag, chunks = parse(pkt)
        if dport != self.port or not chunks:
            return
        key = (src, sport)
        a = self.assocs.get(key)
        out: list[bytes] = []
        tag = a.peer_tag if a is not None else 0
        for kind, _flags, value in chunks:
            if kind == sctp.INIT and len(value) >= 16:
                peer_tag, _rwnd, _os, _mis, _tsn = struct.unpack_from("!IIHHI", value)
                my_tag = int.from_bytes(os.urandom(4), "big") or 1
                a = Assoc(peer_tag, my_tag, int.from_bytes(os.urandom(4), "big"), os.urandom(16))
                self.assocs[key] = a
                cookie = struct.pack("!HH", STATE_COOKIE, 4 + len(a.cookie)) + a.cookie
                fixed = struct.pack("!IIHHI", my_tag, 65536, 1, 1, a.my_tsn)
                out.append(chunk(sctp.INIT_ACK, 0, fixed + cookie))
                tag = peer_tag
            elif a is None or vtag != a.my_tag:
                return  # not an association of ours (or a forged tag): stay silent
            elif kind == sctp.COOKIE_ECHO and value == a.cookie:
                a.established = True
                out.append(chunk(sctp.COOKIE_ACK))
            elif kind == sctp.DATA and len(value) >= 12:
                tsn = struct.unpack_from("!I", value)[0]
                text = value[12:].decode(errors="replace")
                a.got.append(text)
                out.append(chunk(sctp.SACK, 0, struct.pack("!IIHH", tsn, 65536, 0, 0)))
                answer = {
                    "server": self.name,
                    "peer": endpoint(src, sport),
                    "bad_crc": self.raw.bad_crc,
                    "got": text,
                }
                data = struct.pack("!IHHI", a.my_tsn, 0, len(a.got) - 1, 0) + json.dumps(answer).encode()
                a.my_tsn = (a.my_tsn + 1) & 0xFFFFFFFF
                out.append(chunk(sctp.DATA, 0x03, data))  # B and E: one whole message
            elif kind == sctp.HEARTBEAT:
                out.append(chunk(sctp.HEARTBEAT_ACK, 0, value))
            elif kind == sctp.SHUTDOWN:
                out.append(chunk(sctp.SHUTDOWN_ACK))
            elif kind in (sctp.SHUTDOWN_COMPLETE, sctp.ABORT):
                self.assocs.pop(key, None)
                return
        if out:
            self.raw.send(dst, src, packet(self.port, sport, tag, out))
            sys.stdout.write(f"{src}:{sport} -> {[c[0] for c in chunks]}\n")
            sys.stdout.flush()


# -- client -------------------------------------------------------------------------------------
class PeerError(RuntimeError):
    pass


class Client:
    def __init__(self, src: str, vip: str, port: int, sport: int | None = None, timeout: float = 3.0) -> None:
        self.src = src
        self.vip = vip
        self.port = port
        self.sport = sport or 20000 + int.from_bytes(os.urandom(2), "big") % 30000
        self.timeout = timeout
        self.raw = RawSCTP()
        self.my_tag = int.from_bytes(os.urandom(4), "big") or 1
        self.tsn = int.from_bytes(os.urandom(4), "big")
        self.peer_tag = 0
        self.peer_tsn = 0
        self.seen_from: set[str] = set()

    def exchange(self, vtag: int, chunks: list[bytes], want: int, tries: int = 3) -> list[Chunk]:
        """Send a packet, and wait for an answer (from our peer, with our tag) holding chunk `want`."""
        pkt = packet(self.sport, self.port, vtag, chunks)
        for _ in range(tries):
            self.raw.send(self.src, self.vip, pkt)
            end = time.monotonic() + self.timeout
            while time.monotonic() < end:
                got = self.raw.recv(end - time.monotonic())
                if got is None:
                    break
                src, _dst, reply = got
                sport, dport, rtag, rchunks = parse(reply)
                if dport != self.sport or sport != self.port or rtag != self.my_tag:
                    continue
                self.seen_from.add(src)
                if any(k == want for k, _f, _v in rchunks):
                    return rchunks
                if any(k == sctp.ABORT for k, _f, _v in rchunks):
                    raise PeerError("the association was aborted")
        raise PeerError(f"no chunk type {want} in answer to {[c[0] for c in chunks]}")

    def connect(self) -> None:
        init = struct.pack("!IIHHI", self.my_tag, 65536, 1, 1, self.tsn)
        rchunks = self.exchange(0, [chunk(sctp.INIT, 0, init)], sctp.INIT_ACK)
        value = next(v for k, _f, v in rchunks if k == sctp.INIT_ACK)
        self.peer_tag, _rwnd, _os, _mis, self.peer_tsn = struct.unpack_from("!IIHHI", value)
        cookie = b""
        p = 16
        while p + 4 <= len(value):
            ptype, plen = struct.unpack_from("!HH", value, p)
            if plen < 4:
                break
            if ptype == STATE_COOKIE:
                cookie = value[p + 4 : p + plen]
            p += (plen + 3) & ~3
        self.exchange(self.peer_tag, [chunk(sctp.COOKIE_ECHO, 0, cookie)], sctp.COOKIE_ACK)

    def send(self, text: str, ssn: int = 0) -> dict[str, object]:
        data = struct.pack("!IHHI", self.tsn, 0, ssn, 0) + text.encode()
        rchunks = self.exchange(self.peer_tag, [chunk(sctp.DATA, 0x03, data)], sctp.DATA)
        self.tsn = (self.tsn + 1) & 0xFFFFFFFF
        value = next(v for k, _f, v in rchunks if k == sctp.DATA)
        self.peer_tsn = struct.unpack_from("!I", value)[0]
        answer: dict[str, object] = json.loads(value[12:].decode())
        # acknowledge the answer (a SACK alone asks for no reply)
        self.raw.send(
            self.src,
            self.vip,
            packet(
                self.sport,
                self.port,
                self.peer_tag,
                [chunk(sctp.SACK, 0, struct.pack("!IIHH", self.peer_tsn, 65536, 0, 0))],
            ),
        )
        return answer

    def shutdown(self) -> None:
        self.exchange(
            self.peer_tag, [chunk(sctp.SHUTDOWN, 0, struct.pack("!I", self.peer_tsn))], sctp.SHUTDOWN_ACK
        )
        self.raw.send(
            self.src, self.vip, packet(self.sport, self.port, self.peer_tag, [chunk(sctp.SHUTDOWN_COMPLETE)])
        )


def _client(a: argparse.Namespace) -> int:
    c = Client(a.src or _source_for(a.vip), a.vip, a.port, a.sport, a.timeout)
    result: dict[str, object] = {"sport": c.sport}
    try:
        c.connect()
        result["answers"] = [c.send(f"message {i}", i) for i in range(a.messages)]
        result["established"] = True
    except PeerError as e:
        result["error"] = str(e)
    result["from"] = sorted(c.seen_from)
    result["bad_crc"] = c.raw.bad_crc
    print(json.dumps(result), flush=True)
    if "error" in result:
        return 1
    if a.hold:
        sys.stdin.readline()
    try:
        c.shutdown()
        print(json.dumps({"closed": True, "bad_crc": c.raw.bad_crc}), flush=True)
    except PeerError as e:
        print(json.dumps({"closed": False, "error": str(e)}), flush=True)
        return 1
    return 0


def _source_for(dst: str) -> str:
    """The address the kernel would pick toward dst (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((dst, 9))
        return str(s.getsockname()[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pylvs-sctppeer", description="a minimal SCTP peer on raw sockets")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True, help="what the server calls itself in its answers")
    s.add_argument("--port", type=int, default=80)
    s.add_argument("--seconds", type=float, default=None, help="stop after this long (default: never)")
    c = sub.add_parser("client")
    c.add_argument("--vip", required=True)
    c.add_argument("--port", type=int, default=80)
    c.add_argument("--src", default=None)
    c.add_argument("--sport", type=int, default=None)
    c.add_argument("--messages", type=int, default=2)
    c.add_argument("--timeout", type=float, default=2.0)
    c.add_argument("--hold", action="store_true", help="wait for a line on stdin before the shutdown")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "serve":
            srv = Server(a.name, a.port)
            srv.serve(None if a.seconds is None else time.monotonic() + a.seconds)
            return 0
        return _client(a)
    except OSError as e:
        print(f"pylvs-sctppeer: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
