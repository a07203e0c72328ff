"""`pylvsd --engine fastpath`: the core decides each new connection, the kernel forwards the rest.

- NAT and FULLNAT (and firewall-mark services of those): an NFQUEUE rule of the `ip pylvs_fast`
  table hands the first packet of each connection (conntrack state NEW) to pylvsd; the core
  schedules it; the verdict's mark names the real server (high 16 bits; the low 16 keep the user's
  fwmark); the same table turns the mark into dnat (and snat to our local address for FULLNAT) and
  saves it in the ct mark; conntrack forwards and un-NATs every later packet.
- DR: only SYN/FIN/RST frames to a DR VIP reach pylvsd (classic BPF on a packet socket); for a SYN
  the core schedules, pylvsd adds (client, port) -> real server MAC to the `netdev pylvs_fastdr` flow
  map over netlink, waits for the ACK and forwards the SYN itself; the kernel rewrites both MACs and
  forwards every later packet. A flow's element lives as long as the core's entry (FIN, RST and the
  timeouts decide); the element counters of the `seen` set keep the entry alive and feed --stats.
- TUN, services mixing methods, UDP DR and IPv6: the per-packet engine, on those services only
  (said in the log).
- Conntrack events (the state changes the core needs, filtered in the kernel; ends, which carry
  the last counters: a timeout policy lets our closed connections go after 2 s) and a look at the
  open connections every 2 s (by their tuples, or a dump when that costs less) keep the core's
  states, ActiveConn/InActConn, timers and stats true.
  A restarted pylvsd adopts the kernel's connections (ct mark -> server; DR flow map) and its
  tables instead of flushing them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from pylvs import cbpf
from pylvs.core.conn import F_FWD_MASK
from pylvs.core.director import Director
from pylvs.core.packet import Action, Verdict
from pylvs.core.proto import tcp as coretcp
from pylvs.core.types import TCP_FIN, TCP_RST, DestConfig, Fwd, Packet, Proto, ServiceKey
from pylvs.engines import gcpolicy
from pylvs.engines.base import Engine
from pylvs.engines.packet import coreapi
from pylvs.engines.packet.engine import PacketEngine, RouteCache, discover_ifaces
from pylvs.engines.packet.fastpath import coreglue as glue
from pylvs.engines.packet.fastpath import drsock, tables
from pylvs.engines.packet.fastpath.subset import SubsetDirector
from pylvs.engines.packet.forward import Iface
from pylvs.engines.packet.neigh import read_proc_arp
from pylvs.netlink import conntrack as ct
from pylvs.netlink.nfqueue import NF_ACCEPT, NF_DROP, NfQueue
from pylvs.netlink.nftset import NFPROTO_NETDEV, NftSet, concat

log = logging.getLogger("pylvs.fastpath")

DEFAULT_QUEUE = 7000
SYNC_PERIOD = 2.0  # the rate estimator's period
# A TCP flow no longer among the open connections (its FIN or RST went by) is asked for by
# itself only if its DESTROY event has not come this long after (see _sync_counters).
DESTROY_GRACE = 2 * SYNC_PERIOD
# The periodic sync looks the open connections up one by one while that costs less than a dump,
# which walks every bucket and entry of conntrack's table whatever the filter. Measured on this
# kernel (bench/RESULTS.md): a lookup 12-15 us with our parsing, the walk 0.04 us a bucket (262,144
# buckets: 11 ms for an empty table) and 0.15 us an entry. Every FULL_DUMP_EVERY-th sync dumps
# anyway, which finds a connection of ours we lost track of (an overrun event socket).
LOOKUP_US, WALK_BUCKET_US, WALK_ENTRY_US = 15.0, 0.04, 0.15
FULL_DUMP_EVERY = 15
# Conntrack events read per handler run. Each new connection brings three, and the loop runs the
# queue's handler (up to 256 new connections) and this one in turn: at 64 a run, 256 clients
# (~24 new connections a turn, ~72 events) outran the reader until the socket overflowed and
# events were lost. 512 keeps up with any turn of the queue's handler short of ~170 new
# connections, costs ~3.5 ms at most, and is reached only when events are waiting.
EVENT_BATCH = int(os.environ.get("PYLVS_FASTPATH_EVENT_BATCH") or 512)
_PORT = struct.Struct("!H")
_PORTS = struct.Struct("!HH")
_ADDRS = struct.Struct("!II")
_PROTOS = {6: Proto.TCP, 17: Proto.UDP}
# Conntrack states after which a TCP connection carries no more data worth a counter sync.
_CLOSING = frozenset({ct.CT_TIME_WAIT, ct.CT_CLOSE, ct.CT_LAST_ACK})
# The core's states in which a connection whose conntrack entry is gone still counts as open.
_OPEN = frozenset({coretcp.ESTABLISHED, coretcp.SYN_RECV, coretcp.SYN_SENT})
_SYN_RECV = coretcp.SYN_RECV
_NAT_FWD = (int(Fwd.MASQ), int(Fwd.FULLNAT))  # the methods conntrack forwards (conn flags)
_FWD_NAMES = {Fwd.MASQ: "masq", Fwd.FULLNAT: "fullnat", Fwd.DROUTE: "route", Fwd.TUNNEL: "tunnel"}


def _conntrack_sysctl(name: str) -> int:
    """nf_conntrack_count / nf_conntrack_buckets of this network namespace (0 if unknown)."""
    try:
        with open(f"/proc/sys/net/netfilter/{name}") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 0


def dump_cost_us(buckets: int, entries: int) -> float:
    """What a dump of conntrack's table costs, by its size (see LOOKUP_US)."""
    return buckets * WALK_BUCKET_US + entries * WALK_ENTRY_US


def _write_sysctl(path: str, value: str) -> bool:
    """Set a sysctl of this network namespace; True if it changed."""
    try:
        with open(path) as fh:
            if fh.read().strip() == value:
                return False
        with open(path, "w") as fh:
            fh.write(value)
        return True
    except OSError:
        return False


