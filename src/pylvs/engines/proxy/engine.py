"""The proxy engine: listens on every virtual service, asks the core for a real server for each new
connection or UDP flow, and relays the bytes (see tcp.py and udp.py).

Forwarding methods: --fullnat (the real server sees the director's address) and -m as a transparent
proxy (the outgoing socket is bound to the client's address with IP_TRANSPARENT, so the real server
sees the client and must route its replies back through the director). Firewall-mark services are
served by one TPROXY listener: the mark comes from SO_MARK on the accepted socket
(net.ipv4.tcp_fwmark_accept=1), the original destination from getsockname().
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from pylvs.core.director import Director
from pylvs.core.types import AF_INET, DestConfig, Fwd, IPAddr, Proto, ServiceKey
from pylvs.engines.base import Engine
from pylvs.engines.proxy import feed
from pylvs.engines.proxy.feed import TCP_RST, TCP_SYN, Flow
from pylvs.engines.proxy.poller import Poller
from pylvs.engines.proxy.sockets import family, get_mark, outgoing, tcp_listener, udp_listener
from pylvs.engines.proxy.tcp import TcpRelay, close_with_rst
from pylvs.engines.proxy.udp import UdpService

DEFAULT_TPROXY_PORT = 9999  # $PYLVS_TPROXY_PORT overrides it (pylvsd passes no engine options)
FWMARK_ACCEPT = "/proc/sys/net/ipv4/tcp_fwmark_accept"

ListenerKey = tuple[Any, ...]


def _env_port(name: str, default: int) -> int:
    try:
        port = int(os.environ.get(name, default))
    except ValueError:
        return default
    return port if 0 < port < 65536 else default


class TcpListener:
    """A listening socket, accepting in batches from the event loop's readiness callback."""

    __slots__ = ("engine", "sock", "tproxy", "vaddr", "vport")

    ACCEPT_BATCH = 64  # accepts per wake-up: bounded, so one busy service cannot starve the rest

    def __init__(self, engine: ProxyEngine, sock: socket.socket, vaddr: IPAddr | None, vport: int) -> None:
        self.engine = engine
        self.sock = sock
        self.vaddr = vaddr
        self.vport = vport
        self.tproxy = vaddr is None

    def start(self) -> None:
        assert self.engine.loop is not None
        self.engine.loop.add_reader(self.sock.fileno(), self.accept_ready)

    def accept_ready(self) -> None:
        accept = self.sock.accept
        accepted = self.engine.tcp_accepted
        for _ in range(self.ACCEPT_BATCH):
            try:
                c, peer = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: leave the rest in the backlog for now
                self.engine._warn_once(("accept", e.errno), f"accept failed: {e.strerror}")
                return
            c.setblocking(False)
            accepted(self, c, peer)

    def close(self) -> None:
        loop = self.engine.loop
        if self.sock.fileno() >= 0:
            if loop is not None and not loop.is_closed():
                loop.remove_reader(self.sock.fileno())
            self.sock.close()


