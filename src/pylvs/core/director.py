"""The Director: the whole of IPVS state in one object (what the kernel module holds).

Control operations (ctl.py) and the packet path (packet.py, conn.py, proto/) meet here; engines, the
daemon and `pylvs simulate` drive it, passing time in.
"""

from __future__ import annotations

import errno
import math
import random
from collections import deque
from collections.abc import Callable

from pylvs.core import packet
from pylvs.core.conn import F_DEAD, F_INVALID, Connection, ConnectionTable, make_key_v4, split_key
from pylvs.core.ctl import ServiceTable
from pylvs.core.errors import IPVSError, Op
from pylvs.core.proto import Protocol
from pylvs.core.sched.base import SchedEnv
from pylvs.core.service import RealServer, VirtualService, addr_text
from pylvs.core.snapshot import ConnView, ServiceView, Snapshot, make_dest_view
from pylvs.core.stats import ESTIMATOR_PERIOD
from pylvs.core.sysctl import Sysctls
from pylvs.core.types import DestConfig, IPAddr, Proto, ServiceConfig, ServiceKey, Timeouts

MAX_TIMEOUT = 2678400  # ipvsadm's own bound for --set; the kernel allows up to INT_MAX/HZ
PERIODIC = 60.0  # s between scheduler ticks (lblc/lblcr garbage collection) and trash checks
RATELIMIT_INTERVAL = 5.0  # net_ratelimit(): at most RATELIMIT_BURST messages per interval
RATELIMIT_BURST = 10
MAX_CATCH_UP_TICKS = 300  # after this many idle estimator ticks every average is back to 0