def _event_states(setting: str, linger: bool) -> tuple[int, ...] | None:
    """PYLVS_FASTPATH_CTFILTER: 1 (the TCP states the core does not need from events), 0 (no
    filter), or the conntrack state numbers to drop, separated by commas or slashes (A/B runs).
    With the short TIME_WAIT policy (`linger`) LAST_ACK is not needed either: the DESTROY event
    follows within seconds and takes the core through LAST_ACK to TIME_WAIT (the state it names);
    until then the core shows the state the FIN_WAIT event left (inactive either way). One event
    fewer per connection: +6% new connections/s (bench/RESULTS.md)."""
    default = glue.UNNEEDED_EVENTS + ((ct.CT_LAST_ACK,) if linger else ())
    if setting in ("0", "no", "false"):
        return None
    if setting in ("1", "yes", "true", ""):
        return default
    try:
        return tuple(int(x) for x in setting.replace("/", ",").split(","))
    except ValueError:
        log.warning("fast path: PYLVS_FASTPATH_CTFILTER=%r is not a list of states; default used", setting)
        return default


def classify(svc: Any) -> str:
    """queue (NAT/FULLNAT through NFQUEUE), dr (SYNs to Python, flows in the kernel), or packet."""
    if svc.af != socket.AF_INET:
        return "packet"
    methods = {d.fwd for d in svc.dests}
    if methods <= {Fwd.MASQ, Fwd.FULLNAT} and (svc.fwmark or int(svc.protocol) in (6, 17)):
        return "queue"
    if methods == {Fwd.DROUTE} and not svc.fwmark and int(svc.protocol) == 6:
        return "dr"
    return "packet"


