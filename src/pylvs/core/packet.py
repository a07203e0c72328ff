"""The packet path (ip_vs_core.c): what the director decides for one packet's metadata at `now`.

`process_in` handles a client->director packet: existing-entry lookup, connection reuse, the
deleted-server rules, the scheduling trigger, service lookup, scheduling (with persistence), the
state transition, counters and the timer. `process_out` handles a reply that crosses the director
(NAT, FULLNAT). Nothing here does I/O or reads a clock; the decision is returned as a Verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from pylvs.core.conn import (
    F_DEAD,
    F_INACTIVE,
    F_NOOUTPUT,
    F_ONE_PACKET,
    F_TEMPLATE,
    INITIAL_TIMEOUT,
    Connection,
    PETemplate,
    bind_dest,
    make_key,
    set_active,
)
from pylvs.core.persistence import FTPPORT, conn_dport, pe_fill, template_key, template_usable
from pylvs.core.proto import PROTOCOLS, TPL_ASSURED, Direction, Protocol
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.types import AF_INET, Fwd, Packet, Proto, ServiceKey

if TYPE_CHECKING:
    from pylvs.core.director import Director

FTPDATA = 20
_INPUT, _OUTPUT, _INPUT_ONLY = Direction.INPUT, Direction.OUTPUT, Direction.INPUT_ONLY


class Action(Enum):
    FORWARD = "forward"  # hand the packet to the connection's forwarding method
    NO_DEST = "no_dest"  # refuse: ICMP port unreachable to the client, drop the packet
    DROP = "drop"  # drop silently
    PASS = "pass"  # not IPVS's business: let the packet continue (local stack)


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    conn: Connection | None = None


_new = object.__new__
_set_action = Verdict.__dict__["action"].__set__  # slot setters: frozen blocks only setattr
_set_conn = Verdict.__dict__["conn"].__set__
_FORWARD = Action.FORWARD


def forward(conn: Connection) -> Verdict:
    """Verdict(Action.FORWARD, conn) without the frozen dataclass's __init__ (once per packet)."""
    v: Verdict = _new(Verdict)
    _set_action(v, _FORWARD)
    _set_conn(v, conn)
    return v


PASS = Verdict(Action.PASS)
DROP = Verdict(Action.DROP)
NO_DEST = Verdict(Action.NO_DEST)


# -- service lookup (ip_vs_service_find) ---------------------------------------------------------
def find_service(d: Director, pkt: Packet) -> VirtualService | None:
    """fwmark first, then the exact service, then FTP's for data ports, then the port-0 service."""
    table = d.services
    if not (pkt.fwmark and table.fwm_count):
        # the common case: an IPv4 address service found by plain ints (see ServiceTable.find_v4)
        svc = table.find_v4(pkt.protocol, pkt.saddr, pkt.daddr, pkt.dport)
        if svc is not None:
            return svc
    af = pkt.af
    if pkt.fwmark and table.fwm_count:
        svc = table.get(ServiceKey(af, Proto.TCP, None, 0, pkt.fwmark))
        if svc is not None:
            return svc
    svc = table.get(ServiceKey(af, pkt.protocol, pkt.daddr, pkt.dport, 0))
    if svc is not None:
        return svc
    if (
        pkt.protocol == Proto.TCP
        and table.ftp_count
        and (pkt.dport == FTPDATA or pkt.dport >= d.sysctl.ip_unprivileged_port_start)
    ):
        svc = table.get(ServiceKey(af, Proto.TCP, pkt.daddr, FTPPORT, 0))
        if svc is not None:
            return svc
    if table.port0_count:
        return table.get(ServiceKey(af, pkt.protocol, pkt.daddr, 0, 0))
    return None


# -- entries ------------------------------------------------------------------------------------
def conn_flags(dest: RealServer) -> int:
    """Flags every new entry of a server starts with: its method, INACTIVE, NOOUTPUT unless NAT."""
    flags = int(dest.fwd) | F_INACTIVE
    if dest.fwd not in (Fwd.MASQ, Fwd.FULLNAT):
        flags |= F_NOOUTPUT
    return flags


def new_conn(d: Director, key: int, dest: RealServer, dport: int, extra: int, fwmark: int) -> Connection:
    """ip_vs_conn_new: bound to its server, provisional 3 s timeout, hashed unless one-packet."""
    conn = Connection(key, dest, dport, conn_flags(dest) | extra, INITIAL_TIMEOUT, fwmark)
    bind_dest(conn)
    if not extra & F_ONE_PACKET:
        d.conns.hash(conn)
    return conn


def new_pe_template(
    d: Director, key: int, dest: RealServer, dport: int, fwmark: int, pe_name: str, pe_data: bytes
) -> Connection:
    """A template that also carries (and matches on) a persistence engine's data."""
    tpl = PETemplate(
        key, dest, dport, conn_flags(dest) | F_TEMPLATE, INITIAL_TIMEOUT, fwmark, pe_name, pe_data
    )
    bind_dest(tpl)
    d.conns.hash(tpl)
    return tpl


