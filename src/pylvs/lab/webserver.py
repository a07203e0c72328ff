"""The real servers' web server in the labs: answers "welcome to <its ip>" like the seed's httpd.

GET /            welcome to <ip>
GET /peer        the address and port the server sees the client at (who is the client, really?)
GET /bytes?n=N   N bytes of a fixed pattern (downloads)
POST /           reads the body, answers "received N <sha256>" (uploads)
UDP, same port   a datagram gets "welcome to <ip> peer <addr>:<port>"

Run: python -m pylvs.lab.webserver --ip 192.168.1.10 [--port 80]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import socket
import struct
import threading

PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern_bytes(n: int) -> bytes:
    reps, rest = divmod(n, len(PATTERN))
    return PATTERN * reps + PATTERN[:rest]


class Web:
    def __init__(self, ip: str) -> None:
        self.ip = ip

    @staticmethod
    async def stream(writer: asyncio.StreamWriter, n: int) -> None:
        """A large download, written a pattern block at a time (never the whole body in memory)."""
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n".encode()
        )
        full, rest = divmod(n, len(PATTERN))
        for _ in range(full):
            writer.write(PATTERN)
            await writer.drain()
        writer.write(PATTERN[:rest])
        await writer.drain()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ver = ([*lines[0].split(" "), "", "", ""])[:3]
                hdrs = {
                    k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)
                }
                length = int(hdrs.get("content-length", "0") or 0)
                h = hashlib.sha256()
                got = 0
                while got < length:
                    chunk = await reader.read(min(65536, length - got))
                    if not chunk:
                        return
                    h.update(chunk)
                    got += len(chunk)
                if method == "POST":
                    body = f"received {got} {h.hexdigest()}\n".encode()
                elif target == "/peer":
                    body = f"{peer[0]}:{peer[1]}\n".encode()
                elif target.startswith("/bytes"):
                    n = int(target.partition("n=")[2] or 0)
                    if n > len(PATTERN):
                        await self.stream(writer, n)
                        continue
                    body = pattern_bytes(n)
                else:
                    body = f"welcome to {self.ip}\n".encode()
                close = hdrs.get("connection", "").lower() == "close"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\n".encode()
                    + (b"Connection: close\r\n" if close else b"")
                    + b"\r\n"
                    + body
                )
                await writer.drain()
                if close:
                    return
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            return
        finally:
            writer.close()


IP_PKTINFO = 8


def udp_loop(ip: str, port: int) -> None:
    """Answer datagrams from the address they were sent to (IP_PKTINFO), so a DR/TUN real server
    answers from the VIP on its lo and not from its own address."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    s.bind(("0.0.0.0", port))
    while True:
        _data, anc, _flags, addr = s.recvmsg(65535, 256)
        reply = f"welcome to {ip} peer {addr[0]}:{addr[1]}\n".encode()
        cmsgs = []
        for level, kind, val in anc:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                # struct in_pktinfo: ifindex, spec_dst, addr; reply from the address it reached
                cmsgs.append((level, kind, struct.pack("i4s4s", 0, val[8:12], bytes(4))))
        try:
            s.sendmsg([reply], cmsgs, 0, addr)
        except OSError:
            pass


async def serve(ip: str, port: int) -> None:
    web = Web(ip)
    server = await asyncio.start_server(web.handle, None, port, reuse_address=True)  # IPv4 and IPv6
    threading.Thread(target=udp_loop, args=(ip, port), daemon=True).start()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pylvs-lab-web")
    ap.add_argument("--ip", required=True, help="the address to name in the greeting")
    ap.add_argument("--port", type=int, default=80)
    a = ap.parse_args(argv)
    try:
        asyncio.run(serve(a.ip, a.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
