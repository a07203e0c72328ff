"""One proxied TCP connection: the client's socket, the real server's socket and the core's entry.

The relay works on the two non-blocking sockets directly, driven by readiness events from the
engine's Poller (one epoll set, see poller.py): accept, connect, recv and send are one system call each
and nothing else runs per chunk (no transport objects, no coroutine per connection or per chunk).

Bytes are counted on the relay and handed to the core in batches (see ProxyEngine.flush). Backpressure:
when the destination socket does not take a whole chunk, the rest is kept (one chunk at most) and
reading from the source stops until it is sent, so nothing buffers without bound.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

from pylvs.engines.proxy import feed
from pylvs.engines.proxy.feed import TCP_ACK, TCP_FIN, TCP_RST, Flow
from pylvs.engines.proxy.poller import ERR, HUP, IN, OUT, Poller
from pylvs.engines.proxy.sockets import outgoing, set_linger_rst

if TYPE_CHECKING:
    from pylvs.engines.proxy.engine import ProxyEngine

CHUNK = 256 * 1024  # one read; also the most a relay holds per direction
DETACHED = -1  # interest mask of a socket taken out of the poller (hung up while not read)
MSS = feed.MSS
_RETRY = (BlockingIOError, InterruptedError)


def close_with_rst(sock: socket.socket) -> None:
    """Close with a RST, not a FIN (a refused client sees it at once)."""
    set_linger_rst(sock)
    sock.close()


class TcpRelay:
    """A client's socket, its real server's socket, and what is in flight between them."""

    __slots__ = (
        "c",
        "c_eof",
        "c_mask",
        "c_reading",
        "cfd",
        "cin_b",
        "cin_p",
        "connected",
        "dirty",
        "done",
        "engine",
        "flow",
        "last",
        "poller",
        "s",
        "s_eof",
        "s_mask",
        "s_reading",
        "sfd",
        "sout_b",
        "sout_p",
        "stalled",
        "started",
        "to_c",
        "to_s",
    )

    def __init__(
        self, engine: ProxyEngine, c: socket.socket, s: socket.socket, flow: Flow, now: float
    ) -> None:
        assert engine.poller is not None
        self.engine = engine
        self.poller: Poller = engine.poller
        self.c = c
        self.s = s
        self.cfd = c.fileno()
        self.sfd = s.fileno()
        self.flow = flow
        self.cin_b = self.cin_p = self.sout_b = self.sout_p = 0
        self.dirty = False
        self.done = False
        self.connected = False
        self.c_eof = self.s_eof = False
        self.c_reading = self.s_reading = False
        self.c_mask = self.s_mask = 0  # what the poller reports for each socket
        self.stalled = False
        self.to_c = b""  # what the client's socket did not take yet
        self.to_s = b""
        self.started = self.last = now

    # -- connecting ----------------------------------------------------------------------------
    def connect(self, addr: tuple[str, int]) -> None:
        """Start the non-blocking connect; on_connect runs when the socket becomes writable."""
        err = self.s.connect_ex(addr)
        if err == errno.EADDRNOTAVAIL and self.s.getsockname()[1] == self.flow.cport:
            # Transparent mode keeps the client's port when it can; this 4-tuple is still taken
            # (an old connection in TIME_WAIT), so let the kernel pick a port.
            host, fam = self.s.getsockname()[0], self.s.family
            self.s.close()
            try:
                self.s = outgoing(fam, socket.SOCK_STREAM, (host, 0))
            except OSError as e:
                self.s = socket.socket()  # closed below by finish()
                self.engine.connect_failed(self, addr, e)
                return
            self.sfd = self.s.fileno()
            err = self.s.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
            self.engine.connect_failed(self, addr, OSError(err, "connect failed"))
            return
        self.s_mask = OUT
        self.poller.register(self.sfd, OUT, self.s_event)

    def on_connect(self, ev: int) -> None:
        if self.done:
            return
        # Writable without an error or hang-up means connected; only a failure needs SO_ERROR.
        err = self.s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if ev & (ERR | HUP) else 0
        if err or ev & (ERR | HUP):
            self.engine.connect_failed(self, ("?", 0), OSError(err, "connect failed"))
            return
        self.connected = True
        # The server's SYN+ACK and the client's ACK ride with the first batch of each direction (the
        # states come out the same, and a short connection costs the core 4 packets instead of 6).
        self.sout_p = self.cin_p = 1
        if not self.dirty:
            self.dirty = True
            self.engine.dirty.append(self)
        # Only now read the client: what it sent meanwhile waited in its socket.
        self.c_reading = self.s_reading = True
        self.c_mask = self.s_mask = IN
        self.poller.modify(self.sfd, IN)
        self.poller.register(self.cfd, IN, self.c_event)

    # -- readiness -------------------------------------------------------------------------------
    def c_event(self, ev: int) -> None:
        if ev & (IN | ERR | HUP) and self.c_reading:
            self.c_readable()
        if ev & OUT and self.to_c and not self.done:
            self.c_writable()
        elif ev & (ERR | HUP) and not self.c_reading and not self.to_c and not self.done:
            # Hung up (or reset) while we are not reading it: what is left in its buffer, and the
            # error if any, comes out when reading resumes; until then stop the repeated reports.
            self.c_mask = DETACHED
            self.poller.unregister(self.cfd)

    def s_event(self, ev: int) -> None:
        if not self.connected:
            self.on_connect(ev)
            return
        if ev & (IN | ERR | HUP) and self.s_reading:
            self.s_readable()
        if ev & OUT and self.to_s and not self.done:
            self.s_writable()
        elif ev & (ERR | HUP) and not self.s_reading and not self.to_s and not self.done:
            self.s_mask = DETACHED
            self.poller.unregister(self.sfd)

    def _interest(self) -> None:
        """Tell the poller what each socket waits for now (after a change of reading or buffering)."""
        if self.done:
            return
        mask = (IN if self.c_reading else 0) | (OUT if self.to_c else 0)
        if mask != self.c_mask:
            if self.c_mask != DETACHED:
                self.poller.modify(self.cfd, mask)
            elif mask:
                self.poller.register(self.cfd, mask, self.c_event)
            else:
                mask = DETACHED
            self.c_mask = mask
        mask = (IN if self.s_reading else 0) | (OUT if self.to_s else 0)
        if mask != self.s_mask:
            if self.s_mask != DETACHED:
                self.poller.modify(self.sfd, mask)
            elif mask:
                self.poller.register(self.sfd, mask, self.s_event)
            else:
                mask = DETACHED
            self.s_mask = mask

    # -- client -> server ------------------------------------------------------------------------
    def c_readable(self) -> None:
        try:
            data = self.c.recv(CHUNK)
        except _RETRY:
            return
        except OSError:
            self.reset_by(client=True)
            return
        if not data:
            self.client_eof()
            return
        n = len(data)
        self.cin_b += n
        self.cin_p += (n + MSS - 1) // MSS
        if not self.dirty:
            self.dirty = True
            self.engine.dirty.append(self)
        try:
            sent = self.s.send(data)
        except _RETRY:
            sent = 0
        except OSError:
            self.reset_by(client=False)
            return
        if sent < n:
            self.to_s = data[sent:]
            self.c_reading = False
            self._interest()

    def s_writable(self) -> None:
        if self.done:
            return
        try:
            sent = self.s.send(self.to_s)
        except _RETRY:
            return
        except OSError:
            self.reset_by(client=False)
            return
        self.to_s = self.to_s[sent:]
        if self.to_s:
            return
        if self.c_eof:
            self._shut(self.s)
        elif not self.stalled:
            self.c_reading = True
        self._interest()

    def client_eof(self) -> None:
        self.c_eof = True
        self.c_reading = False
        self.flush(self.engine.clock(), fin_in=True)
        if self.done:
            return
        if not self.s_eof:
            self._interest()
        if self.s_eof:
            self.finish()  # both directions are done: close() says the rest
        elif not self.to_s:
            self._shut(self.s)  # half-close: the server may still answer

    # -- server -> client ------------------------------------------------------------------------
    def s_readable(self) -> None:
        try:
            data = self.s.recv(CHUNK)
        except _RETRY:
            return
        except OSError:
            self.reset_by(client=False)
            return
        if not data:
            self.server_eof()
            return
        n = len(data)
        self.sout_b += n
        self.sout_p += (n + MSS - 1) // MSS
        if not self.dirty:
            self.dirty = True
            self.engine.dirty.append(self)
        try:
            sent = self.c.send(data)
        except _RETRY:
            sent = 0
        except OSError:
            self.reset_by(client=True)
            return
        if sent < n:
            self.to_c = data[sent:]
            self.s_reading = False
            self._interest()

    def c_writable(self) -> None:
        if self.done:
            return
        try:
            sent = self.c.send(self.to_c)
        except _RETRY:
            return
        except OSError:
            self.reset_by(client=True)
            return
        self.to_c = self.to_c[sent:]
        if self.to_c:
            return
        if self.s_eof:
            self._shut(self.c)
        elif not self.stalled:
            self.s_reading = True
        self._interest()

    def server_eof(self) -> None:
        self.s_eof = True
        self.s_reading = False
        self.flush(self.engine.clock(), fin_out=True)
        if self.done:
            return
        if not self.c_eof:
            self._interest()
        if self.c_eof:
            self.finish()
        elif not self.to_c:
            self._shut(self.c)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # -- accounting and the end ------------------------------------------------------------------
    def flush(self, now: float, fin_in: bool = False, fin_out: bool = False) -> None:
        """Hand the bytes relayed since the last flush to the core (a FIN rides on the last batch of
        its direction); obey the core's verdict."""
        self.dirty = False
        self.last = now
        flow = self.flow
        if flow.conn is None or self.stalled:
            self.cin_b = self.cin_p = self.sout_b = self.sout_p = 0
            return
        director = self.engine.director
        if self.sout_p and not fin_out:
            feed.data_out(director, flow, self.sout_b, self.sout_p, now)
            self.sout_b = self.sout_p = 0
        if self.cin_p or fin_in:
            data = self.cin_b
            flags = TCP_FIN | TCP_ACK if fin_in else TCP_ACK
            self.cin_p += fin_in  # the FIN is a segment of its own (for the packet counter)
            v = feed.data_in(director, flow, self.cin_b, self.cin_p, now, flags)
            self.cin_b = self.cin_p = 0
            if data and (v.conn is not flow.conn or v.action.name != "FORWARD"):
                self.lost_entry(v.action.name)
                return
        if fin_out:
            feed.data_out(director, flow, self.sout_b, self.sout_p + 1, now, TCP_FIN | TCP_ACK)
            self.sout_b = self.sout_p = 0

    def lost_entry(self, action: str) -> None:
        """The core no longer forwards this flow (its server was removed, or the entry expired)."""
        if action == "DROP":
            # expire_nodest_conn=0: the kernel silently drops the packets; the flow stalls until
            # its idle timeout, which is what a client of a real director sees.
            self.stalled = True
            self._stop_io()
            return
        self.finish(reset=True)

    def reset_by(self, client: bool) -> None:
        """One side reset (or failed hard): the core sees an RST from it, the other side gets one."""
        if self.done:
            return
        eng = self.engine
        now = eng.clock()
        self.flush(now)
        if self.flow.conn is not None and not self.done:
            if client:
                feed.send_in(eng.director, self.flow, TCP_RST, 0, now)
            else:
                feed.send_out(eng.director, self.flow, TCP_RST, 0, now)
        self.finish(reset=True)

    def _stop_io(self) -> None:
        """Stop reading both sides (a stalled flow): the poller then reports only errors and hang-ups."""
        self.c_reading = self.s_reading = False
        if self.connected:
            self._interest()

    def finish(self, reset: bool = False) -> None:
        if self.done:
            return
        self.done = True
        self.c_reading = self.s_reading = False
        self.poller.forget(self.cfd)  # closing the sockets takes them out of the epoll set
        self.poller.forget(self.sfd)
        if reset:
            close_with_rst(self.c)
            close_with_rst(self.s)
        else:
            self.c.close()
            self.s.close()
        self.engine.tcp_done(self)

    # -- introspection (tests, metrics) --------------------------------------------------------------
    def buffered(self) -> int:
        """Bytes the relay holds for either side (bounded by CHUNK each)."""
        return len(self.to_c) + len(self.to_s)
