"""One proxied TCP connection: the client's socket, the real server's socket and the core's entry.

Both sides are asyncio Protocols, so relaying a chunk is one callback and one write; no coroutine per
chunk. Bytes are counted on the relay and handed to the core in batches (see ProxyEngine.flush), which
keeps the per-chunk cost to a few attribute updates. Backpressure: when one side's write buffer passes
its high-water mark, reading from the other side pauses, so no buffer grows without bound.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any, cast

from pylvs.engines.proxy import feed
from pylvs.engines.proxy.feed import SYN_ACK, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Flow
from pylvs.engines.proxy.sockets import set_linger_rst

if TYPE_CHECKING:
    from pylvs.engines.proxy.engine import ProxyEngine, TcpListener

WRITE_HIGH = 512 * 1024  # per-direction buffer bound (plus one read chunk)
WRITE_LOW = 128 * 1024
MSS = feed.MSS


def _reset(transport: asyncio.Transport | None) -> None:
    """Close with a RST, not a FIN (the client sees the refusal at once)."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        set_linger_rst(sock)
    transport.abort()


class TcpRelay(asyncio.Protocol):
    """The client side (the accepted socket); owns the relay's state."""

    __slots__ = (
        "c",
        "c_eof",
        "cin_b",
        "cin_p",
        "connect_task",
        "dirty",
        "done",
        "early",
        "early_n",
        "engine",
        "flow",
        "last",
        "listener",
        "s",
        "s_eof",
        "sout_b",
        "sout_p",
        "stalled",
        "started",
    )

    def __init__(self, engine: ProxyEngine, listener: TcpListener) -> None:
        self.engine = engine
        self.listener = listener
        self.c: asyncio.Transport | None = None
        self.s: asyncio.Transport | None = None
        self.flow: Flow | None = None
        self.cin_b = self.cin_p = self.sout_b = self.sout_p = 0
        self.dirty = False
        self.done = False
        self.c_eof = self.s_eof = False
        self.stalled = False
        self.connect_task: asyncio.Task[None] | None = None
        self.early: list[bytes] = []
        self.early_n = 0
        self.last = self.started = 0.0

    # -- the client's socket --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.c = t
        self.engine.tcp_accepted(self, t)

    def data_received(self, data: bytes) -> None:
        s = self.s
        if s is None:
            # Until the real server answers, hold what the client sends (usually its request), and
            # stop reading once that passes the buffer bound.
            self.early.append(data)
            self.early_n += len(data)
            if self.early_n >= WRITE_HIGH and self.c is not None:
                self.c.pause_reading()
            return
        n = len(data)
        s.write(data)
        self.cin_b += n
        self.cin_p += (n + MSS - 1) // MSS
        if not self.dirty:
            self.dirty = True
            self.engine.dirty.append(self)

    def eof_received(self) -> bool:
        self.c_eof = True
        if self.done or self.flow is None:
            return False
        self.flush(self.engine.clock(), fin_in=True)
        if self.done:
            return False
        if self.s is None:
            return True  # still connecting: the request and the EOF go out once connected
        if self.s.can_write_eof():
            self.s.write_eof()  # half-close: the server may still answer
        if self.s_eof:
            self.finish()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done:
            return
        if exc is not None and self.flow is not None and self.flow.conn is not None:
            now = self.engine.clock()
            self.flush(now)
            feed.send_in(self.engine.director, self.flow, TCP_RST, 0, now)
            self.finish(reset=True)
        else:
            self.finish()

    def pause_writing(self) -> None:
        if self.s is not None:
            self.s.pause_reading()

    def resume_writing(self) -> None:
        if self.s is not None and not self.s_eof:
            self.s.resume_reading()

    # -- the real server's socket ------------------------------------------------------------------
    async def connect(self, addr: tuple[str, int], sock: socket.socket | None) -> None:
        loop = self.engine.loop
        assert loop is not None
        try:
            if sock is None:
                await loop.create_connection(lambda: ServerSide(self), addr[0], addr[1])
            else:
                await loop.sock_connect(sock, addr)
                await loop.create_connection(lambda: ServerSide(self), sock=sock)
        except asyncio.CancelledError:
            if sock is not None:
                sock.close()
            raise
        except OSError as e:
            if sock is not None:
                sock.close()
            self.engine.connect_failed(self, addr, e)

    def server_made(self, transport: asyncio.Transport) -> None:
        self.connect_task = None
        if self.done:
            transport.abort()
            return
        self.s = transport
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        eng = self.engine
        now = eng.clock()
        flow = self.flow
        assert flow is not None and self.c is not None
        feed.send_out(eng.director, flow, SYN_ACK, 0, now)
        self.last = now
        if self.early:
            # The client's ACK and what it sent meanwhile: one packet for the core.
            early, self.early = self.early, []
            for chunk in early:
                transport.write(chunk)
                self.cin_p += (len(chunk) + MSS - 1) // MSS
            self.cin_b += self.early_n
            if self.early_n >= WRITE_HIGH and not self.c_eof:
                self.c.resume_reading()
            self.flush(now)
            if self.done:
                return
        else:
            feed.send_in(eng.director, flow, TCP_ACK, 0, now)
        if self.c_eof:
            transport.write_eof()

    def server_data(self, data: bytes) -> None:
        n = len(data)
        self.c.write(data)  # type: ignore[union-attr]
        self.sout_b += n
        self.sout_p += (n + MSS - 1) // MSS
        if not self.dirty:
            self.dirty = True
            self.engine.dirty.append(self)

    def server_eof(self) -> bool:
        self.s_eof = True
        if self.done:
            return False
        self.flush(self.engine.clock(), fin_out=True)
        if self.done:
            return False
        assert self.c is not None
        if self.c.can_write_eof():
            self.c.write_eof()
        if self.c_eof:
            self.finish()
        return True

    def server_lost(self, exc: Exception | None) -> None:
        if self.done:
            return
        if exc is not None and self.flow is not None:
            now = self.engine.clock()
            self.flush(now)
            feed.send_out(self.engine.director, self.flow, TCP_RST, 0, now)
            self.finish(reset=True)
        else:
            self.finish()

    # -- accounting and the end ------------------------------------------------------------------
    def flush(self, now: float, fin_in: bool = False, fin_out: bool = False) -> None:
        """Hand the bytes relayed since the last flush to the core (a FIN rides on the last batch of
        its direction); obey the core's verdict."""
        self.dirty = False
        self.last = now
        flow = self.flow
        if flow is None or flow.conn is None or self.stalled:
            self.cin_b = self.cin_p = self.sout_b = self.sout_p = 0
            return
        director = self.engine.director
        if self.sout_b and not fin_out:
            feed.data_out(director, flow, self.sout_b, self.sout_p, now)
            self.sout_b = self.sout_p = 0
        if self.cin_b or fin_in:
            data = self.cin_b
            flags = TCP_FIN | TCP_ACK if fin_in else TCP_ACK
            v = feed.data_in(director, flow, self.cin_b, self.cin_p, now, flags)
            self.cin_b = self.cin_p = 0
            if data and (v.conn is not flow.conn or v.action.name != "FORWARD"):
                self.lost_entry(v)
                return
        if fin_out:
            feed.data_out(director, flow, self.sout_b, self.sout_p, now, TCP_FIN | TCP_ACK)
            self.sout_b = self.sout_p = 0

    def lost_entry(self, v: Any) -> None:
        """The core no longer forwards this flow (its server was removed, or the entry expired)."""
        if v.action.name == "DROP":
            # expire_nodest_conn=0: the kernel silently drops the packets; the flow stalls until
            # its idle timeout, which is what a client of a real director sees.
            self.stalled = True
            if self.c is not None:
                self.c.pause_reading()
            if self.s is not None:
                self.s.pause_reading()
            return
        self.finish(reset=True)

    def finish(self, reset: bool = False) -> None:
        if self.done:
            return
        self.done = True
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        if reset:
            _reset(self.c)
            _reset(self.s)
        else:
            if self.c is not None:
                self.c.close()
            if self.s is not None:
                self.s.close()
        self.engine.tcp_done(self)


class ServerSide(asyncio.Protocol):
    """The real server's socket: forwards every event to its relay."""

    __slots__ = ("data_received", "relay")

    def __init__(self, relay: TcpRelay) -> None:
        self.relay = relay
        self.data_received = relay.server_data  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.relay.server_made(cast(asyncio.Transport, transport))

    def eof_received(self) -> bool:
        return self.relay.server_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.server_lost(exc)

    def pause_writing(self) -> None:
        c = self.relay.c
        if c is not None:
            c.pause_reading()

    def resume_writing(self) -> None:
        r = self.relay
        if r.c is not None and not r.c_eof and not r.stalled:
            r.c.resume_reading()


_ = TCP_SYN
