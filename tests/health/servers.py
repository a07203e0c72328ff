"""Tiny real servers on loopback for the health tests (asyncio, inside the test's own event loop)."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field


class _Listener:
    """stop(): close the listening socket, so that connects are refused from then on."""

    server: asyncio.Server | None

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@dataclass
class HttpBackend(_Listener):
    """Answers every GET with `status` and `body`; remembers the request heads it saw."""

    host: str
    port: int
    status: int = 200
    body: bytes = b"hello pylvs\n"
    chunked: bool = False
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            if self.chunked:
                mid = len(self.body) // 2
                parts = [self.body[:mid], self.body[mid:]]
                payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"
                hdr = b"Transfer-Encoding: chunked\r\n"
            else:
                payload = self.body
                hdr = b"Content-Length: %d\r\n" % len(self.body)
            w.write(b"HTTP/1.1 %d X\r\n%sConnection: close\r\n\r\n%s" % (self.status, hdr, payload))
            await w.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    async def start(self, ssl: object = None) -> HttpBackend:
        self.server = await asyncio.start_server(self._handle, self.host, self.port, ssl=ssl)  # type: ignore[arg-type]
        return self


class TcpBackend(_Listener):
    """Accepts and closes connections; stop() closes the listener so connects are refused."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.server: asyncio.Server | None = None

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    async def start(self) -> TcpBackend:
        self.server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        return self


class DnsResponder(asyncio.DatagramProtocol):
    """Answers every query with one A record (rcode 0), or with `rcode` when set."""

    def __init__(self, rcode: int = 0) -> None:
        self.rcode = rcode
        self.transport: asyncio.DatagramTransport | None = None
        self.queries: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries.append(data)
        end = 12
        while data[end] != 0:
            end += data[end] + 1
        question = data[12 : end + 5]
        ancount = 0 if self.rcode else 1
        header = data[:2] + struct.pack("!HHHHH", 0x8180 | self.rcode, 1, ancount, 0, 0)
        answer = b"" if self.rcode else b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 0, 0, 1])
        assert self.transport is not None
        self.transport.sendto(header + question + answer, addr)


async def dns_responder(
    host: str, port: int, rcode: int = 0
) -> tuple[asyncio.DatagramTransport, DnsResponder]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: DnsResponder(rcode), local_addr=(host, port)
    )
    return transport, proto
