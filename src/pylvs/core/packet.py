"""The packet path (ip_vs_core.c): what the director decides for one packet's metadata at `now`.

`process_in` handles a client->director packet: existing-entry lookup, connection reuse, the
deleted-server rules, the scheduling trigger, service lookup, scheduling (with persistence), the
state transition, counters and the timer. `process_out` handles a reply that crosses the director
(NAT, FULLNAT). Nothing here does I/O or reads a clock; the decision is returned as a Verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from ipaddress import IPv4Address
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
    load_changed,
    make_key,
    set_active,
)
from pylvs.core.persistence import FTPPORT, conn_dport, pe_fill, template_key, template_usable
from pylvs.core.proto import PROTOCOLS, TPL_ASSURED, Direction, Protocol
from pylvs.core.proto.tcp import EVENT_BITS as _TCP_EVENT_BITS
from pylvs.core.proto.tcp import NORMAL_STEP as _TCP_NORMAL
from pylvs.core.proto.tcp import SECURE_STEP as _TCP_SECURE
from pylvs.core.service import RealServer, VirtualService, addr_int
from pylvs.core.types import AF_INET, TCP_RST, TCP_SYN, Fwd, Packet, Proto, ServiceKey, SvcFlags

if TYPE_CHECKING:
    from pylvs.core.director import Director

FTPDATA = 20
_INPUT, _OUTPUT, _INPUT_ONLY = Direction.INPUT, Direction.OUTPUT, Direction.INPUT_ONLY
_TCP = PROTOCOLS[Proto.TCP]  # the common case, whose state step the hot paths do inline
_TCP_ACTIVE = tuple(s in _TCP.active for s in range(len(_TCP.names)))  # by state, no hashing
_TCP_ESTABLISHED = _TCP.established
_TCP_PROTO = Proto.TCP
_UDP = int(Proto.UDP)
_PERSISTENT = int(SvcFlags.PERSISTENT)
_ONEPACKET = int(SvcFlags.ONEPACKET)


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


# Packet's slot setters, for _packet_v4: the frozen dataclass's __init__ sets each field through
# object.__setattr__, which makes building one cost ~0.5 µs more
_PKT_FIELDS = [f.name for f in fields(Packet)]
assert _PKT_FIELDS == [
    "protocol", "saddr", "sport", "daddr", "dport", "fwmark", "length", "tcp_flags",
    "sctp_chunk", "sctp_abort_next", "payload",
], "keep _packet_v4 in step with types.Packet"  # fmt: skip
(
    _p_protocol,
    _p_saddr,
    _p_sport,
    _p_daddr,
    _p_dport,
    _p_fwmark,
    _p_length,
    _p_tcp_flags,
    _p_sctp_chunk,
    _p_sctp_abort_next,
    _p_payload,
) = (Packet.__dict__[name].__set__ for name in _PKT_FIELDS)


def _packet_v4(
    proto: Proto, saddr: int, sport: int, daddr: int, dport: int, fwmark: int, length: int, tcp_flags: int
) -> Packet:
    """Packet(proto, IPv4Address(saddr), sport, IPv4Address(daddr), dport, fwmark, length,
    tcp_flags): the same object, its fields set through the slot setters."""
    pkt: Packet = _new(Packet)
    _p_protocol(pkt, proto)
    _p_saddr(pkt, IPv4Address(saddr))
    _p_sport(pkt, sport)
    _p_daddr(pkt, IPv4Address(daddr))
    _p_dport(pkt, dport)
    _p_fwmark(pkt, fwmark)
    _p_length(pkt, length)
    _p_tcp_flags(pkt, tcp_flags)
    _p_sctp_chunk(pkt, -1)
    _p_sctp_abort_next(pkt, False)
    _p_payload(pkt, b"")
    return pkt


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
    return _find_service_rest(d, pkt)


def _find_service_rest(d: Director, pkt: Packet) -> VirtualService | None:
    """find_service after the IPv4 address lookup (which found nothing, or was not for this packet)."""
    table = d.services
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
    return _fwd_flags(dest.fwd)


def _fwd_flags(fwd: Fwd) -> int:
    flags = int(fwd) | F_INACTIVE
    if fwd not in (Fwd.MASQ, Fwd.FULLNAT):
        flags |= F_NOOUTPUT
    return flags


_FLAGS_OF_FWD = {f: _fwd_flags(f) for f in Fwd}  # conn_flags by method, one dict read per new entry


def new_conn(d: Director, key: int, dest: RealServer, dport: int, extra: int, fwmark: int) -> Connection:
    """ip_vs_conn_new: bound to its server, provisional 3 s timeout, hashed unless one-packet."""
    conn = Connection(key, dest, dport, conn_flags(dest) | extra, INITIAL_TIMEOUT, fwmark)
    bind_dest(conn)
    if not extra & F_ONE_PACKET:
        d.conns.hash(conn)
    return conn


def _new_conn_quiet(
    d: Director, key: int, dest: RealServer, dport: int, extra: int, fwmark: int
) -> Connection:
    """new_conn, but the scheduler is not told yet (bind_dest_quiet): the caller calls
    load_changed(dest) once the entry has its first state."""
    flags = _FLAGS_OF_FWD.get(dest.fwd)
    if flags is None:
        flags = _fwd_flags(dest.fwd)
    conn = Connection(key, dest, dport, flags | extra, INITIAL_TIMEOUT, fwmark)
    # bind_dest_quiet(conn), inlined: a normal entry, inactive (so RealServer.bind_conn only)
    total = dest.total = dest.total + 1
    if dest.u_threshold and total == dest.u_threshold:
        dest.overload = True
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
    r = _schedule(d, svc, pkt, now, key)
    if type(r) is Verdict:
        return r
    assert isinstance(r, Connection)
    load_changed(r.dest)
    return forward(r)


def _schedule(
    d: Director, svc: VirtualService, pkt: Packet, now: float, key: int | None
) -> Connection | Verdict:
    """schedule(), returning the new entry bound quietly (the caller calls load_changed)."""
    if pkt.sport == FTPDATA:
        return PASS  # never schedule active FTP data from a real server
    sflags = int(svc.flags)  # svc.onepacket / svc.persistent without the property calls
    one_packet = F_ONE_PACKET if sflags & _ONEPACKET and pkt.protocol == _UDP else 0
    if key is None:
        key = make_key(int(pkt.protocol), pkt.saddr, pkt.sport, pkt.daddr, pkt.dport)
    if sflags & _PERSISTENT:
        return _schedule_persist(d, svc, pkt, now, key, one_packet)
    skey = svc.key
    if not skey.fwmark and pkt.dport != skey.port:
        if not skey.port:
            d.log_line(
                "IPVS: Schedule: port zero only supported in persistent services, "
                "check your ipvs configuration",
                now,
            )
        return _leave(d, svc, pkt)
    sched = svc.scheduler  # _run_scheduler, inlined
    dest = sched.schedule(pkt, d.env) if sched is not None else None
    if dest is None:
        _no_dest(d, svc, pkt, now)
        return _leave(d, svc, pkt)
    conn = _new_conn_quiet(d, key, dest, dest.port or pkt.dport, one_packet, pkt.fwmark)
    dest.stats.conns += 1  # _count_conn, inlined
    svc.stats.conns += 1
    d.services.tot_stats.conns += 1
    return conn


def _schedule_persist(
    d: Director, svc: VirtualService, pkt: Packet, now: float, key: int, one_packet: int
) -> Connection | Verdict:
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
    conn = _new_conn_quiet(d, key, dest, conn_dport(svc, pkt, dest), one_packet, pkt.fwmark)
    conn.control = tpl
    tpl.n_control += 1
    table.arm(tpl, now)  # each use re-arms the template to its timeout
    _count_conn(d, conn, svc)
    return conn


# -- the two directions --------------------------------------------------------------------------
# These run for every packet an engine cannot settle on its own, so they are written for the
# common cases: a segment of a known TCP entry, and a new TCP connection. Step by step they do
# what the plain reading says (advance, lookup, reuse, deleted-server rules, scheduling, counters,
# state, timer); the general cases go through the helpers above. What is inlined, and why, is
# said where it happens. process_in_v4 / process_out_tcp are the same paths for engines that
# parse frames: no Packet, address objects or Verdict to build for a known TCP entry.


def _advance(d: Director, now: float) -> None:
    """d.advance(now), its test for "no timer due" done here first (the same fields it reads)."""
    env = d.env
    t = env.now
    if now > t:
        env.now = t = now
    if t >= d._deadline or d._nodest_sweep or t >= d.conns.wake:
        d.advance(t)


def _known_tcp_in(d: Director, conn: Connection, tcp_flags: int, length: int, now: float) -> None:
    """process_in's work for a segment without SYN of a known TCP entry whose server is still
    there (most of the packets that ask the core): counters, the INPUT step, the timer."""
    dest = conn.dest
    st = dest.stats  # _in_stats, inlined (the server is available)
    st.inpkts += 1
    st.inbytes += length
    st = dest.service.stats
    st.inpkts += 1
    st.inbytes += length
    st = d.services.tot_stats
    st.inpkts += 1
    st.inbytes += length
    # transition(d, TCP, conn, pkt, _INPUT): the state step is one subscript of a flat table
    # (proto/tcp.py) and ActiveConn a tuple read
    flags = conn.flags
    state = conn.state
    new = (_TCP_SECURE if d.sysctl.secure_tcp == 3 else _TCP_NORMAL)[2 if flags & F_NOOUTPUT else 0][
        (tcp_flags & _TCP_EVENT_BITS) << 4 | state
    ]
    if new != state:
        active = _TCP_ACTIVE[new]
        if active != (not flags & F_INACTIVE):
            # set_active(conn, active), inlined; the server is available, so its scheduler is
            # told directly (conn.load_changed's test is known true here)
            if active:
                conn.flags = flags & ~F_INACTIVE
                dest.activeconns += 1
            else:
                conn.flags = flags | F_INACTIVE
                dest.activeconns -= 1
            sched = dest.service.scheduler
            if sched is not None:
                sched.load_changed(dest)
        if new == _TCP_ESTABLISHED:
            assure_template(conn)
        conn.state = new
    tt = d._state_timeouts.get(_TCP_PROTO) if d._state_timeouts_of is d.timeouts else None
    conn.timeout = (tt if tt is not None else d.state_timeouts(_TCP))[new]
    d.conns.arm(conn, now)


def process_in(d: Director, pkt: Packet, now: float) -> Verdict:
    """A client->director packet (spec §A3)."""
    env = d.env  # _advance(d, now), inlined
    t = env.now
    if now > t:
        env.now = t = now
    if t >= d._deadline or d._nodest_sweep or t >= d.conns.wake:
        d.advance(t)
    proto = PROTOCOLS.get(pkt.protocol)
    if proto is None:
        return PASS
    saddr = pkt.saddr
    if type(saddr) is IPv4Address:  # make_key, inlined for IPv4
        key = (
            (((((pkt.protocol << 32) | addr_int(saddr)) << 16 | pkt.sport) << 32 | addr_int(pkt.daddr)) << 16)
            | pkt.dport
        ) << 1
    else:
        key = make_key(pkt.protocol, saddr, pkt.sport, pkt.daddr, pkt.dport)
    table = d.conns
    conn = table.conns.get(key)  # ConnectionTable.lookup_in
    if conn is not None and proto is _TCP and not pkt.tcp_flags & TCP_SYN and conn.dest.available:
        _known_tcp_in(d, conn, pkt.tcp_flags, pkt.length, now)  # the common case
        v: Verdict = _new(Verdict)  # forward(conn), inlined
        _set_action(v, _FORWARD)
        _set_conn(v, conn)
        return v
    r = _in_general(d, proto, pkt, key, conn, now)
    if type(r) is Verdict:
        return r
    v = _new(Verdict)
    _set_action(v, _FORWARD)
    _set_conn(v, r)
    return v


def _in_general(
    d: Director, proto: Protocol, pkt: Packet, key: int, conn: Connection | None, now: float
) -> Connection | Verdict:
    """process_in past the lookup, for everything but a known TCP entry's segment without SYN:
    connection reuse, the deleted-server rules, scheduling, and the new entry's first state.
    Returns the entry to forward on, or the Verdict for the packet."""
    table = d.conns
    sysctl = d.sysctl
    if conn is not None:
        if (pkt.tcp_flags & TCP_SYN) if proto is _TCP else proto.is_new_conn(pkt):
            conn = reuse_entry(d, proto, conn)
        if conn is not None and not conn.dest.available:
            if not sysctl.expire_nodest_conn:
                return DROP
            _expire_now(d, conn, now)
            conn = None
    fresh = conn is None
    if conn is None:
        # (the kernel's first test, done here: with an entry found it cannot hold)
        services = d.services
        if not table.conns and not services.has_services:
            return PASS
        if proto is _TCP:  # TCP.may_schedule, inlined: a SYN without RST, or any but a RST if sloppy
            tf = pkt.tcp_flags
            if tf & TCP_RST or not (tf & TCP_SYN or sysctl.sloppy_tcp):
                return PASS
        elif not proto.may_schedule(pkt, sysctl):
            return PASS
        # find_service, its first step here
        svc = None
        if not (pkt.fwmark and services.fwm_count):
            svc = services.find_v4(pkt.protocol, pkt.saddr, pkt.daddr, pkt.dport)
        if svc is None:
            svc = _find_service_rest(d, pkt)
            if svc is None:
                return PASS
        r = _schedule(d, svc, pkt, now, key)
        if type(r) is Verdict:
            return r
        assert isinstance(r, Connection)
        conn = r
    dest = conn.dest
    if dest.available:  # _in_stats, inlined
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
    if fresh and proto is _TCP:
        # A new TCP entry's first state (transition() for it, see _known_tcp_in), with the
        # scheduler told once for the binding and the state together (conn.bind_dest_quiet).
        flags = conn.flags
        new = (_TCP_SECURE if sysctl.secure_tcp == 3 else _TCP_NORMAL)[2 if flags & F_NOOUTPUT else 0][
            (pkt.tcp_flags & _TCP_EVENT_BITS) << 4 | conn.state
        ]
        if new != conn.state:
            # set_active without its load_changed (the one below covers it); a new entry is
            # inactive, so only ever turns active here
            if _TCP_ACTIVE[new] and flags & F_INACTIVE:
                conn.flags = flags & ~F_INACTIVE
                dest.activeconns += 1
            if new == _TCP_ESTABLISHED:
                assure_template(conn)
            conn.state = new
        tt = d._state_timeouts.get(_TCP_PROTO) if d._state_timeouts_of is d.timeouts else None
        conn.timeout = (tt if tt is not None else d.state_timeouts(proto))[new]
        load_changed(dest)
    else:
        if fresh:
            load_changed(dest)
        transition(d, proto, conn, pkt, _INPUT)
    if conn.flags & F_ONE_PACKET:
        table.free(conn)  # one-packet scheduling: gone as soon as the datagram is forwarded
    else:
        table.arm(conn, now)
    return conn


def process_in_v4(
    d: Director,
    proto: int,
    saddr: int,
    sport: int,
    daddr: int,
    dport: int,
    fwmark: int,
    length: int,
    tcp_flags: int,
    now: float,
) -> Connection | Verdict:
    """process_in for an IPv4 packet given as numbers (addresses as ints), for engines that parse
    frames: the entry to forward the packet on, or the Verdict (PASS, DROP, NO_DEST) for anything
    else. Same decisions, counters and timers as process_in(Packet(...)); a known TCP entry's
    segment without SYN costs no Packet, address objects or Verdict. `sctp_chunk` is not taken:
    SCTP packets go through process_in."""
    if proto == 6:
        _advance(d, now)
        key = ((((((6 << 32) | saddr) << 16 | sport) << 32 | daddr) << 16) | dport) << 1  # make_key
        conn = d.conns.conns.get(key)
        if conn is not None and not tcp_flags & TCP_SYN and conn.dest.available:
            _known_tcp_in(d, conn, tcp_flags, length, now)
            return conn
        pkt = _packet_v4(_TCP_PROTO, saddr, sport, daddr, dport, fwmark, length, tcp_flags)
        return _in_general(d, _TCP, pkt, key, conn, now)
    try:
        protocol = Proto(proto)
    except ValueError:  # not a protocol IPVS balances
        _advance(d, now)
        return PASS
    pkt = _packet_v4(protocol, saddr, sport, daddr, dport, fwmark, length, tcp_flags)
    v = process_in(d, pkt, now)
    return v if v.conn is None else v.conn


def process_in_tcp(
    d: Director, conn: Connection, length: int, tcp_flags: int, now: float
) -> Connection | Verdict:
    """process_in for a client->server TCP segment of an entry the engine already holds (from an
    earlier verdict or lookup): the same counters, INPUT step and timer, without building its key
    from the addresses. Anything but the common case (a SYN, an entry no longer the one its key
    finds, a server gone) goes through process_in itself. Returns as process_in_v4 does."""
    _advance(d, now)  # first: the timers it runs may end this very entry
    if (
        tcp_flags & TCP_SYN
        or conn.flags & F_DEAD
        or not conn.dest.available
        or d.conns.conns.get(conn.key) is not conn
    ):
        pkt = Packet(
            _TCP_PROTO, conn.caddr, conn.cport, conn.vaddr, conn.vport, conn.fwmark, length, tcp_flags
        )
        v = process_in(d, pkt, now)
        return v if v.conn is None else v.conn
    _known_tcp_in(d, conn, tcp_flags, length, now)
    return conn


def reuse_entry(d: Director, proto: Protocol, conn: Connection) -> Connection | None:
    """A packet that starts a connection found an entry: the entry, or None when the new
    connection is to be scheduled afresh (expire_nodest_conn, conn_reuse_mode); the old entry is
    then freed (or, while it controls others, pushed aside). Engines that make connections
    outside process_in ask it too (engines/packet/coreapi.keeps_entry)."""
    sysctl = d.sysctl
    if sysctl.expire_nodest_conn and conn.dest.weight == 0:
        resched = True
    else:
        resched = bool(sysctl.conn_reuse_mode) and (
            conn.control is None
            and proto.reusable(conn.state, bool(conn.flags & F_NOOUTPUT), sysctl.conn_reuse_mode)
        )
    if not resched:
        return conn
    # an entry that still controls others is left to its timer; the new one takes its key
    if conn.n_control:
        d.conns.detach(conn)
    else:
        d.conns.free(conn)
    return None


def _expire_now(d: Director, conn: Connection, now: float) -> None:
    """ip_vs_conn_expire_now, and a new entry will take its key."""
    if not d.conns.expire(conn, now):
        d.conns.detach(conn)


def process_out(d: Director, conn: Connection, pkt: Packet, now: float) -> None:
    """A real server's reply crossing the director (NAT, FULLNAT): counters, OUTPUT state, timer."""
    if pkt.protocol == 6:
        process_out_tcp(d, conn, pkt.length, pkt.tcp_flags, now)
        return
    _advance(d, now)
    if conn.flags & F_DEAD:
        return
    proto = PROTOCOLS.get(pkt.protocol)
    if proto is None:
        return
    _out_stats(d, conn, pkt.length)
    transition(d, proto, conn, pkt, _OUTPUT)
    d.conns.arm(conn, now)