class Director:
    """IPVS state: services, real servers, timeouts, sysctls, and (see packet.py) connections."""

    def __init__(self, rng: random.Random | None = None, sysctl: Sysctls | None = None) -> None:
        self.services = ServiceTable()
        self.timeouts = Timeouts()
        self.sysctl = sysctl or Sysctls()
        self.env = SchedEnv(now=0.0, rng=rng or random.Random(), sysctl=self.sysctl)
        # -- the packet path's state (packet.py, conn.py) --
        self.conns = ConnectionTable()
        self.events: deque[tuple[float, str]] = deque(maxlen=1000)  # kernel log lines, newest last
        self.log: Callable[[str], None] | None = None  # called with each logged line, if set
        self._rl_start = -RATELIMIT_INTERVAL
        self._rl_count = 0
        self._est_next = ESTIMATOR_PERIOD
        self._periodic_next = PERIODIC
        self._nodest_sweep = False
        self._deadline = ESTIMATOR_PERIOD  # earliest time tick() has something to do
        self._state_timeouts: dict[int, tuple[int, ...]] = {}
        self._state_timeouts_of = self.timeouts

    # -- control: thin wrappers that keep one place for cross-cutting effects ---------------
    def add_service(self, key: ServiceKey, cfg: ServiceConfig) -> VirtualService:
        return self.services.add_service(key, cfg)

    def edit_service(self, key: ServiceKey, cfg: ServiceConfig) -> VirtualService:
        return self.services.edit_service(key, cfg)

    def del_service(self, key: ServiceKey) -> None:
        self.services.del_service(key, self.env.now)
        self._nodest_sweep = True

    def flush(self) -> None:
        self.services.flush(self.env.now)
        self._nodest_sweep = True

    def add_dest(self, key: ServiceKey, cfg: DestConfig) -> RealServer:
        return self.services.add_dest(key, cfg, self.env.now)

    def edit_dest(self, key: ServiceKey, cfg: DestConfig) -> RealServer:
        return self.services.edit_dest(key, cfg)

    def del_dest(self, key: ServiceKey, addr: IPAddr, port: int) -> RealServer:
        dest = self.services.del_dest(key, addr, port, self.env.now)
        self._nodest_sweep = True  # expire_nodest_conn's background flush, on the next tick
        return dest

    def zero(self, key: ServiceKey | None = None) -> None:
        self.services.zero(key)

    def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        """`--set tcp tcpfin udp`: 0 keeps a value; the new values apply from each entry's next packet."""
        for v in (tcp, tcpfin, udp):
            if not 0 <= v <= MAX_TIMEOUT:
                raise IPVSError(Op.SET_TIMEOUT, errno.EINVAL)
        cur = self.timeouts
        self.timeouts = Timeouts(tcp or cur.tcp, tcpfin or cur.tcpfin, udp or cur.udp)

    def state_timeouts(self, proto: Protocol) -> tuple[int, ...]:
        """Timeout of each state of `proto` with the current `--set` values (cached per packet path)."""
        if self._state_timeouts_of is not self.timeouts:  # `timeouts` may be replaced by anyone
            self._state_timeouts.clear()
            self._state_timeouts_of = self.timeouts
        table = self._state_timeouts.get(proto.proto)
        if table is None:
            table = self._state_timeouts[proto.proto] = proto.timeouts(self.timeouts)
        return table

    # -- the packet path (packet.py) -----------------------------------------------------------
    # The packet.py functions are the methods themselves (no wrapper frame per packet):
    # process_in(pkt, now) -> Verdict: a client->director packet: lookup, scheduling, state,
    #   counters, timer (spec §A3).
    # process_out(conn, pkt, now): a real server's reply seen by the director (NAT, FULLNAT).
    process_in = packet.process_in
    process_out = packet.process_out
    # The same for engines that parse frames (IPv4 addresses as ints, no Packet or Verdict for a
    # known TCP entry): process_in_v4(proto, saddr, sport, daddr, dport, fwmark, length,
    # tcp_flags, now) -> Connection | Verdict, and process_out_tcp(conn, length, tcp_flags, now);
    # process_in_tcp(conn, length, tcp_flags, now) for a segment of an entry the engine holds.
    process_in_v4 = packet.process_in_v4
    process_out_tcp = packet.process_out_tcp
    process_in_tcp = packet.process_in_tcp

    def lookup_out(
        self, protocol: Proto | int, raddr: IPAddr, rport: int, caddr: IPAddr, cport: int
    ) -> Connection | None:
        """The entry a reply (server -> client) belongs to: NAT/FULLNAT replies come from the real
        server's address and port; DR/tunnel replies, if they cross the director, from the VIP."""
        conn = self.conns.lookup_out(int(protocol), raddr, rport, caddr, cport)
        return conn if conn is not None and not conn.dead else None

    def lookup_in(
        self, protocol: Proto | int, caddr: IPAddr, cport: int, vaddr: IPAddr, vport: int
    ) -> Connection | None:
        return self.conns.lookup_in(int(protocol), caddr, cport, vaddr, vport)

    def lookup_out_v4(
        self, protocol: int, raddr: int, rport: int, caddr: int, cport: int
    ) -> Connection | None:
        """lookup_out for IPv4 addresses given as ints (no address objects to build)."""
        conn = self.conns.lookup_out_v4(protocol, raddr, rport, caddr, cport)
        return conn if conn is not None and not conn.flags & F_DEAD else None

    def lookup_in_v4(
        self, protocol: int, caddr: int, cport: int, vaddr: int, vport: int
    ) -> Connection | None:
        """lookup_in for IPv4 addresses given as ints."""
        return self.conns.conns.get(make_key_v4(protocol, caddr, cport, vaddr, vport))

    # -- logging ---------------------------------------------------------------------------------
    def log_ratelimited(self, text: str, now: float) -> None:
        """Log a line the kernel logs through net_ratelimit() (10 per 5 s)."""
        if now - self._rl_start >= RATELIMIT_INTERVAL:
            self._rl_start = now
            self._rl_count = 0
        if self._rl_count >= RATELIMIT_BURST:
            return
        self._rl_count += 1
        self.log_line(text, now)

    def log_line(self, text: str, now: float) -> None:
        """Log a line (the kernel's pr_err): kept in `events` and handed to `log` if set."""
        self.events.append((now, text))
        if self.log is not None:
            self.log(text)

    # -- time --------------------------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Set the clock (never backwards) and run the timers that are due."""
        env = self.env
        if now > env.now:
            env.now = now
        t = env.now
        if t >= self._deadline or self._nodest_sweep:
            self.tick(t)
            return
        # Entries armed since next_due() was last read may be due sooner: the table's `wake`
        # says from when that is possible (next_due() only moves earlier between ticks).
        table = self.conns
        if t >= table.wake:
            exp = table.next_due()
            if exp is not None and exp <= t:
                self.tick(t)
                return
            if exp is not None and exp < self._deadline:
                self._deadline = exp  # read now: packets need not ask again until then
            table.wake = math.inf

    def tick(self, now: float) -> None:
        """Expire entries, run the estimator every 2 s, the periodic jobs every 60 s."""
        if now > self.env.now:
            self.env.now = now
        now = self.env.now
        if self._nodest_sweep:
            self._nodest_sweep = False
            if self.sysctl.expire_nodest_conn:
                self._flush_nodest(now)
        table = self.conns
        # Each timer fires at its own time: an entry kept alive is re-armed from then, and may
        # come up again within this same call.
        while batch := table.due(now):
            for when, conn in batch:
                table.expire(conn, when)
        if now >= self._est_next:
            self._estimate(now)
        if now >= self._periodic_next:
            self._periodic_next += PERIODIC * max(1, int((now - self._periodic_next) // PERIODIC) + 1)
            self.services.purge_trash(now)
            for svc in self.services:
                if svc.scheduler is not None:
                    svc.scheduler.tick(self.env)
        # advance() ticks again when there is work: a held timer bucket (conn.py) is looked at
        # when its first entry is due, not at every packet of the second it belongs to
        nd = min(self._est_next, self._periodic_next)
        exp = table.next_due()
        self._deadline = nd if exp is None else min(nd, exp)
        table.wake = math.inf  # next_due() is read: see ConnectionTable.wake

    def _estimate(self, now: float) -> None:
        """Estimator ticks for every stats object, catching up over a long gap."""
        n = int((now - self._est_next) // ESTIMATOR_PERIOD) + 1
        self._est_next += n * ESTIMATOR_PERIOD
        if not self.sysctl.run_estimation:
            return
        objs = [self.services.tot_stats]
        for svc in self.services:
            objs.append(svc.stats)
            objs.extend(d.stats for d in svc.dests)
        objs.extend(d.stats for d in self.services.trash)
        for _ in range(min(n, MAX_CATCH_UP_TICKS)):
            for st in objs:
                st.estimate()

    def _flush_nodest(self, now: float) -> None:
        """expire_nodest_conn: expire entries whose server was deleted (and templates left empty)."""
        table = self.conns
        for conn in list(table):
            if conn.dead or conn.dest.available or conn.n_control or conn.is_template:
                continue
            ctl = conn.control
            table.expire(conn, now)
            if ctl is not None and not ctl.n_control:
                table.expire(ctl, now)

    def next_deadline(self) -> float | None:
        """The next time tick() has work to do."""
        nd = min(self._est_next, self._periodic_next)
        exp = self.conns.next_expiry()
        return nd if exp is None else min(nd, exp)

    # -- listing ---------------------------------------------------------------------------------
    def connections_view(self, now: float | None = None) -> list[ConnView]:
        """What /proc/net/ip_vs_conn lists: every entry and template; one-packet entries never."""
        if now is not None:
            self.advance(now)
        t = self.env.now
        out = []
        for conn in self.conns:
            if conn.dead:
                continue
            proto, caddr, cport, vaddr, vport = split_key(conn.key)
            dport = conn.dport
            if conn.flags & F_INVALID:  # the kernel rewrites the key of a dead template so
                cport, vport, dport = 0, 0xFFFF, 0xFFFF  # it never matches again
            left = max(conn.expires - t, 0.0)
            out.append(
                ConnView(
                    protocol=proto,
                    caddr=str(caddr),
                    cport=cport,
                    vaddr=str(vaddr),
                    vport=vport,
                    daddr=str(conn.dest.addr),
                    dport=dport,
                    state=conn.state_name,
                    expires=int(left),
                    pe_name=conn.pe_name or (conn.dest.service.pe_name if conn.is_template else ""),
                    pe_data=conn.pe_data.decode("latin-1") if conn.pe_data else "",
                    fwd=int(conn.fwd),
                    template=conn.is_template,
                )
            )
        return out


def take_snapshot(director: Director) -> Snapshot:
    """The director's rules, counters and rates as plain views (see snapshot.py)."""
    services = [service_view(svc) for svc in director.services]
    tot = director.services.tot_stats
    t = director.timeouts
    return Snapshot(
        services=tuple(services),
        stats=tot.shown(),
        rates=tot.rates(),
        timeouts=(t.tcp, t.tcpfin, t.udp),
    )


def service_view(svc: VirtualService) -> ServiceView:
    """One service with its real servers, counters and rates as a plain view."""
    views = []
    for d in svc.dests:
        st = d.stats
        inact = d.total - d.activeconns  # RealServer.inactconns
        views.append(
            make_dest_view(
                addr_text(d.addr),
                d.port,
                int(d.fwd),
                d.weight,
                d.u_threshold,
                d.l_threshold,
                d.activeconns,
                inact if inact > 0 else 0,
                d.persistconns,
                int(d.tun_type),
                d.tun_port,
                int(d.tun_flags),
                st.shown(),
                st.rates(),
            )
        )
    return ServiceView(
        af=svc.af,
        protocol=int(svc.protocol),
        addr="" if svc.addr is None else addr_text(svc.addr),
        port=svc.port,
        fwmark=svc.fwmark,
        scheduler=svc.scheduler_name,
        flags=int(svc.flags),
        timeout=svc.timeout,
        netmask=svc.netmask,
        pe_name=svc.pe_name,
        dests=tuple(views),
        stats=svc.stats.shown(),
        rates=svc.stats.rates(),
    )
