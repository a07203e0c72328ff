"""`pylvs demo`: the quick start. Two small HTTP backends on loopback, a virtual service in front of them
on the proxy engine (in-process: no daemon, no root), ten requests, the answers and the rule table."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import socket
import sys
import time
from collections.abc import Callable

from pylvs.core.director import Director, take_snapshot
from pylvs.core.errors import IPVSError
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from pylvs.engines.proxy import ProxyEngine

HELP = "quick start: two loopback backends behind a virtual service on the proxy engine, ten requests"
LOOPBACK = "127.0.0.1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--requests", type=int, default=10, help="how many requests to send (1-1000)")
    parser.add_argument(
        "-s", "--scheduler", default="rr", help="scheduler of the virtual service (default rr)"
    )


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.requests <= 1000:
        print("pylvs demo: --requests must be between 1 and 1000", file=sys.stderr)
        return 2
    try:
        import uvloop

        runner: Callable[..., int] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the demo runs without it
        runner = asyncio.run
    try:
        return runner(demo(args.requests, args.scheduler))
    except IPVSError as e:  # e.g. an unknown scheduler: ipvsadm's own words
        print(f"pylvs demo: {e} ({args.scheduler!r})", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"pylvs demo: {e}", file=sys.stderr)
        return 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


async def start_backend(name: str) -> tuple[asyncio.AbstractServer, int]:
    """A tiny HTTP/1.0-style server that says who it is and shows the client address it saw."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            peer = writer.get_extra_info("peername")
            body = f"hello from backend {name} (you are {peer[0]}:{peer[1]})\n".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    port: int = server.sockets[0].getsockname()[1]
    return server, port


async def http_get(port: int) -> str:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 5)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    return f"{status.split(' ', 1)[-1]}  {body.decode(errors='replace').strip()}"


def listing(director: Director, clock: Callable[[], float], argv: list[str]) -> str:
    """What `pylvsadm ARGV` prints for the demo's director (a plain table if the front end is missing)."""
    try:
        from pylvs.ipvsadm.backend import LocalBackend
        from pylvs.ipvsadm.run import run_ipvsadm
    except ImportError:  # pragma: no cover - only while the ipvsadm front end is absent
        return _plain_listing(director)
    result = run_ipvsadm(LocalBackend(director, clock), argv, prog="pylvsadm")
    return str(result.out) + str(result.err)


def _plain_listing(director: Director) -> str:
    snap = take_snapshot(director)
    lines = [
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port  Forward Weight ActiveConn InActConn",
    ]
    for s in snap.services:
        lines.append(f"{Proto(s.protocol).label}  {s.addr}:{s.port} {s.scheduler}")
        for d in s.dests:
            fwd = Fwd(d.fwd).label
            lines.append(f"  -> {d.addr}:{d.port}  {fwd:<7} {d.weight:<6} {d.activeconns:<10} {d.inactconns}")
    return "\n".join(lines) + "\n"


async def demo(requests: int, scheduler: str) -> int:
    clock = time.monotonic
    backends = [await start_backend(name) for name in ("A", "B")]
    director = Director()
    engine: ProxyEngine | None = None
    try:
        vip = ipaddress.ip_address(LOOPBACK)
        vport = free_port()
        key = ServiceKey.for_addr(Proto.TCP, vip, vport)
        director.add_service(key, ServiceConfig(scheduler=scheduler))
        for _, port in backends:
            director.add_dest(key, DestConfig(vip, port, fwd=Fwd.FULLNAT, weight=1))
        engine = ProxyEngine(director, asyncio.get_running_loop(), clock=clock, drive_tick=True)
        await engine.start()
        if not engine.listeners:
            print(f"pylvs demo: could not listen on {LOOPBACK}:{vport}", file=sys.stderr)
            return 1
        real = ", ".join(f"{LOOPBACK}:{p} (backend {n})" for (_, p), n in zip(backends, "AB", strict=True))
        print(f"virtual service TCP {LOOPBACK}:{vport} ({scheduler}) -> {real}, --fullnat, proxy engine")
        print(f"sending {requests} requests to http://{LOOPBACK}:{vport}/")
        for i in range(1, requests + 1):
            try:
                print(f"  {i:2d}: {await http_get(vport)}")
            except (OSError, TimeoutError, ValueError) as e:
                print(f"  {i:2d}: failed: {e or type(e).__name__}")
        await asyncio.sleep(0.1)  # let the relays see the clients' last FINs
        engine.flush()
        for argv in (["-Ln"], ["-Ln", "--stats"]):
            print(f"\n$ pylvsadm {' '.join(argv)}")
            print(listing(director, clock, argv), end="")
        return 0
    finally:
        if engine is not None:
            await engine.stop(drain=True)
        for server, _ in backends:
            server.close()
            await server.wait_closed()