def process_out_tcp(d: Director, conn: Connection, length: int, tcp_flags: int, now: float) -> None:
    """process_out for a TCP reply given as its IP length and TCP flags (no Packet needed)."""
    env = d.env  # _advance(d, now), inlined
    t = env.now
    if now > t:
        env.now = t = now
    if t >= d._deadline or d._nodest_sweep or t >= d.conns.wake:
        d.advance(t)
    flags = conn.flags
    if flags & F_DEAD:
        return
    dest = conn.dest
    if dest.available:  # _out_stats, inlined
        st = dest.stats
        st.outpkts += 1
        st.outbytes += length
        st = dest.service.stats
        st.outpkts += 1
        st.outbytes += length
        st = d.services.tot_stats
        st.outpkts += 1
        st.outbytes += length
    # transition(d, TCP, conn, pkt, _OUTPUT) (see _known_tcp_in)
    if flags & F_NOOUTPUT:
        conn.flags = flags = flags & ~F_NOOUTPUT
    state = conn.state
    new = (_TCP_SECURE if d.sysctl.secure_tcp == 3 else _TCP_NORMAL)[1][
        (tcp_flags & _TCP_EVENT_BITS) << 4 | state
    ]
    if new != state:
        active = _TCP_ACTIVE[new]
        if active != (not flags & F_INACTIVE):
            set_active(conn, active)
        if new == _TCP_ESTABLISHED:
            assure_template(conn)
        conn.state = new
    tt = d._state_timeouts.get(_TCP_PROTO) if d._state_timeouts_of is d.timeouts else None
    conn.timeout = (tt if tt is not None else d.state_timeouts(_TCP))[new]
    d.conns.arm(conn, now)
