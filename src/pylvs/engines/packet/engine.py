"""`pylvsd --engine packet`: forwards real frames with LVS semantics from user space.

One AF_PACKET socket per interface (ETH_P_ALL, PACKET_VNET_HDR so checksum-offloaded and GSO frames
keep their metadata, PACKET_IGNORE_OUTGOING so we never read our own transmissions, a classic-BPF
prefilter), plus the netdev drop table (nft.py). The Forwarder does the rewriting; this module only
moves frames, learns the interfaces and routes, and keeps the table and filters in step with the rules.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import resource
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pylvs import cbpf
from pylvs.core.director import Director
from pylvs.core.types import DestConfig, Fwd, ServiceKey
from pylvs.engines import gcpolicy
from pylvs.engines.base import Engine
from pylvs.engines.packet import bpf, coreapi, fanout, offload
from pylvs.engines.packet.forward import Forwarder, Iface, Route
from pylvs.engines.packet.neigh import Neighbours
from pylvs.engines.packet.nft import NftTable, remove_stale, spec_from_director
from pylvs.engines.packet.offload import ConnOffload
from pylvs.engines.packet.ports import DEFAULT_RANGE, PortPool
from pylvs.engines.packet.ring import AnyRxRing, TxRing, rx_ring
from pylvs.netlink.nfqueue import NF_ACCEPT, NF_DROP, NfQueue

log = logging.getLogger("pylvs.packet")

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_QDISC_BYPASS = 20
BATCH = 64  # frames read per wake-up before yielding to the loop
BUF = 70000  # a 64 KB GSO frame, its Ethernet and virtio headers
ROUTE_TTL = 30.0


def _ip_json(args: list[str]) -> list[dict[str, Any]]:
    """`ip -j ARGS` parsed. The iproute2 tool, not a netlink library: pyroute2's synchronous API runs
    its own asyncio loop and cannot be used from inside the daemon's; these calls are rare (start-up,
    rule changes, cache misses) and cached."""
    p = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=5)
    if p.returncode != 0 or not p.stdout.strip():
        return []
    data = json.loads(p.stdout)
    return data if isinstance(data, list) else []


class RouteCache:
    """Kernel route lookups (`ip route get`) cached for ROUTE_TTL seconds."""

    def __init__(self, clock: Callable[[], float], ifaces: dict[int, Iface]) -> None:
        self.clock = clock
        self.by_name = {i.name: i.index for i in ifaces.values()}
        self.cache: dict[bytes, tuple[float, Route | None]] = {}

    def __call__(self, dst: bytes) -> Route | None:
        now = self.clock()
        hit = self.cache.get(dst)
        if hit is not None and now - hit[0] < ROUTE_TTL:
            return hit[1]
        rt: Route | None = None
        try:
            fam = socket.AF_INET6 if len(dst) == 16 else socket.AF_INET
            for m in _ip_json(["route", "get", socket.inet_ntop(fam, dst)]):
                idx = self.by_name.get(m.get("dev", ""))
                src = m.get("prefsrc")
                if idx is not None and src:
                    gw = m.get("gateway")
                    rt = Route(idx, socket.inet_pton(fam, gw) if gw else dst, socket.inet_pton(fam, src))
                break
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            log.debug("route get %s: %s", dst.hex(), e)
        self.cache[dst] = (now, rt)
        return rt

    def flush(self) -> None:
        self.cache.clear()

    def close(self) -> None:
        self.cache.clear()


def discover_ifaces(names: Sequence[str] | None = None) -> dict[int, Iface]:
    """Ethernet interfaces that are up (or exactly `names`), with MAC, MTU and IPv4 addresses."""
    out: dict[int, Iface] = {}
    for link in _ip_json(["addr", "show"]):
        name = link.get("ifname", "")
        if names is not None:
            if name not in names:
                continue
        elif link.get("link_type") != "ether" or "UP" not in link.get("flags", []) or name == "lo":
            continue
        mac = link.get("address") or "00:00:00:00:00:00"
        ifc = Iface(link["ifindex"], name, bytes.fromhex(mac.replace(":", "")), int(link.get("mtu", 1500)))
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                ifc.addrs.append(socket.inet_aton(a["local"]))
        out[ifc.index] = ifc
    if names is not None:
        missing = set(names) - {i.name for i in out.values()}
        if missing:
            raise ValueError(f"no such interface: {', '.join(sorted(missing))}")
    return out


class PacketEngine(Engine):
    name = "packet"

    def __init__(
        self,
        director: Director,
        loop: asyncio.AbstractEventLoop | None = None,
        interfaces: Sequence[str] | None = None,
        fullnat_ports: tuple[int, int] = DEFAULT_RANGE,
        clock: Callable[[], float] = time.monotonic,
        table_name: str | None = None,
        ring: str | None = None,
        ring_timeout_ms: int = 1,
        tx_ring: bool = True,
        fanout_worker: tuple[int, int] | None = None,
        members: dict[str, fanout.Member] | None = None,
        tun_offload: bool = False,
        offload: bool = False,
        ahead: bool = False,
    ) -> None:
        super().__init__(director, loop)
        self.interfaces = list(interfaces) if interfaces else None
        self.clock = clock
        # PACKET_FANOUT (fanout.py, off by default): this process is worker `index` of `count`, its
        # sockets already joined by the parent (`members`, by interface name); it owns the index-th
        # slice of the FULLNAT local ports and its own Director (per-worker scheduling and counters).
        self.fanout_worker = fanout_worker
        self.members = members or {}
        self.fullnat_range = fullnat_ports
        if fanout_worker is not None:
            if not members:
                raise ValueError("packet engine: a fanout worker needs its group's sockets")
            fullnat_ports = fanout.port_slice(*fullnat_ports, *fanout_worker)
        self.arp_socks: dict[int, socket.socket] = {}
        self.ports = PortPool(*fullnat_ports)
        self.table = NftTable(table_name)
        self.socks: dict[int, socket.socket] = {}
        self.fwd: Forwarder | None = None
        self.routes: RouteCache | None = None
        self.buf = bytearray(BUF)
        self.view = memoryview(self.buf)
        self.tx_errors = 0
        self.wakeups = 0  # reader callbacks: frames per wake-up says how much batching the load allows
        self.cpu_start = 0.0
        self._sweeper: asyncio.TimerHandle | None = None
        self._pending: asyncio.Handle | None = None
        # Firewall-mark services: marked packets reach us through NFQUEUE (AF_PACKET cannot see marks).
        self.queue_num = 1000 + os.getpid() % 60000
        self.nfq: NfQueue | None = None
        self.marks: list[int] = []  # the fwmark services whose packets are queued to us
        # Memory-mapped rings (ring.py): "v2" / "v3" = a TPACKET_V2 / V3 receive ring per interface
        # instead of one recv() per frame; tx_ring = a transmit ring per interface, one send() per
        # wake-up. Measured (bench/RESULTS.md, 2026-11-25): the TX ring pays under every load, so it
        # is on; the V3 ring pays on steady streams but its block timeout (1 ms at least) slows short
        # connections, so it is off unless asked for.
        if ring not in (None, "v2", "v3"):
            raise ValueError(f"packet engine: unknown ring {ring!r} (v2, v3)")
        if not 1 <= ring_timeout_ms <= 1000:
            raise ValueError("packet engine: ring_timeout_ms must be 1..1000")
        self.ring = ring
        self.ring_timeout_ms = ring_timeout_ms
        self.tx_ring = tx_ring
        self.rx_rings: dict[int, AnyRxRing] = {}
        self.tx_rings: dict[int, TxRing] = {}
        # The kernel forwards the connections the core decided (offload.py): those of TUN servers
        # (tun_offload), or of every method (offload). A fanout worker does not (each worker would
        # need the others' flows in its filter).
        if fanout_worker is not None:
            tun_offload = offload = False
        self.offload_fwds = (
            frozenset((Fwd.MASQ, Fwd.FULLNAT, Fwd.DROUTE, Fwd.TUNNEL))
            if offload
            else frozenset((Fwd.TUNNEL,))
            if tun_offload
            else frozenset()
        )
        # ahead (with offload): rr/wrr services' next decisions queued in the kernel (ahead.py)
        self.ahead = ahead and offload and fanout_worker is None
        self.offload: ConnOffload | None = None
        self._drainer: asyncio.TimerHandle | None = None

    def refuse_dest(self, key: ServiceKey, cfg: DestConfig) -> str | None:
        if cfg.fwd == Fwd.TUNNEL and cfg.addr.version != 4:
            return "the packet engine tunnels (-i) over IPv4 only"
        if cfg.fwd == Fwd.TUNNEL and cfg.tun_type != 0:
            return "the packet engine tunnels with ipip only"
        return None

    async def start(self) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        ifaces = discover_ifaces(self.interfaces)
        if not ifaces:
            raise OSError("packet engine: no Ethernet interface is up")
        self.routes = RouteCache(self.clock, ifaces)
        self.fwd = Forwarder(self.director, ifaces, self.routes, Neighbours(), self.ports)
        previous: dict[str, Any] = {}
        if self.offload_fwds:
            try:
                # a pylvsd that died left its connections to the kernel: go on with its maps
                previous = offload.previous_maps([i.name for i in ifaces.values()])
                self.offload = ConnOffload(self.director, previous=previous, ahead=self.ahead)
            except (OSError, ValueError) as e:
                self._offload_off(str(e))
            else:
                self.fwd.offload = self.offload
                self.fwd.offload_fwds = self.offload_fwds
                self.offload.ports = self.ports
                self.offload.on_fullnat = self.fwd.adopt_fullnat
        try:
            remove_stale()
        except (OSError, ValueError):
            pass
        for ifc in ifaces.values():
            self._open(ifc)
        self.cpu_start = time.process_time()
        self._sync()  # (the killed run's slots are held for adoption: no queue takes them)
        if previous and self.offload is not None:
            self._adopt()
        for idx, sock in self.socks.items():
            self._add_reader(idx, sock)
        for idx, sock in self.arp_socks.items():
            self.loop.add_reader(sock.fileno(), self._readable, idx, sock)
        self._sweeper = self.loop.call_later(1.0, self._sweep)
        gcpolicy.tune()
        if self.offload is not None:
            self._drainer = self.loop.call_later(offload.EVENT_PERIOD, self._drain)
        log.info("packet engine on %s", ", ".join(i.name for i in ifaces.values()))

    def _open(self, ifc: Iface) -> socket.socket:
        member = self.members.get(ifc.name)
        if member is not None:
            s, rx, arp = member
            if rx is not None:
                self.rx_rings[ifc.index] = rx
            self.arp_socks[ifc.index] = arp
            self._open_tx_ring(ifc)
            s.setblocking(False)
            self.socks[ifc.index] = s
            return s
        if self.fanout_worker is not None:
            raise OSError(f"packet engine: fanout worker has no socket for {ifc.name}")
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)  # we are the only sender that matters here
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        cbpf.attach(s, bpf.program([], []))  # nothing until the rules say what to take
        try:
            if self.ring is not None:
                self.rx_rings[ifc.index] = rx_ring(self.ring, s, self.ring_timeout_ms)
            s.bind((ifc.name, ETH_P_ALL))
            self._open_tx_ring(ifc)
        except OSError:
            rx = self.rx_rings.pop(ifc.index, None)
            if rx is not None:
                rx.close()
            s.close()
            raise
        s.setblocking(False)
        self.socks[ifc.index] = s
        if self.offload is not None:
            try:
                self.offload.attach_device(ifc.index)
            except OSError as e:
                # a device without the tc program would lose the segments the filter leaves to it
                self._offload_off(f"not on {ifc.name}: {e}")
        return s

    def _adopt(self) -> None:
        """The connections an earlier pylvsd gave the kernel: entries in the core (not scheduled
        again: the kernel goes on sending them to the same server) in the state the kernel's copy
        holds, so their state changes and counters are handled as if this process had given them.
        NAT, FULLNAT (its local port taken from this run's pool, and the Forwarder's entry), DR and
        TUN (offload.adoption_of). Elements that do not make a connection of the current rules
        go: their next packets take the per-packet way."""
        assert self.offload is not None and self.fwd is not None
        now = self.clock()
        by_slot: dict[int, list[tuple[bytes, offload.Flow, int, bytes]]] = {}
        for key, flow, state, raw, slot in self.offload.adoptable():
            by_slot.setdefault(slot, []).append((key, flow, state, raw))
        adopted = 0
        for slot, parts in by_slot.items():
            conn = self._adopt_one(parts, now)
            if conn is None:
                for key, *_rest in parts:
                    self.offload.drop(key)
                continue
            elements = [(key, flow, raw[offload.V_DIR], raw) for key, flow, _s, raw in parts]
            self.offload.take(conn, coreapi.stats_of(self.director, conn), elements, slot)
            adopted += 1
        self.offload.adopted()
        log.info("packet engine: %d connections adopted from the kernel's fast path", adopted)

    def _adopt_one(self, parts: list[tuple[bytes, offload.Flow, int, bytes]], now: float) -> Any:
        found = offload.adoption_of(parts)
        if found is None or self.fwd is None:
            return None
        request = next(p for p in parts if p[3][offload.V_DIR] == offload.DIR_IN)
        _key, flow, state, _raw = request
        _p, caddr, cport, vaddr, vport = flow
        rport = found.rport or vport
        conn = coreapi.adopt(self.director, 6, caddr, cport, vaddr, vport, 0, found.raddr, rport, state, now)
        if conn is None or conn.fwd != found.fwd:
            return None
        if found.fwd == Fwd.FULLNAT:
            if not self.ports.reserve(found.lport):
                return None
            self.fwd.adopt_fullnat(conn, flow, found.raddr, rport, found.laddr, found.lport)
        return conn

    def _offload_off(self, why: str) -> None:
        log.warning("packet engine: no kernel fast path (%s); Python sends every packet", why)
        self._close_offload()
        if self.fwd is not None:
            self.fwd.fast.clear()
        if self.socks:
            self.rules_changed()  # the classic prefilter back on every socket

    def _close_offload(self) -> None:
        if self.offload is not None:
            self.offload.close()
            self.offload = None
        if self.fwd is not None:
            self.fwd.offload = None

    def _open_tx_ring(self, ifc: Iface) -> None:
        """The interface's transmit ring; without one (a kernel or sandbox that refuses it) frames
        simply go out one send() each."""
        if not self.tx_ring:
            return
        try:
            self.tx_rings[ifc.index] = TxRing(ifc.name)
        except OSError as e:
            log.warning("packet engine: no transmit ring on %s (%s); sending frame by frame", ifc.name, e)

    def _add_reader(self, idx: int, s: socket.socket) -> None:
        assert self.loop is not None
        rx = self.rx_rings.get(idx)
        if rx is not None:
            self.loop.add_reader(s.fileno(), self._readable_ring, idx, rx)
        else:
            self.loop.add_reader(s.fileno(), self._readable, idx, s)

    def _refresh_ifaces(self) -> None:
        """Interfaces that came up since the last look (only when we chose them ourselves)."""
        if self.interfaces is not None or self.fwd is None:
            return
        try:
            now = discover_ifaces(None)
        except (OSError, ValueError):
            return
        for idx, ifc in now.items():
            old = self.fwd.ifaces.get(idx)
            if old is not None:
                old.addrs, old.mtu = ifc.addrs, ifc.mtu
                continue
            self.fwd.ifaces[idx] = ifc
            try:
                s = self._open(ifc)
            except OSError as e:
                log.warning("packet engine: cannot open %s: %s", ifc.name, e)
                continue
            if self.loop is not None:
                self._add_reader(idx, s)
            if self.routes is not None:
                self.routes.by_name[ifc.name] = idx
            log.info("packet engine: now also on %s", ifc.name)

    def rules_changing(self) -> None:
        """Decisions taken ahead from the current rules are given back before they change."""
        if self.offload is not None:
            self.offload.rules_changing(self.clock())

    def rules_changed(self) -> None:
        """Coalesce bursts (a restore changes thousands of rules): one sync per loop turn."""
        if self.loop is None or not self.socks:
            self._sync()
        elif self._pending is None:
            self._pending = self.loop.call_soon(self._sync)

    def _sync(self) -> None:
        self._pending = None
        if self.fwd is None or self.routes is None:
            return
        self._refresh_ifaces()
        self.routes.flush()
        self.fwd.load_rules()
        if self.offload is not None:
            self.offload.load_ahead(self.fwd.way_to, self.clock())
        lips: dict[str, str] = {}
        for svc in self.director.services:
            for d in svc.dests:
                if d.fwd == Fwd.FULLNAT:
                    rt = self.routes(d.addr.packed)
                    if rt is not None:
                        lips[str(d.addr)] = str(ipaddress.ip_address(rt.src))
        spec = spec_from_director(self.director, lips)
        devices = [self.fwd.ifaces[i].name for i in self.socks]
        self.table.apply(devices, spec, (self.ports.lo, self.ports.hi))
        addrs = [a for _p, a, _port in spec.vips] + [a for _p, a in spec.lips]
        dsts = [ipaddress.ip_address(a).packed for a in addrs if ":" not in a]
        srcs = [ipaddress.ip_address(a).packed for _p, a, _port in spec.nat_dests if ":" not in a]
        self._sync_marks()
        ipv6 = any(":" in a for a in addrs)
        if self.offload is not None:
            # the same choice from the eBPF filter's address maps, minus what the kernel sends
            try:
                self.offload.set_prefilter(dsts, srcs, ipv6)
                for s in self.socks.values():
                    self.offload.attach_socket(s)
            except OSError as e:
                self._offload_off(f"socket filter: {e}")  # calls _sync again, with the classic one
                return
        else:
            prog = bpf.program(dsts, srcs, ipv6=ipv6)
            for s in self.socks.values():
                cbpf.attach(s, prog)
        if self.fanout_worker is not None:
            # every worker sets the same program (the group keeps the last one)
            vips = [ipaddress.ip_address(a).packed for _p, a, _port in spec.vips if ":" not in a]
            lip4 = [ipaddress.ip_address(a).packed for _p, a in spec.lips if ":" not in a]
            by_port = not any(svc.persistent for svc in self.director.services)
            fprog = fanout.program(vips, lip4, self.fanout_worker[1], self.fullnat_range, by_port)
            for s in self.socks.values():
                fanout.set_program(s, fprog)
        # Ask for the real servers' MACs now, so the first SYN does not wait for ARP.
        for svc in self.director.services:
            for d in svc.dests:
                if d.fwd in (Fwd.MASQ, Fwd.DROUTE, Fwd.TUNNEL, Fwd.FULLNAT):
                    rt = self.routes(d.addr.packed)
                    if rt is not None and self.fwd.neigh.lookup(rt.nexthop) is None:
                        self._arp_probe(rt)

    def _sync_marks(self) -> None:
        """One NFQUEUE rule per fwmark service, in our `ip` table after the user's MARK rules."""
        marks = sorted({svc.fwmark for svc in self.director.services if svc.fwmark})
        if marks and self.nfq is None:
            # whole packets (the engine forwards them itself), the kernel's queue length and
            # drop-when-full, as a plain NFQUEUE target has them
            self.nfq = NfQueue(self.queue_num, copy_range=0xFFFF, maxlen=1024, fail_open=False)
            if self.loop is not None:
                self.loop.add_reader(self.nfq.fileno(), self._queued)
        if marks != self.marks:
            self.table.apply_marks(marks, self.queue_num)
            self.marks = marks

    def _queued(self) -> None:
        fwd, nfq = self.fwd, self.nfq
        if fwd is None or nfq is None:
            return
        now = self.clock()
        for q in nfq.receive():
            frames, keep = fwd.handle_marked(q.indev, q.hwaddr, q.payload, q.mark, now)
            nfq.verdict(q.packet_id, NF_ACCEPT if keep else NF_DROP)
            self._emit(frames, None)

    def _arp_probe(self, rt: Route) -> None:
        from pylvs.engines.packet.frames import arp_request, ndp_solicit

        assert self.fwd is not None
        ifc = self.fwd.ifaces.get(rt.ifindex)
        s = self.socks.get(rt.ifindex)
        if ifc is None or s is None:
            return
        self.fwd.neigh.pending.setdefault(rt.nexthop, [])
        try:
            hop = rt.nexthop
            s.send(arp_request(ifc.mac, rt.src, hop) if len(hop) == 4 else ndp_solicit(ifc.mac, rt.src, hop))
        except OSError:
            self.tx_errors += 1

    def _readable(self, idx: int, s: socket.socket) -> None:
        fwd = self.fwd
        if fwd is None:
            return
        self.wakeups += 1
        now = self.clock()
        if self.offload is not None:
            self.offload.drain(now)  # the kernel's state changes first: a SYN may reuse an entry
        view = self.view
        put = self._put if self.tx_rings else None
        emit = self._emit
        for _ in range(BATCH):
            try:
                n = s.recv_into(self.buf)
            except BlockingIOError:
                break
            except OSError:
                break
            emit(fwd.handle(idx, bytearray(view[:n]), now), put)
        if put is not None:
            self._flush()

    def _readable_ring(self, idx: int, rx: AnyRxRing) -> None:
        """A wake-up on a receive ring: every block the kernel has handed over, frame by frame, then
        one flush of the transmit rings."""
        fwd = self.fwd
        if fwd is None:
            return
        self.wakeups += 1
        now = self.clock()
        if self.offload is not None:
            self.offload.drain(now)  # the kernel's state changes first: a SYN may reuse an entry
        put = self._put if self.tx_rings else None
        handle, emit = fwd.handle, self._emit
        for frames in rx.take():
            for f in frames:
                emit(handle(idx, f, now), put)
        if put is not None:
            self._flush()

    def _emit(self, out: Iterable[tuple[int, bytes | bytearray]], put: Any) -> None:
        """Send what the Forwarder made of a frame: each on its interface's transmit ring when
        `put` (self._put) takes it, else with a plain send on the interface's socket."""
        socks, fwd = self.socks, self.fwd
        assert fwd is not None
        for oidx, frame in out:
            if put is not None and put(oidx, frame):
                continue
            try:
                socks[oidx].send(frame)
                fwd.counters["tx"] += 1
            except (OSError, KeyError):
                self.tx_errors += 1

    def _put(self, oidx: int, frame: bytes | bytearray) -> bool:
        """Queue a frame on the interface's transmit ring; False when it must go the plain way
        (too big for a slot, or the ring full), after what is queued has been sent, to keep order."""
        txr = self.tx_rings.get(oidx)
        if txr is None:
            return False
        if txr.put(frame):
            assert self.fwd is not None
            self.fwd.counters["tx"] += 1
            return True
        self._flush_one(txr)
        return False

    def _flush(self) -> None:
        for txr in self.tx_rings.values():
            if txr.queued:
                self._flush_one(txr)

    def _flush_one(self, txr: TxRing) -> None:
        try:
            txr.flush()
        except OSError:
            self.tx_errors += 1

    def _drain(self) -> None:
        """The kernel's state changes to the core at least every EVENT_PERIOD (a wake-up reads them
        too): the ring asks for no wake-up per event."""
        if self.offload is not None:
            self.offload.drain(self.clock())
            if self.loop is not None and self.socks:
                self._drainer = self.loop.call_later(offload.EVENT_PERIOD, self._drain)

    def _sweep(self) -> None:
        if self.fwd is not None:
            self.fwd.sweep()
            if self.offload is not None:
                arm = getattr(self.fwd.conn_table, "arm", None)
                self.offload.sync(self.clock(), arm, self.fwd.hop_to, self.fwd.way_to)
        if self.loop is not None and self.socks:
            self._sweeper = self.loop.call_later(1.0, self._sweep)

    async def stop(self, drain: bool = True) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None
        for s in [*self.socks.values(), *self.arp_socks.values()]:
            if self.loop is not None:
                self.loop.remove_reader(s.fileno())
            s.close()
        self.socks.clear()
        self.arp_socks.clear()
        for rx in self.rx_rings.values():
            rx.close()
        self.rx_rings.clear()
        for txr in self.tx_rings.values():
            txr.close()
        self.tx_rings.clear()
        self.table.remove()
        self.marks = []
        self._close_offload()
        if self.nfq is not None:
            if self.loop is not None:
                self.loop.remove_reader(self.nfq.fileno())
            self.nfq.close()
            self.nfq = None
        if self.routes is not None:
            self.routes.close()

    def stats(self) -> dict[str, float]:
        d = self.fwd.stats() if self.fwd is not None else {}
        if self.offload is not None:
            d.update(self.offload.stats())
        d["tx_errors"] = float(self.tx_errors)
        d["wakeups"] = float(self.wakeups)
        if self.rx_rings:
            d["ring_blocks"] = float(sum(r.blocks_seen for r in self.rx_rings.values()))
            d["ring_truncated"] = float(sum(r.truncated for r in self.rx_rings.values()))
        if self.tx_rings:
            d["tx_flushes"] = float(sum(t.flushes for t in self.tx_rings.values()))
        d["cpu_seconds"] = time.process_time() - self.cpu_start
        # User time is the Python cost; system time also holds what veth delivery does on our CPU
        # (the receiving namespace's stack often runs in the sender's softirq context).
        ru = resource.getrusage(resource.RUSAGE_SELF)
        d["cpu_user_seconds"] = ru.ru_utime
        d["cpu_sys_seconds"] = ru.ru_stime
        pkts = d.get("in", 0.0) + d.get("out", 0.0)
        if pkts:
            d["cpu_us_per_packet"] = d["cpu_seconds"] * 1e6 / pkts
        return d