class ProxyEngine(Engine):
    name = "proxy"

    def __init__(
        self,
        director: Director,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        tproxy_port: int | None = None,
        tproxy_addr: str = "0.0.0.0",
        drain_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        flush_interval: float = 0.5,
        no_dest_interval: float = 5.0,
        drive_tick: bool = False,
    ) -> None:
        super().__init__(director, loop)
        self.clock = clock
        self.tproxy_port = tproxy_port or _env_port("PYLVS_TPROXY_PORT", DEFAULT_TPROXY_PORT)
        self.tproxy_addr = tproxy_addr
        self.drain_timeout = drain_timeout
        self.connect_timeout = connect_timeout
        self.flush_interval = flush_interval
        self.no_dest_interval = no_dest_interval
        self.drive_tick = drive_tick
        self.log = logging.getLogger("pylvs.proxy")
        self.relays: set[TcpRelay] = set()
        self.poller: Poller | None = None
        self.dirty: list[TcpRelay] = []
        self.listeners: dict[ListenerKey, TcpListener | UdpService] = {}
        self.retiring: list[UdpService] = []
        self._pending: set[asyncio.Task[Any]] = set()
        self._housekeeper: asyncio.Task[None] | None = None
        self._ips: dict[str, IPAddr] = {}
        self._warned: set[ListenerKey] = set()
        self._nodest_next = 0.0
        self._nodest_count = 0
        self._stopping = False
        self.counters = {"accepted": 0, "refused": 0, "connect_failed": 0, "idle_closed": 0}

    # -- the Engine interface -----------------------------------------------------------------------
    def refuse_dest(self, key: ServiceKey, cfg: DestConfig) -> str | None:
        if cfg.fwd == Fwd.DROUTE:
            method = "direct routing (-g)"
        elif cfg.fwd == Fwd.TUNNEL:
            method = "tunnelling (-i)"
        else:
            return None
        return (
            f"the proxy engine cannot forward with {method}: use -m (transparent proxy) or --fullnat, "
            "or run pylvsd --engine packet, which supports -g and -i"
        )

    async def start(self) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if self.poller is None:
            self.poller = Poller(self.loop)
        self._stopping = False
        self.rules_changed()
        await self.ready()
        self._housekeeper = self.loop.create_task(self._housekeep())

    async def ready(self) -> None:
        """Wait until the listeners asked for by the last rules_changed() are up."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def rules_changed(self) -> None:
        if self._stopping or self.loop is None:
            return
        want: dict[ListenerKey, tuple[IPAddr | None, int]] = {}
        for svc in self.director.services:
            if svc.fwmark:
                if svc.af == AF_INET:
                    want[("tproxy",)] = (None, self.tproxy_port)
                else:
                    self._warn_once(("fwm6", svc.fwmark), "IPv6 firewall-mark services are not proxied")
            elif svc.port == 0:
                self._warn_once(
                    ("port0", svc.addr), f"{svc.addr}:0 needs a TPROXY rule; use a firewall-mark service"
                )
            elif svc.protocol == Proto.TCP:
                want[("tcp", svc.addr, svc.port)] = (svc.addr, svc.port)
            elif svc.protocol == Proto.UDP:
                want[("udp", svc.addr, svc.port)] = (svc.addr, svc.port)
            else:
                self._warn_once(("proto", svc.key), f"the proxy engine does not relay {svc.protocol.label}")
        for key in list(self.listeners):
            if key not in want:
                self._stop_listener(key)
        for key, (addr, port) in want.items():
            if key not in self.listeners:
                self._start_listener(key, addr, port)

    async def stop(self, drain: bool = True) -> None:
        self._stopping = True
        for key in list(self.listeners):
            self._stop_listener(key)
        loop = self.loop
        if drain and loop is not None:
            deadline = loop.time() + self.drain_timeout
            while self.relays and loop.time() < deadline:
                await asyncio.sleep(0.05)
                self.flush()
        self.flush()
        for relay in list(self.relays):
            relay.finish(reset=True)
        for us in self.retiring:
            us.close()
        self.retiring.clear()
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            self._housekeeper = None
        if self.poller is not None:
            self.poller.close()
            self.poller = None
        await asyncio.sleep(0)

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {k: float(v) for k, v in self.counters.items()}
        out["tcp_relays"] = float(len(self.relays))
        out["udp_flows"] = float(
            sum(len(u.flows) for u in self.listeners.values() if isinstance(u, UdpService))
            + sum(len(u.flows) for u in self.retiring)
        )
        out["listeners"] = float(len(self.listeners))
        return out

    # -- listeners ------------------------------------------------------------------------------
    def _start_listener(self, key: ListenerKey, addr: IPAddr | None, port: int) -> None:
        loop = self.loop
        assert loop is not None
        for us in self.retiring:
            if key[0] == "udp" and us.vaddr == addr and us.vport == port:
                self.retiring.remove(us)  # a deleted UDP service came back: reuse its socket
                self.listeners[key] = us
                return
        try:
            if key[0] == "udp":
                assert addr is not None
                sock = udp_listener(str(addr), port, family(addr))
                us = UdpService(self, addr, port)
                self.listeners[key] = us
                self._spawn(loop.create_datagram_endpoint(lambda: us, sock=sock))
                return
            if key[0] == "tproxy":
                self._fwmark_accept()
                sock = tcp_listener(self.tproxy_addr, port, socket.AF_INET, transparent=True)
                lst = TcpListener(self, sock, None, port)
            else:
                assert addr is not None
                sock = tcp_listener(str(addr), port, family(addr))
                lst = TcpListener(self, sock, addr, port)
        except OSError as e:
            where = f"{self.tproxy_addr}:{port} (TPROXY)" if key[0] == "tproxy" else f"{addr}:{port}"
            self.log.error("proxy: cannot listen on %s %s: %s", key[0].upper(), where, e.strerror or e)
            return
        self.listeners[key] = lst
        lst.start()

    def _spawn(self, coro: Any) -> None:
        assert self.loop is not None
        task = self.loop.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _stop_listener(self, key: ListenerKey) -> None:
        lst = self.listeners.pop(key)
        if isinstance(lst, UdpService):
            # Its flows live on until idle (the kernel keeps entries of a deleted service too).
            if lst.flows and not self._stopping:
                self.retiring.append(lst)
            else:
                lst.close()
        else:
            lst.close()  # stops accepting; relays in flight are not cut

    def _fwmark_accept(self) -> None:
        try:
            with open(FWMARK_ACCEPT) as f:
                if f.read().strip() == "1":
                    return
            with open(FWMARK_ACCEPT, "w") as f:
                f.write("1\n")
        except OSError as e:
            self._warn_once(("fwmark_accept",), f"cannot set net.ipv4.tcp_fwmark_accept=1 ({e.strerror})")

    def _warn_once(self, key: ListenerKey, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.log.warning("proxy: %s", msg)

    # -- TCP connections -------------------------------------------------------------------------
    def ip(self, text: str) -> IPAddr:
        a = self._ips.get(text)
        if a is None:
            if len(self._ips) > 65536:
                self._ips.clear()
            a = self._ips[text] = ipaddress.ip_address(text.split("%", 1)[0])
        return a

    def transparent_for(self, conn: Any) -> bool:
        return bool(conn.fwd == Fwd.MASQ)

    def tcp_accepted(self, lst: TcpListener, c: socket.socket, peer: tuple[Any, ...]) -> None:
        """A client's SYN reached the service: ask the core, then connect to the chosen server."""
        if lst.tproxy:
            local = c.getsockname()
            vaddr, vport = self.ip(local[0]), local[1]
            mark = get_mark(c)
        else:
            assert lst.vaddr is not None
            vaddr, vport, mark = lst.vaddr, lst.vport, 0
        flow = Flow(Proto.TCP, self.ip(peer[0]), peer[1], vaddr, vport, mark)
        now = self.clock()
        v = feed.send_in(self.director, flow, TCP_SYN, 0, now)
        conn = v.conn
        if conn is None or v.action.name != "FORWARD" or self._stopping:
            if v.action.name == "NO_DEST":
                self.no_dest(Proto.TCP, vaddr, vport, mark)
            self.counters["refused"] += 1
            close_with_rst(c)
            return
        self.counters["accepted"] += 1
        flow.conn = conn
        addr = (str(conn.daddr), conn.dport)
        try:
            bind_to = (peer[0], peer[1]) if self.transparent_for(conn) else None
            s = outgoing(family(conn.daddr), socket.SOCK_STREAM, bind_to)
        except OSError as e:
            feed.send_out(self.director, flow, TCP_RST, 0, now)
            self.counters["connect_failed"] += 1
            self.log.warning("proxy: cannot make a socket towards %s:%d: %s", addr[0], addr[1], e)
            close_with_rst(c)
            return
        relay = TcpRelay(self, c, s, flow, now)
        self.relays.add(relay)
        relay.connect(addr)

    def connect_failed(self, relay: TcpRelay, addr: tuple[str, int], err: BaseException) -> None:
        """The real server refused or did not answer: the client sees a reset, the core an RST out."""
        self.counters["connect_failed"] += 1
        if relay.flow.conn is not None and not relay.done:
            feed.send_out(self.director, relay.flow, TCP_RST, 0, self.clock())
        self.log.debug("proxy: connect to %s:%d failed: %s", addr[0], addr[1], err)
        relay.finish(reset=True)

    def tcp_done(self, relay: TcpRelay) -> None:
        self.relays.discard(relay)

    def no_dest(self, proto: Proto, vaddr: IPAddr, vport: int, mark: int) -> None:
        """Refused for want of a server: log once per interval, not once per connection."""
        now = self.clock()
        self._nodest_count += 1
        if now < self._nodest_next:
            return
        svc = f"FWM {mark}" if mark else f"{proto.label} {vaddr}:{vport}"
        more = f" ({self._nodest_count} refused in the last {self.no_dest_interval:g}s)"
        self.log.warning(
            "proxy: %s - no destination available%s", svc, more if self._nodest_count > 1 else ""
        )
        self._nodest_count = 0
        self._nodest_next = now + self.no_dest_interval

    # -- housekeeping -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Hand every relay's pending byte counts to the core."""
        dirty, self.dirty = self.dirty, []
        if not dirty:
            return
        now = self.clock()
        for relay in dirty:
            if not relay.done:
                relay.flush(now)
            else:
                relay.dirty = False

    def idle_limit(self, conn: Any) -> float:
        """How long a flow may stay silent: its entry's current timeout in the core."""
        t = getattr(conn, "timeout", None)
        if t:
            return float(t)
        return float(self.director.timeouts.udp if conn.protocol == Proto.UDP else self.director.timeouts.tcp)

    def expire_idle(self) -> None:
        now = self.clock()
        for relay in list(self.relays):
            if not relay.connected:
                if now - relay.started > self.connect_timeout:
                    self.connect_failed(relay, ("?", 0), TimeoutError("connect timed out"))
                continue
            conn = relay.flow.conn
            if conn.dead or now - relay.last > self.idle_limit(conn):
                self.counters["idle_closed"] += 1
                relay.finish(reset=True)
        for lst in self.listeners.values():
            if isinstance(lst, UdpService):
                lst.expire(now)
        for us in list(self.retiring):
            us.expire(now)
            if not us.flows:
                us.close()
                self.retiring.remove(us)

    async def _housekeep(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                self.flush()
                n += 1
                if n * self.flush_interval >= 1.0:
                    n = 0
                    self.expire_idle()
                    if self.drive_tick:
                        self.director.tick(self.clock())
            except Exception:  # one bad flow must not stop the housekeeping of all the others
                self.log.exception("proxy: housekeeping failed")


_ = TCP_RST
