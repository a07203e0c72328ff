"""UDP services: one listening socket per service, one connected socket per client flow.

A flow is keyed by the client's address:port, as IPVS keys a UDP entry. Every datagram is a packet in
for the core (so each gets the core's verdict), every reply a packet out. A flow ends when it has been
idle for its entry's timeout (the UDP timeout of `--set`).
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any, cast

from pylvs.core.types import IPAddr, Proto
from pylvs.engines.proxy import feed
from pylvs.engines.proxy.feed import Flow
from pylvs.engines.proxy.sockets import family, outgoing

if TYPE_CHECKING:
    from pylvs.engines.proxy.engine import ProxyEngine

MAX_REPLIES_PER_WAKE = 64  # bound the work one readable event does
RECV_SIZE = 65535


class UdpFlow:
    """One client's flow to its real server, through a connected socket of its own."""

    __slots__ = ("caddr", "flow", "last", "service", "sock")

    def __init__(self, service: UdpService, flow: Flow, caddr: tuple[Any, ...]) -> None:
        self.service = service
        self.flow = flow
        self.caddr = caddr
        self.last = 0.0
        self.sock: socket.socket | None = None

    def open(self, transparent: bool) -> None:
        conn = self.flow.conn
        bind_to = (self.caddr[0], self.caddr[1]) if transparent else None
        sock = outgoing(family(conn.daddr), socket.SOCK_DGRAM, bind_to)
        try:
            sock.connect((str(conn.daddr), conn.dport))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        loop = self.service.engine.loop
        assert loop is not None
        loop.add_reader(sock.fileno(), self.readable)

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)  # type: ignore[union-attr]
        except (BlockingIOError, ConnectionRefusedError, OSError):
            pass  # UDP: a datagram the kernel would not take is a datagram lost

    def readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        svc = self.service
        eng = svc.engine
        now = eng.clock()
        for _ in range(MAX_REPLIES_PER_WAKE):
            try:
                data = sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # ICMP errors from the server surface here; the flow lives on until idle
            self.last = now
            feed.send_out(eng.director, self.flow, 0, len(data), now)
            if svc.transport is not None:
                svc.transport.sendto(data, self.caddr)

    def close(self) -> None:
        sock = self.sock
        if sock is None:
            return
        self.sock = None
        loop = self.service.engine.loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(sock.fileno())
        sock.close()


class UdpService(asyncio.DatagramProtocol):
    """The listening socket of one UDP virtual service."""

    def __init__(self, engine: ProxyEngine, vaddr: IPAddr, vport: int) -> None:
        self.engine = engine
        self.vaddr = vaddr
        self.vport = vport
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[tuple[Any, ...], UdpFlow] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        eng = self.engine
        now = eng.clock()
        uf = self.flows.get(addr)
        if uf is None:
            flow = Flow(Proto.UDP, eng.ip(addr[0]), addr[1], self.vaddr, self.vport, 0)
        else:
            flow = uf.flow
        v = feed.send_in(eng.director, flow, 0, len(data), now)
        if v.action.name != "FORWARD" or v.conn is None:
            if v.action.name == "NO_DEST":
                eng.no_dest(Proto.UDP, self.vaddr, self.vport, 0)
            return  # the kernel would answer port-unreachable; a datagram socket can only drop
        if uf is not None and v.conn is not flow.conn:
            uf.close()  # the old entry expired and the core chose afresh
            del self.flows[addr]
            uf = None
            flow = Flow(Proto.UDP, flow.caddr, flow.cport, self.vaddr, self.vport, 0)
        if uf is None:
            flow.conn = v.conn
            uf = UdpFlow(self, flow, addr)
            try:
                uf.open(eng.transparent_for(v.conn))
            except OSError as e:
                eng.log.warning(
                    "UDP %s:%d -> %s:%d: %s", flow.caddr, flow.cport, v.conn.daddr, v.conn.dport, e
                )
                return
            self.flows[addr] = uf
        uf.last = now
        uf.send(data)

    def expire(self, now: float) -> None:
        """Close flows idle for longer than their entry's timeout."""
        dead = []
        for addr, uf in self.flows.items():
            if now - uf.last > self.engine.idle_limit(uf.flow.conn):
                dead.append(addr)
        for addr in dead:
            self.flows.pop(addr).close()

    def close(self) -> None:
        for uf in self.flows.values():
            uf.close()
        self.flows.clear()
        if self.transport is not None:
            self.transport.close()
