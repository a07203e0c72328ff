"""Loopback backends, clients and a director+proxy engine harness for the proxy engine's tests."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import uvloop

from pylvs.core.director import Director
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from pylvs.engines.proxy import ProxyEngine
from tests import support

LO = "127.0.0.1"
LO_IP = ipaddress.ip_address(LO)
T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """Run one test coroutine on uvloop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), timeout)

    return uvloop.run(bounded())


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    return support.free_port(LO, kind)


class Backend:
    """A TCP server that answers each line-free request with 'NAME <peer ip>:<port>' or echoes.

    mode "who": read until the client half-closes or sends b"\\n\\n", answer who it is and who it saw,
    close. mode "echo": echo everything back until EOF, then close.
    """

    def __init__(self, name: str, mode: str = "who", host: str = LO) -> None:
        self.name = name
        self.mode = mode
        self.host = host
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.peers: list[tuple[str, int]] = []
        self.received = 0

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self.peers.append((peer[0], peer[1]))
        try:
            if self.mode == "echo":
                while data := await reader.read(65536):
                    self.received += len(data)
                    writer.write(data)
                    await writer.drain()
            else:
                buf = b""
                while b"\n\n" not in buf:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    buf += chunk
                self.received += len(buf)
                writer.write(f"{self.name} {peer[0]}:{peer[1]}\n".encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


async def ask(port: int, host: str = LO, payload: bytes = b"hi\n\n", timeout: float = 5.0) -> str:
    """One request to a 'who' backend through the proxy; the answer line."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(payload)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return data.decode().strip()


class Harness:
    """A Director with one TCP (or UDP) service on loopback and the proxy engine in front of it."""

    def __init__(self, proto: Proto = Proto.TCP, scheduler: str = "rr", **engine_kw: Any) -> None:
        self.clock = time.monotonic
        self.director = Director()
        self.proto = proto
        self.vport = free_port(socket.SOCK_DGRAM if proto == Proto.UDP else socket.SOCK_STREAM)
        self.key = ServiceKey.for_addr(proto, LO_IP, self.vport)
        self.director.add_service(self.key, ServiceConfig(scheduler=scheduler))
        engine_kw.setdefault("flush_interval", 0.1)
        self.engine_kw = engine_kw
        self.engine: ProxyEngine | None = None

    def add(self, port: int, weight: int = 1, fwd: Fwd = Fwd.FULLNAT) -> None:
        self.director.add_dest(self.key, DestConfig(LO_IP, port, fwd=fwd, weight=weight))

    def set_weight(self, port: int, weight: int) -> None:
        self.director.edit_dest(self.key, DestConfig(LO_IP, port, fwd=Fwd.FULLNAT, weight=weight))

    async def start(self) -> ProxyEngine:
        self.engine = ProxyEngine(
            self.director, asyncio.get_running_loop(), clock=self.clock, **self.engine_kw
        )
        await self.engine.start()
        return self.engine

    def stats(self) -> tuple[int, int, int, int, int]:
        assert self.engine is not None
        self.engine.flush()
        svc = self.director.services.get(self.key)
        assert svc is not None
        return svc.stats.shown()

    def dest_stats(self, port: int) -> tuple[int, int, int, int, int]:
        svc = self.director.services.get(self.key)
        assert svc is not None
        d = svc.find_dest(LO_IP, port)
        assert d is not None
        return d.stats.shown()

    async def stop(self, drain: bool = False) -> None:
        if self.engine is not None:
            await self.engine.stop(drain=drain)


@asynccontextmanager
async def behind(h: Harness, *backends: Backend) -> AsyncIterator[ProxyEngine]:
    """The started backends as h's real servers (in this order), the engine started; afterwards the
    engine stopped, then each backend."""
    for b in backends:
        h.add(b.port)
    engine = await h.start()
    try:
        yield engine
    finally:
        await h.stop()
        for b in backends:
            await b.stop()