class FastPathEngine(Engine):
    name = "fastpath"

    def __init__(
        self,
        director: Director,
        loop: asyncio.AbstractEventLoop | None = None,
        queue_num: int | None = None,
        queue_bypass: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(director, loop)
        env = os.environ.get
        self.queue_num = (
            queue_num if queue_num is not None else int(env("PYLVS_FASTPATH_QUEUE") or DEFAULT_QUEUE)
        )
        if queue_bypass is None:
            queue_bypass = (env("PYLVS_FASTPATH_BYPASS") or "1") not in ("0", "no", "false")
        self.bypass = queue_bypass
        self.clock = clock
        self.nfq: NfQueue | None = None
        self.events: ct.CtEvents | None = None
        self.routes: RouteCache | None = None
        self.ifaces: dict[int, Iface] = {}
        self.arp: dict[bytes, bytes] = {}
        # Server marks: (addr, port, fullnat) -> id; what the ip table's maps hold now.
        self.ids: dict[tuple[str, int, str], int] = {}
        self.dest_mark: dict[int, int] = {}  # id(RealServer) -> mark bits
        self.flows: dict[int, glue.Flow] = {}  # conntrack id -> flow
        # (proto, client, port, VIP, port) -> (entry, first packet's length) of a connection the
        # core scheduled, until conntrack's first event about it names its id
        self.scheduled: dict[tuple[int, bytes, int, bytes, int], tuple[Any, int]] = {}
        self.dr_socks: dict[str, socket.socket] = {}
        self.dr_macs: dict[str, bytes] = {}
        self.dr_flows: dict[bytes, tuple[glue.Flow, int]] = {}  # key -> (flow, kernel packets seen)
        self.dr_set: NftSet | None = None
        self.seen_set: NftSet | None = None
        self.dr_created = False
        self.queue_rules: list[tables.QueueRule] | None = None  # what the queue chain holds
        self.inner: PacketEngine | None = None
        self.inner_view: SubsetDirector | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pending: asyncio.Handle | None = None
        self._nfq_poll: select.poll | None = None
        self.counters = dict.fromkeys(
            (
                "queued",
                "accepted",
                "dropped",
                "dr_syn",
                "dr_ctl",
                "dr_flows_added",
                "ct_events",
                "ct_destroys",
                "ct_gets",
                "ct_dumps",  # periodic syncs that dumped the table
                "ct_lookups",  # open connections looked up by the periodic syncs
                "ct_reaps",  # dumps made to reap expired entries (many closed flows overdue)
                "ct_established",
                "adopted",
                "queue_reads",  # handler runs that read the queue (new connections per run: batching)
                "event_reads",  # handler runs that read conntrack events
            ),
            0,
        )
        self.py_seconds = 0.0  # time spent deciding new connections (NFQUEUE + DR SYNs)
        self.py_cpu_seconds = 0.0  # the same in this thread's CPU time (NFQUEUE only; no preemption)
        self.acct_cpu_seconds = 0.0  # CPU keeping the core in step: conntrack events, syncs
        self.sync_cpu_seconds = 0.0  # the periodic syncs' share of it (dump or lookups of open flows)
        self.new_conns = 0
        self.ticks = 0
        self._sched_prev: set[tuple[int, bytes, int, bytes, int]] = set()
        self.ct_buckets = 0  # conntrack's hash table size (read at start)
        self.cpu_start = 0.0
        self.started = False
        self.dump_closed = os.environ.get("PYLVS_FASTPATH_DUMP_CLOSED", "0") not in ("0", "no", "false")
        # conntrack lets our closed TCP connections go after tables.CLOSED_LINGER seconds (off:
        # PYLVS_FASTPATH_LINGER=0, or a kernel without conntrack timeout policies)
        self.linger = os.environ.get("PYLVS_FASTPATH_LINGER", "1") not in ("0", "no", "false")
        # per-packet conntrack event masks (tables.closed_chain_text; off: PYLVS_FASTPATH_EVMASK=0)
        self.event_masks = os.environ.get("PYLVS_FASTPATH_EVMASK", "1") not in ("0", "no", "false")
        # the periodic sync looks open connections up rather than dumping (_lookup_open; off:
        # PYLVS_FASTPATH_LOOKUPS=0, always a dump)
        self.lookups = os.environ.get("PYLVS_FASTPATH_LOOKUPS", "1") not in ("0", "no", "false")

    def refuse_dest(self, key: ServiceKey, cfg: DestConfig) -> str | None:
        if cfg.addr.version != 4 or key.af != socket.AF_INET:
            return "the fastpath engine forwards IPv4 only"
        if cfg.fwd == Fwd.TUNNEL and cfg.tun_type != 0:
            return "the fastpath engine tunnels with ipip only (on the per-packet path)"
        return None

    # -- start / stop ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if _write_sysctl("/proc/sys/net/ipv4/ip_forward", "1"):
            log.info("fast path: net.ipv4.ip_forward set to 1 (conntrack forwards NAT traffic)")
        _write_sysctl("/proc/sys/net/netfilter/nf_conntrack_acct", "1")
        self.ifaces = discover_ifaces(None)
        self.routes = RouteCache(self.clock, self.ifaces)
        if tables.table_exists("ip", tables.IP_TABLE):
            log.info("fast path: adopting the existing nftables table ip %s", tables.IP_TABLE)
            self._read_ids()
            rc, _o, err = tables.nft(tables.queue_chain_text())
            if rc != 0:
                raise OSError(f"fast path: cannot add the queue chain to ip {tables.IP_TABLE}: {err}")
            rc, _o, err = tables.nft(tables.closed_chain_text(self.linger, self.event_masks))
            if rc != 0 and self.linger:
                self._no_linger(err)
                rc, _o, err = tables.nft(tables.closed_chain_text(False))
            if rc != 0:
                log.warning("fast path: cannot add the fin chain to ip %s: %s", tables.IP_TABLE, err)
        else:
            rc, _o, err = tables.nft(tables.ip_table_text(self.linger, self.event_masks))
            if rc != 0 and self.linger:
                self._no_linger(err)
                rc, _o, err = tables.nft(tables.ip_table_text(False))
            if rc != 0:
                raise OSError(f"fast path: cannot create nftables table ip {tables.IP_TABLE}: {err}")
        self.dr_created = tables.table_exists("netdev", tables.DR_TABLE)
        self.nfq = NfQueue(self.queue_num, fail_open=self.bypass)
        if (os.environ.get("PYLVS_FASTPATH_SENDER") or "0") not in ("0", "no", "false"):
            self.nfq.start_sender()
        self.events = ct.CtEvents(
            tables.OURS,
            ct.GROUP_UPDATE | ct.GROUP_DESTROY,
            _event_states(os.environ.get("PYLVS_FASTPATH_CTFILTER", "1"), self.linger),
        )
        self.ct_buckets = _conntrack_sysctl("nf_conntrack_buckets")
        self.cpu_start = time.process_time()
        self._sync()
        tables.remove_legacy_queue_chain()  # after ours is in place: no gap for new connections
        self.loop.add_reader(self.nfq.fileno(), self._queued)
        if os.environ.get("PYLVS_FASTPATH_QUEUE_POLL", "1") not in ("0", "no", "false"):
            self._nfq_poll = select.poll()
            self._nfq_poll.register(self.nfq.fileno(), select.POLLIN)
        self.loop.add_reader(self.events.fileno(), self._ct_events)
        self._adopt()
        self._timer = self.loop.call_later(SYNC_PERIOD, self._tick)
        self.started = True
        gcpolicy.tune()
        log.info(
            "fast path on: NFQUEUE %d (%s), NAT/FULLNAT/fwmark through conntrack, DR through nft flows",
            self.queue_num,
            "fail-open: --queue-bypass" if self.bypass else "fail-closed",
        )

    def _no_linger(self, err: str) -> None:
        self.linger = False
        log.warning(
            "fast path: no conntrack timeout policy (%s): closed connections stay in conntrack for "
            "its default TIME_WAIT, and each is looked up once for its last counters",
            err.splitlines()[0] if err else "nft refused it",
        )

    async def stop(self, drain: bool = True) -> None:
        for h in (self._timer, self._pending):
            if h is not None:
                h.cancel()
        self._timer = self._pending = None
        loop = self.loop
        if self.nfq is not None:
            if loop is not None:
                loop.remove_reader(self.nfq.fileno())
            self.nfq.close()
            self.nfq = None
            self._nfq_poll = None
        if self.events is not None:
            if loop is not None:
                loop.remove_reader(self.events.fileno())
            self.events.close()
            self.events = None
        for s in self.dr_socks.values():
            if loop is not None:
                loop.remove_reader(s.fileno())
            s.close()
        self.dr_socks.clear()
        for st in (self.dr_set, self.seen_set):
            if st is not None:
                st.close()
        if self.inner is not None:
            await self.inner.stop(drain)
            self.inner = None
        # A clean stop removes everything; a crash leaves it all for the next pylvsd to adopt.
        tables.remove_tables()
        self.queue_rules = None
        self.started = False

    # -- rules -----------------------------------------------------------------------------------
    def rules_changed(self) -> None:
        if self.loop is None or not self.started:
            return
        if self._pending is None:
            self._pending = self.loop.call_soon(self._sync)

    def _lip(self, addr: str) -> str | None:
        if self.routes is None:
            return None
        rt = self.routes(socket.inet_aton(addr))
        return socket.inet_ntoa(rt.src) if rt is not None else None

    def _read_ids(self) -> None:
        """The server marks a previous pylvsd left in the maps (so adopted ct marks keep meaning)."""
        lips = {}
        for k, v in tables.map_elements("ip", tables.IP_TABLE, "snat_a"):
            lips[int(k)] = str(v)
        for name in ("dnat_ap", "dnat_a"):
            for k, v in tables.map_elements("ip", tables.IP_TABLE, name):
                vals = tables.concat_vals(v)
                addr, port = str(vals[0]), int(vals[1]) if len(vals) > 1 else 0
                rid = (int(k) & ~tables.OURS) >> tables.RS_SHIFT
                self.ids[(addr, port, lips.get(int(k), ""))] = rid

    def _sync(self) -> None:
        self._pending = None
        if self.routes is None:
            return
        self.routes.flush()
        d = self.director
        queue_vips: list[tuple[int, str, int]] = []
        marks: list[int] = []
        want_ids: dict[tuple[str, int, str], list[Any]] = {}
        dr_vips: dict[str, list[tuple[str, int]]] = {}
        per_packet: list[Any] = []
        for svc in d.services:
            kind = classify(svc)
            if kind == "queue":
                if svc.fwmark:
                    if svc.fwmark > tables.USER_MASK:
                        log.warning("fast path: fwmark %d is above 0xffff; its marks may clash", svc.fwmark)
                    marks.append(svc.fwmark)
                else:
                    queue_vips.append((int(svc.protocol), str(svc.addr), svc.port))
                for dest in svc.dests:
                    lip = self._lip(str(dest.addr)) if dest.fwd == Fwd.FULLNAT else ""
                    if lip is None:
                        log.warning("fast path: no route to FULLNAT server %s", dest.addr)
                        continue
                    want_ids.setdefault((str(dest.addr), dest.port, lip), []).append(dest)
            elif kind == "dr":
                for dest in svc.dests:
                    rt = self.routes(dest.addr.packed)
                    if rt is None:
                        log.warning("fast path: no route to DR server %s", dest.addr)
                        continue
                    dev = self.ifaces[rt.ifindex].name if rt.ifindex in self.ifaces else ""
                    if dev and (str(svc.addr), svc.port) not in dr_vips.setdefault(dev, []):
                        dr_vips[dev].append((str(svc.addr), svc.port))
                    if read_proc_arp().get(rt.nexthop) is None:
                        self._kick_arp(rt.nexthop)
            else:
                per_packet.append(svc)
        self._sync_ids(want_ids)
        rules = tables.queue_rules(queue_vips, marks)
        if rules != self.queue_rules:
            tables.apply_queue_rules(rules, self.queue_num, self.bypass)
            self.queue_rules = rules
            log.info(
                "fast path: new connections queued: %s",
                "; ".join(r.text(self.queue_num, self.bypass) for r in rules) or "none",
            )
        self._sync_dr(dr_vips)
        self._sync_inner(per_packet)

    def _sync_ids(self, want: dict[tuple[str, int, str], list[Any]]) -> None:
        used = set(self.ids.values())
        adds, dels = [], []
        for key in list(self.ids):
            if key not in want:
                rid = self.ids.pop(key)
                used.discard(rid)
                dels.append((key, rid))
        nxt = 1
        for key in want:
            if key not in self.ids:
                while nxt in used:
                    nxt += 1
                if nxt > tables.MAX_ID:
                    log.error("fast path: more than %d real servers; %s not forwarded", tables.MAX_ID, key)
                    continue
                self.ids[key] = nxt
                used.add(nxt)
                adds.append((key, nxt))
        lines = []
        for (_addr, port, lip), rid in dels:
            m = f"0x{tables.OURS | rid << tables.RS_SHIFT:08x}"
            lines.append(f"delete element ip {tables.IP_TABLE} {'dnat_ap' if port else 'dnat_a'} {{ {m} }}")
            if lip:
                lines.append(f"delete element ip {tables.IP_TABLE} snat_a {{ {m} }}")
        for (addr, port, lip), rid in adds:
            m = f"0x{tables.OURS | rid << tables.RS_SHIFT:08x}"
            if port:
                lines.append(f"add element ip {tables.IP_TABLE} dnat_ap {{ {m} : {addr} . {port} }}")
            else:
                lines.append(f"add element ip {tables.IP_TABLE} dnat_a {{ {m} : {addr} }}")
            if lip:
                lines.append(f"add element ip {tables.IP_TABLE} snat_a {{ {m} : {lip} }}")
        if lines:
            rc, _o, err = tables.nft("\n".join(lines) + "\n")
            if rc != 0:
                log.error("fast path: server map update failed: %s", err)
        self.dest_mark = {
            id(dest): tables.OURS | self.ids[key] << tables.RS_SHIFT
            for key, dests in want.items()
            if key in self.ids
            for dest in dests
        }

    def _sync_dr(self, dr_vips: dict[str, list[tuple[str, int]]]) -> None:
        if not dr_vips and not self.dr_created:
            return
        specs = []
        for dev, vips in dr_vips.items():
            ifc = next((i for i in self.ifaces.values() if i.name == dev), None)
            if ifc is None:
                continue
            self.dr_macs[dev] = ifc.mac
            specs.append(tables.DrSpec(dev, ifc.mac.hex(":"), vips))
        seen_timeout = self.director.timeouts.tcp or 900
        rc, _o, err = tables.nft(tables.dr_table_text(specs, seen_timeout, create=not self.dr_created))
        if rc != 0:
            log.error("fast path: DR table update failed: %s", err)
            return
        self.dr_created = True
        if self.dr_set is None:
            self.dr_set = NftSet(NFPROTO_NETDEV, tables.DR_TABLE, "flows")
            self.seen_set = NftSet(NFPROTO_NETDEV, tables.DR_TABLE, "seen")
        for dev in list(self.dr_socks):
            if dev not in dr_vips:
                s = self.dr_socks.pop(dev)
                if self.loop is not None:
                    self.loop.remove_reader(s.fileno())
                s.close()
        for dev, vips in dr_vips.items():
            if dev not in self.dr_socks:
                s = self.dr_socks[dev] = drsock.open_socket(dev)
                if self.loop is not None:
                    self.loop.add_reader(s.fileno(), self._dr_readable, dev, s)
            cbpf.attach(self.dr_socks[dev], drsock.program([socket.inet_aton(v) for v, _p in vips]))

    def _sync_inner(self, services: list[Any]) -> None:
        if not services and self.inner is None:
            return
        for svc in services:
            if id(svc) in (self.inner_view.keep if self.inner_view is not None else set()):
                continue
            methods = ",".join(sorted({_FWD_NAMES.get(x.fwd, "?") for x in svc.dests})) or "no servers"
            where = f"fwmark {svc.fwmark}" if svc.fwmark else f"{svc.protocol.name} {svc.addr}:{svc.port}"
            log.warning("fast path: service %s (%s) stays on the per-packet path", where, methods)
        if self.inner is None:
            self.inner_view = SubsetDirector(self.director)
            self.inner_view.keep = {id(s) for s in services}
            # TUN connections go through the kernel too, once decided (offload.py; off:
            # PYLVS_FASTPATH_TUN=0)
            tun = os.environ.get("PYLVS_FASTPATH_TUN", "1") not in ("0", "no", "false")
            self.inner = PacketEngine(
                self.inner_view,  # type: ignore[arg-type]
                self.loop,
                clock=self.clock,
                tun_offload=tun,
            )
            assert self.loop is not None
            self.loop.create_task(self.inner.start())
        else:
            assert self.inner_view is not None
            self.inner_view.keep = {id(s) for s in services}
            self.inner.rules_changed()

    def _kick_arp(self, ip: bytes) -> None:
        """Have the kernel resolve a DR server's MAC (one datagram to its discard port)."""
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"", (socket.inet_ntoa(ip), 9))
        except OSError:
            pass

    # -- NAT / FULLNAT: the first packet of each connection --------------------------------------
    def _queued(self) -> None:
        nfq = self.nfq
        if nfq is None:
            return
        t0 = time.perf_counter()
        c0 = time.thread_time()
        now = self.clock()
        d = self.director
        marks = self.dest_mark
        first = self.scheduled
        out: list[bytes] = []
        vmsg = nfq.verdict_msg
        addr = coreapi.ADDR_CACHE
        ip4 = coreapi.ip4
        accepted = dropped = 0
        pkts = nfq.receive_ids()
        self.counters["queue_reads"] += 1
        for packet_id, qmark, p in pkts:
            if len(p) < 28 or p[0] >> 4 != 4:
                out.append(vmsg(packet_id, NF_ACCEPT))
                continue
            ihl = (p[0] & 15) * 4
            proto = p[9]
            sport, dport = _PORTS.unpack_from(p, ihl)
            flags = p[ihl + 13] if proto == 6 and len(p) > ihl + 13 else 0
            saddr, daddr = p[12:16], p[16:20]
            length = (p[2] << 8) | p[3]
            user = qmark & tables.USER_MASK
            pkt = Packet(
                _PROTOS.get(proto) or Proto(proto),
                addr.get(saddr) or ip4(saddr),
                sport,
                addr.get(daddr) or ip4(daddr),
                dport,
                user,
                length,
                flags,
            )
            v = d.process_in(pkt, now)
            if v.action is Action.FORWARD and v.conn is not None:
                m = marks.get(id(v.conn.dest))
                if m is None:
                    self._sync()
                    marks = self.dest_mark
                    m = marks.get(id(v.conn.dest))
                if m is not None and (v.conn.flags & F_FWD_MASK) in _NAT_FWD:
                    out.append(vmsg(packet_id, NF_ACCEPT, user | m))
                    accepted += 1
                    first[(proto, saddr, sport, daddr, dport)] = (v.conn, length)
                    continue
            elif v.action is Action.PASS:
                out.append(vmsg(packet_id, NF_ACCEPT))
                continue
            out.append(vmsg(packet_id, NF_DROP))
            dropped += 1
        t1 = time.perf_counter()
        self.py_cpu_seconds += time.thread_time() - c0
        nfq.send_verdicts(out)
        n = len(pkts)
        c = self.counters
        c["queued"] += n
        c["accepted"] += accepted
        c["dropped"] += dropped
        self.new_conns += n
        self.py_seconds += t1 - t0
        if len(first) > 100000:
            first.clear()

    # -- conntrack: states, ends, counters ------------------------------------------------------
    def _flow_for(self, e: ct.CtEntry, now: float, adopt: bool = True) -> glue.Flow | None:
        f = self.flows.get(e.ct_id)
        if f is not None:
            return f
        proto, caddr, cport, vaddr, vport = e.orig
        if proto not in (6, 17) or len(caddr) != 4:
            return None
        _p, raddr, rport, _l, _lp = e.reply
        first = None
        queued = self.scheduled.pop(e.orig, None)
        if queued is not None and not queued[0].dead:
            conn, first = queued
        else:
            conn = self.director.lookup_in(proto, coreapi.ip4(caddr), cport, coreapi.ip4(vaddr), vport)
        ct_state = -1
        if conn is None or conn.dead:
            if not adopt:
                return None
            state = glue.CT_TO_CORE.get(e.tcp_state, coretcp.ESTABLISHED)
            conn = coreapi.adopt(
                self.director,
                proto,
                caddr,
                cport,
                vaddr,
                vport,
                e.mark & tables.USER_MASK,
                raddr,
                rport,
                state,
                now,
            )
            if conn is None:
                return None
            self.counters["adopted"] += 1
            first = None
            ct_state = e.tcp_state
        # A connection we scheduled gets each state change (the first event may already be
        # ESTABLISHED: SYN_RECV events are filtered out); an adopted one starts where it is.
        f = glue.Flow(conn, proto, caddr, cport, vaddr, vport, ct_state=ct_state)
        if first is not None:  # the core counted the first packet when it scheduled it
            f.in_pkts, f.in_bytes = 1, first
        self.flows[e.ct_id] = f
        return f

    def _ct_events(self) -> None:
        ev = self.events
        if ev is None:
            return
        # New connections first: a SYN waiting in the queue is a client waiting; accounting can wait.
        # (poll first: an empty read of the queue costs twice as much, on most wake-ups)
        if self._nfq_poll is None or self._nfq_poll.poll(0):
            self._queued()
        c0 = time.thread_time()
        try:
            self._apply_events(ev)
        finally:
            self.acct_cpu_seconds += time.thread_time() - c0

    def _apply_events(self, ev: ct.CtEvents) -> None:
        now = self.clock()
        d = self.director
        flows = self.flows
        state_changed = glue.ct_state_changed
        events = ev.read(flows, limit=EVENT_BATCH)
        self.counters["event_reads"] += 1
        destroys = established = 0
        for e in events:
            if e.kind == ct.DESTROY:
                destroys += 1
                f = flows.pop(e.ct_id, None)
                if f is None:
                    # Ended before any event of ours reached us (a handshake that never completed):
                    # the core's entry ends with it.
                    f = self._flow_for(e, now, adopt=False)
                    flows.pop(e.ct_id, None)
                    if f is None:
                        continue
                # The client reused the port: the new SYN, which reaped this entry in the kernel,
                # took the core's entry back to SYN_RECV (IPVS reuses one it finds closing). This
                # end is not that entry's: its counters only.
                c = f.conn
                taken_over = (
                    f.proto == 6
                    and c is not None
                    and c.state == _SYN_RECV
                    and f.ct_state >= ct.CT_ESTABLISHED
                )
                if f.proto == 6 and not taken_over:
                    # its last state first: the steps' packets are in the counters
                    state_changed(d, f, e.tcp_state, now)
                glue.add_counters(d, f, e, now)
                if not taken_over:
                    self._ended(f, now)
                continue
            f = flows.get(e.ct_id) or self._flow_for(e, now)
            if f is None:
                continue
            if f.proto == 6:
                if e.tcp_state == ct.CT_ESTABLISHED:
                    established += 1  # bench: how many connections' events came
                state_changed(d, f, e.tcp_state, now)
            elif e.kind == ct.UPDATE and not f.replied:
                f.replied = True
                glue.feed(d, f, "out", 0, now)
        c = self.counters
        c["ct_events"] += len(events)
        c["ct_destroys"] += destroys
        c["ct_established"] += established

    def _tick(self) -> None:
        self._timer = None
        c0 = time.thread_time()
        try:
            self._sync_counters()
            self._sync_dr_flows()
        except OSError as e:
            log.warning("fast path: periodic sync: %s", e)
        finally:  # whatever happened, the next sync comes
            spent = time.thread_time() - c0
            self.acct_cpu_seconds += spent
            self.sync_cpu_seconds += spent
            if self.loop is not None and self.started:
                self._timer = self.loop.call_later(SYNC_PERIOD, self._tick)

    def _sync_counters(self, everything: bool = False) -> None:
        """Counters and states from the kernel for the open connections: looked up one by one
        while they are few beside conntrack's table (_lookup_open), else dumped (the kernel skips
        those whose CLOSED bit the `fin` chain set). A flow that left the open ones is asked for by
        itself, once, for its last counters and state if its DESTROY event (which ends it) is
        late. `everything`: a dump of closed ones too (adoption)."""
        now = self.clock()
        alive = set()
        # PYLVS_FASTPATH_DUMP_CLOSED=1: the way before the CLOSED bit (closed entries dumped too,
        # skipped here once final), for comparing the two in bench_fastpath.py.
        everything = everything or self.dump_closed
        self.ticks += 1
        found = None
        walked = False  # this sync walked conntrack's table (a dump): expired entries are gone
        if not everything and self.lookups and self.ticks % FULL_DUMP_EVERY:
            found = self._lookup_open()
        if found is None:
            walked = True
            mask = tables.OURS if everything else tables.OURS | tables.CLOSED
            skip = {cid for cid, f in self.flows.items() if f.final} if self.dump_closed else set()
            found = ct.dump(tables.OURS, mask, skip)
            self.counters["ct_dumps"] += 1
        for e in found:
            alive.add(e.ct_id)
            f = self._flow_for(e, now)
            if f is None:
                continue
            self._follow(f, e, now)
            if everything:
                f.final = bool(e.mark & tables.CLOSED) or e.tcp_state in _CLOSING
        # Closed since the last sync, or gone with their DESTROY event lost. With the short
        # TIME_WAIT policy a closed TCP flow's DESTROY event brings its last counters and state
        # within seconds: only one still here DESTROY_GRACE after it left the open ones is asked for.
        left = []
        gone = []
        linger = self.linger and not everything
        for cid, f in self.flows.items():
            if cid in alive:
                continue
            if f.asked:  # looked up and not found: its DESTROY event did not come either
                if now - f.asked >= DESTROY_GRACE:
                    gone.append(cid)
                continue
            if f.final:
                continue
            if linger and f.proto == 6:
                if not f.left_open:
                    f.left_open = now
                    continue
                if now - f.left_open < DESTROY_GRACE:
                    continue
            left.append((cid, f))
        for cid in gone:
            self._ended(self.flows.pop(cid), now)
        # conntrack's collector may take many seconds to reap expired entries from a big table,
        # and each entry's DESTROY event waits for it. A dump reaps every expired entry it walks
        # past, whatever its filter, so when many flows are overdue one walk (~20 ms) replaces
        # thousands of lookups (12-15 us each); the flows still here at the next sync (a half-
        # closed connection conntrack keeps, or a lost event) are looked up then. (Without the
        # short TIME_WAIT policy closed entries have not expired yet: looked up at once.)
        fresh = [f for _cid, f in left if not f.reaped] if linger else []
        if fresh and not walked and len(fresh) * LOOKUP_US > self._dump_cost():
            ct.dump(tables.OURS, tables.OURS | tables.CLOSED)  # its open entries: found above
            self.counters["ct_reaps"] += 1
            walked = True
        if walked and fresh:
            left = [(cid, f) for cid, f in left if f.reaped]  # an earlier walk passed them: look up
            for f in fresh:
                f.reaped = now
        if not left:
            return
        got = ct.get_many([(f.proto, f.caddr, f.cport, f.vaddr, f.vport) for _cid, f in left])
        self.counters["ct_gets"] += len(left)
        for (cid, f), last in zip(left, got, strict=True):
            if last is None or last.ct_id != cid:  # gone (maybe its tuple already reused)
                # An entry past its timeout that the kernel had not reaped yet is reaped by this
                # very lookup, and its DESTROY event (last counters, last state) follows: the flow
                # waits for it a while before it ends without.
                f.asked = now
                continue
            self._follow(f, last, now)
            f.final = True

    def _lookup_open(self) -> list[ct.CtEntry] | None:
        """The open connections we follow, looked up by their tuples (many requests to a datagram),
        or None when a dump costs less. A dump walks conntrack's whole hash table (11 ms here even
        when it is empty, 15 ms with 25,000 closed connections lingering), while a director of
        short connections has a few dozen open at a time (under 1 ms of lookups). Connections the
        core scheduled whose first event has not come in a whole period are looked up too (found:
        followed from now on; not found: no longer waited for)."""
        stale = [k for k in self._sched_prev if k in self.scheduled]
        self._sched_prev = set(self.scheduled)
        flows = [
            f
            for f in self.flows.values()
            if f.ct_state < ct.CT_FIN_WAIT and not (f.final or f.asked or f.left_open)
        ]
        n = len(flows) + len(stale)
        if not n:
            return []
        if n * LOOKUP_US > self._dump_cost():
            return None
        tuples = [(f.proto, f.caddr, f.cport, f.vaddr, f.vport) for f in flows]
        got = ct.get_many(tuples + stale, strict=True)  # unanswered is not closed: no sync
        self.counters["ct_lookups"] += len(got)
        for key, e in zip(stale, got[len(flows) :], strict=True):
            if e is None:
                self.scheduled.pop(key, None)  # gone without an event: the core's timers end it
        # open ones only, as the dump gives them (a FIN or RST whose event we missed set CLOSED)
        return [e for e in got if e is not None and e.mark & tables.CLOSED == 0]

    def _dump_cost(self) -> float:
        return dump_cost_us(self.ct_buckets, _conntrack_sysctl("nf_conntrack_count"))

    def _follow(self, f: glue.Flow, e: ct.CtEntry, now: float) -> None:
        """The kernel's view of one flow into the core: its entry, counters and TCP state."""
        d = self.director
        if f.conn is None or f.conn.dead:
            # The core let the entry go while the kernel kept the connection: follow the kernel.
            _p, raddr, rport, _l, _lp = e.reply
            f.conn = coreapi.adopt(
                d,
                f.proto,
                f.caddr,
                f.cport,
                f.vaddr,
                f.vport,
                e.mark & tables.USER_MASK,
                raddr,
                rport,
                glue.CT_TO_CORE.get(e.tcp_state, coretcp.ESTABLISHED),
                now,
            )
        glue.add_counters(d, f, e, now)
        if f.proto == 6:
            glue.ct_state_changed(d, f, e.tcp_state, now)

    def _ended(self, f: glue.Flow, now: float) -> None:
        """conntrack let the connection go: an entry the core still holds open ends too."""
        c = f.conn
        if f.proto == 6 and c is not None and not c.dead and c.state in _OPEN:
            glue.feed(self.director, f, "in", TCP_RST, now)

    def _adopt(self) -> None:
        """Connections a previous pylvsd left to the kernel: conntrack (NAT) and the DR flow map."""
        self._sync_counters(everything=True)
        if not self.dr_created or self.dr_set is None:
            return
        now = self.clock()
        by_mac = {mac: ip for ip, mac in read_proc_arp().items()}
        stale = []
        try:
            elements = self.dr_set.dump()
        except OSError as e:
            log.warning("fast path: DR flows not adopted: %s", e)
            return
        for key, mac, _pk, _by in elements:
            if len(key) != 16 or mac is None:
                continue
            # the key as _dr_key lays it out: each field padded to 4 bytes
            vip, cip = key[0:4], key[8:12]
            vport, cport = _PORT.unpack_from(key, 4)[0], _PORT.unpack_from(key, 12)[0]
            rip = by_mac.get(mac[:6])
            conn = None
            if rip is not None:
                conn = coreapi.adopt(
                    self.director, 6, cip, cport, vip, vport, 0, rip, vport, coretcp.ESTABLISHED, now
                )
            if conn is None:
                stale.append(key)
                continue
            self.counters["adopted"] += 1
            self.dr_flows[key] = (glue.Flow(conn, 6, cip, cport, vip, vport), 0)
        if stale:
            self._dr_delete(stale)

    # -- DR ----------------------------------------------------------------------------------------
    def _dr_readable(self, dev: str, s: socket.socket) -> None:
        t0 = time.perf_counter()
        now = self.clock()
        d = self.director
        mac = self.dr_macs.get(dev, b"")
        # The SYNs of this wake-up go out once their flows are in the map, all put in one
        # transaction (~18 us of CPU each, whatever the number of elements).
        syns: list[tuple[bytearray, bytes, bytes]] = []  # frame, flow key, the real server's MAC
        elems: dict[bytes, bytes] = {}  # key -> MAC of the flows to put
        reused: list[bytes] = []  # keys an earlier connection had: its seen counters go
        for _ in range(64):
            try:
                f = bytearray(s.recv(2048))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            ip = drsock.VNET_LEN + 14
            if len(f) < ip + 40:
                continue
            ihl = (f[ip] & 15) * 4
            t = ip + ihl
            flags = f[t + 13]
            cint, vint = _ADDRS.unpack_from(f, ip + 12)
            cport, vport = _PORTS.unpack_from(f, t)
            length = (f[ip + 2] << 8) | f[ip + 3]
            # the core's int entry point: a FIN or RST of a known entry costs no Packet or Verdict
            res = d.process_in_v4(6, cint, cport, vint, vport, 0, length, flags, now)
            if flags & (TCP_FIN | TCP_RST):
                self.counters["dr_ctl"] += 1
                continue  # the kernel forwards it through the flow map; the core has seen it
            self.counters["dr_syn"] += 1
            self.new_conns += 1
            if isinstance(res, Verdict) or res.fwd != Fwd.DROUTE:
                continue
            conn = res
            caddr, vaddr = bytes(f[ip + 12 : ip + 16]), bytes(f[ip + 16 : ip + 20])
            rmac = self.arp.get(conn.daddr.packed)
            if rmac is None:
                self.arp = read_proc_arp()
                rmac = self.arp.get(conn.daddr.packed)
                if rmac is None:
                    self._kick_arp(conn.daddr.packed)
                    continue  # the client retransmits the SYN
            key = _dr_key(vaddr, vport, caddr, cport)
            old = self.dr_flows.get(key)
            if old is None or old[0].conn is not conn:
                # A new flow; or the client's port came back while the element of its earlier
                # connection is still there (the core keeps a closed connection for its
                # TIME_WAIT), maybe for another server: put replaces it.
                elems[key] = rmac
                if old is not None:
                    reused.append(key)
                fl = glue.Flow(conn, 6, caddr, cport, vaddr, vport)
                fl.in_pkts = 1
                self.dr_flows[key] = (fl, 0)
            syns.append((f, key, rmac))
        if elems:
            try:
                assert self.dr_set is not None
                self.dr_set.put([(k, m, 0) for k, m in elems.items()])
                self.counters["dr_flows_added"] += len(elems)
            except OSError as e:
                log.warning("fast path: DR flows not added: %s", e)
                for k in elems:
                    self.dr_flows.pop(k, None)
                syns = [x for x in syns if x[1] not in elems]  # the clients send them again
                reused = []
            if reused and self.seen_set is not None:
                try:
                    self.seen_set.discard(reused)
                except OSError as e:
                    log.warning("fast path: DR counters of reused ports not reset: %s", e)
        for f, _key, rmac in syns:
            # Forward the SYN: new MACs (source too, or the switch learns the wrong port).
            f[drsock.VNET_LEN : drsock.VNET_LEN + 6] = rmac
            f[drsock.VNET_LEN + 6 : drsock.VNET_LEN + 12] = mac
            f[0] &= ~drsock.VNET_F_DATA_VALID & 0xFF
            try:
                s.send(f)
            except OSError:
                pass
        self.py_seconds += time.perf_counter() - t0

    def _dr_delete(self, keys: list[bytes]) -> None:
        for st in (self.dr_set, self.seen_set):
            if st is None:
                continue
            # a transaction per 512 keys (~18 us of CPU each), not one per key; seen ones may be
            # gone already (they time out)
            try:
                st.discard(keys)
            except OSError as e:
                log.warning("fast path: DR flows not deleted: %s", e)

    def _dr_counters(self) -> dict[bytes, tuple[int, int]]:
        """(packets, bytes) the kernel forwarded per DR flow, by key, read over netlink: a quarter
        of the CPU of the `nft -j` listing, which a set of thousands of flows made the largest cost
        of a sync."""
        if self.seen_set is None:
            return {}
        try:
            return {k: (pk, by) for k, _v, pk, by in self.seen_set.dump()}
        except OSError as e:
            log.warning("fast path: DR counters not read: %s", e)
            return {}

    def _sync_dr_flows(self) -> None:
        if not self.dr_flows:
            return
        now = self.clock()
        d = self.director
        seen = self._dr_counters()
        gone = []
        for key, (fl, kpk) in list(self.dr_flows.items()):
            conn = fl.conn
            if conn is None or conn.dead:
                gone.append(key)
                del self.dr_flows[key]
                continue
            pk, by = seen.get(key, (kpk, 0))
            if pk > kpk:
                glue.add_packet_counts(d, conn, pk - kpk, max(0, by - fl.in_bytes), now)
                fl.in_bytes = by
                self.dr_flows[key] = (fl, pk)
                if conn.state == coretcp.SYN_RECV:
                    glue.feed(d, fl, "in", 0x10, now)  # the handshake's ACK went by in the kernel
        if gone:
            self._dr_delete(gone)

    # -- figures -----------------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {k: float(v) for k, v in self.counters.items()}
        out["flows_nat"] = float(len(self.flows))
        out["flows_dr"] = float(len(self.dr_flows))
        out["new_conns"] = float(self.new_conns)
        out["cpu_seconds"] = time.process_time() - self.cpu_start
        if self.new_conns:
            out["py_us_per_new_conn"] = self.py_seconds * 1e6 / self.new_conns
            out["py_cpu_us_per_new_conn"] = self.py_cpu_seconds * 1e6 / self.new_conns
            out["acct_cpu_us_per_new_conn"] = self.acct_cpu_seconds * 1e6 / self.new_conns
            out["sync_cpu_us_per_new_conn"] = self.sync_cpu_seconds * 1e6 / self.new_conns
            if self.nfq is not None:  # the kernel forwards the accepted packets inside these sends
                out["verdict_us_per_new_conn"] = self.nfq.send_seconds * 1e6 / self.new_conns
        if self.events is not None:
            out["ct_overruns"] = float(self.events.overruns)
        if self.inner is not None:
            for k, v in self.inner.stats().items():
                out["packet_" + k] = v
        return out


def _dr_key(vaddr: bytes, vport: int, caddr: bytes, cport: int) -> bytes:
    return concat(vaddr, _PORT.pack(vport), caddr, _PORT.pack(cport))