def _count_conn(d: Director, conn: Connection, svc: VirtualService) -> None:
    conn.dest.stats.conns += 1
    svc.stats.conns += 1
    d.services.tot_stats.conns += 1


def _in_stats(d: Director, conn: Connection, length: int) -> None:
    dest = conn.dest
    if dest.available:
        st = dest.stats
        st.inpkts += 1
        st.inbytes += length
        st = dest.service.stats
        st.inpkts += 1
        st.inbytes += length
        st = d.services.tot_stats
        st.inpkts += 1
        st.inbytes += length


def _out_stats(d: Director, conn: Connection, length: int) -> None:
    dest = conn.dest
    if dest.available:
        st = dest.stats
        st.outpkts += 1
        st.outbytes += length
        st = dest.service.stats
        st.outpkts += 1
        st.outbytes += length
        st = d.services.tot_stats
        st.outpkts += 1
        st.outbytes += length


def assure_template(conn: Connection) -> None:
    ctl = conn.control
    if ctl is not None and ctl.state != TPL_ASSURED:
        ctl.state = TPL_ASSURED


def transition(d: Director, proto: Protocol, conn: Connection, pkt: Packet, direction: Direction) -> None:
    """One packet's state change: pick the table, move the entry, keep ActiveConn right, set timeout."""
    if conn.flags & F_NOOUTPUT:
        if direction == _OUTPUT:
            conn.flags &= ~F_NOOUTPUT
        else:
            direction = _INPUT_ONLY
    state = conn.state
    new = proto.next_state(state, pkt, direction, d.sysctl)
    if new != state:
        if (new in proto.active) == bool(conn.flags & F_INACTIVE):  # else set_active is a no-op
            set_active(conn, new in proto.active)
        if new == proto.established:
            assure_template(conn)
    elif direction == _OUTPUT and proto.established < 0:
        assure_template(conn)  # UDP: a reply assures the template
    conn.state = new
    # d.state_timeouts(proto), its cache read here first
    tt = d._state_timeouts.get(proto.proto) if d._state_timeouts_of is d.timeouts else None
    conn.timeout = (tt if tt is not None else d.state_timeouts(proto))[new]


# -- scheduling (ip_vs_schedule, ip_vs_sched_persist) -------------------------------------------
def _no_dest(d: Director, svc: VirtualService, pkt: Packet, now: float) -> None:
    sched = svc.scheduler
    if sched is None or sched.name == "none":
        return  # the kernel has no scheduler object then, and says nothing
    text = getattr(sched, "no_dest_text", "no destination available")
    if svc.fwmark:
        where = f"FWM {svc.fwmark} 0x{svc.fwmark:08X}"
    elif svc.af == AF_INET:
        where = f"{svc.protocol.label} {pkt.daddr}:{svc.port}"
    else:
        where = f"{svc.protocol.label} [{pkt.daddr}]:{svc.port}"
    d.log_ratelimited(f"IPVS: {sched.name}: {where} - {text}", now)


def _run_scheduler(d: Director, svc: VirtualService, pkt: Packet, now: float) -> RealServer | None:
    sched = svc.scheduler
    dest = sched.schedule(pkt, d.env) if sched is not None else None
    if dest is None:
        _no_dest(d, svc, pkt, now)
    return dest


def _leave(d: Director, svc: VirtualService, pkt: Packet) -> Verdict:
    """ip_vs_leave: no server. With cache_bypass a fwmark service's packet goes on to its own
    destination (the kernel makes a bypass entry for it; we let the packet pass); FTP's other
    ports pass on; everything else is refused (ICMP port unreachable)."""
    if d.sysctl.cache_bypass and svc.fwmark:
        return PASS
    if svc.port == FTPPORT and pkt.dport != FTPPORT:
        return PASS
    return NO_DEST


def schedule(d: Director, svc: VirtualService, pkt: Packet, now: float, key: int | None = None) -> Verdict:
    """Make a new connection for a packet of `svc`, or say what happens to the packet instead.
    `key` is the packet's connection key when the caller has it already."""
    if pkt.sport == FTPDATA:
        return PASS  # never schedule active FTP data from a real server
    one_packet = F_ONE_PACKET if svc.onepacket and pkt.protocol == Proto.UDP else 0
    if key is None:
        key = make_key(int(pkt.protocol), pkt.saddr, pkt.sport, pkt.daddr, pkt.dport)
    if svc.persistent:
        return _schedule_persist(d, svc, pkt, now, key, one_packet)
    if not svc.fwmark and pkt.dport != svc.port:
        if not svc.port:
            d.log_line(
                "IPVS: Schedule: port zero only supported in persistent services, "
                "check your ipvs configuration",
                now,
            )
        return _leave(d, svc, pkt)
    dest = _run_scheduler(d, svc, pkt, now)
    if dest is None:
        return _leave(d, svc, pkt)
    conn = new_conn(d, key, dest, dest.port or pkt.dport, one_packet, pkt.fwmark)
    _count_conn(d, conn, svc)
    return forward(conn)


def _schedule_persist(
    d: Director, svc: VirtualService, pkt: Packet, now: float, key: int, one_packet: int
) -> Verdict:
    tk = template_key(svc, pkt)
    table = d.conns
    pe_data = b""
    if svc.pe_name:
        # a persistence engine (sip): its data joins the key; a packet without it is dropped
        found = pe_fill(svc.pe_name, pkt)
        if found is None:
            return DROP
        pe_data = found
        tpl = table.pe_templates.get((tk.key, pe_data))
    else:
        tpl = table.templates.get(tk.key)
    if tpl is not None and not template_usable(tpl, d.sysctl):
        table.invalidate_template(tpl)
        tpl = None
    if tpl is None:
        dest = _run_scheduler(d, svc, pkt, now)
        if dest is None:
            return _leave(d, svc, pkt)
        tdport = dest.port if tk.uses_service_port else 0
        if pe_data:
            tpl = new_pe_template(d, tk.key, dest, tdport, pkt.fwmark, svc.pe_name, pe_data)
        else:
            tpl = new_conn(d, tk.key, dest, tdport, F_TEMPLATE, pkt.fwmark)
        tpl.timeout = svc.timeout
    dest = tpl.dest
    conn = new_conn(d, key, dest, conn_dport(svc, pkt, dest), one_packet, pkt.fwmark)
    conn.control = tpl
    tpl.n_control += 1
    table.arm(tpl, now)  # each use re-arms the template to its timeout
    _count_conn(d, conn, svc)
    return forward(conn)


# -- the two directions --------------------------------------------------------------------------
def process_in(d: Director, pkt: Packet, now: float) -> Verdict:
    """A client->director packet (spec §A3)."""
    d.advance(now)
    table = d.conns
    if not d.services.has_services and not table.conns:
        return PASS
    proto = PROTOCOLS.get(pkt.protocol)
    if proto is None:
        return PASS
    key = make_key(pkt.protocol, pkt.saddr, pkt.sport, pkt.daddr, pkt.dport)
    conn = table.conns.get(key)  # ConnectionTable.lookup_in
    sysctl = d.sysctl
    if conn is not None and proto.is_new_conn(pkt):
        if sysctl.expire_nodest_conn and conn.dest.weight == 0:
            resched = True
        else:
            resched = bool(sysctl.conn_reuse_mode) and (
                conn.control is None
                and proto.reusable(conn.state, bool(conn.flags & F_NOOUTPUT), sysctl.conn_reuse_mode)
            )
        if resched:
            # an entry that still controls others is left to its timer; the new one takes its key
            if conn.n_control:
                table.detach(conn)
            else:
                table.free(conn)
            conn = None
    if conn is not None and not conn.dest.available:
        if not sysctl.expire_nodest_conn:
            return DROP
        _expire_now(d, conn, now)
        conn = None
    if conn is None:
        if not proto.may_schedule(pkt, sysctl):
            return PASS
        svc = find_service(d, pkt)
        if svc is None:
            return PASS
        v = schedule(d, svc, pkt, now, key)
        if v.conn is None:
            return v
        conn = v.conn
    dest = conn.dest
    if dest.available:  # _in_stats, inlined: this runs for every packet
        length = pkt.length
        st = dest.stats
        st.inpkts += 1
        st.inbytes += length
        st = dest.service.stats
        st.inpkts += 1
        st.inbytes += length
        st = d.services.tot_stats
        st.inpkts += 1
        st.inbytes += length
    transition(d, proto, conn, pkt, _INPUT)
    if conn.flags & F_ONE_PACKET:
        table.free(conn)  # one-packet scheduling: gone as soon as the datagram is forwarded
    else:
        table.arm(conn, now)
    return forward(conn)


def _expire_now(d: Director, conn: Connection, now: float) -> None:
    """ip_vs_conn_expire_now, and a new entry will take its key."""
    if not d.conns.expire(conn, now):
        d.conns.detach(conn)


def process_out(d: Director, conn: Connection, pkt: Packet, now: float) -> None:
    """A real server's reply crossing the director (NAT, FULLNAT): counters, OUTPUT state, timer."""
    d.advance(now)
    if conn.flags & F_DEAD:
        return
    proto = PROTOCOLS.get(pkt.protocol)
    if proto is None:
        return
    _out_stats(d, conn, pkt.length)
    transition(d, proto, conn, pkt, _OUTPUT)
    d.conns.arm(conn, now)
