"""The packet path: lookup order, scheduling trigger, reuse, deleted servers, persistence, counters."""

from __future__ import annotations

import ipaddress

from pylvs.core.conn import F_NOOUTPUT
from pylvs.core.director import Director
from pylvs.core.packet import Action
from pylvs.core.types import (
    AF_INET6,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    DestConfig,
    Fwd,
    Packet,
    Proto,
    ServiceConfig,
    ServiceKey,
    SvcFlags,
)

ip = ipaddress.ip_address
VIP = "10.0.0.100"


def svc(d: Director, port: int = 80, proto: Proto = Proto.TCP, vip: str = VIP, **cfg: object) -> ServiceKey:
    key = ServiceKey.for_addr(proto, ip(vip), port)
    d.add_service(key, ServiceConfig(**cfg))  # type: ignore[arg-type]
    return key


def fwm(d: Director, mark: int, **cfg: object) -> ServiceKey:
    key = ServiceKey.for_fwmark(mark)
    d.add_service(key, ServiceConfig(**cfg))  # type: ignore[arg-type]
    return key


def rs(
    d: Director,
    key: ServiceKey,
    addr: str,
    port: int | None = None,
    fwd: Fwd = Fwd.MASQ,
    w: int = 1,
    **kw: int,
):  # type: ignore[no-untyped-def]
    return d.add_dest(key, DestConfig(ip(addr), key.port if port is None else port, fwd, w, **kw))


def pkt(
    flags: int = TCP_SYN,
    client: str = "172.16.0.1",
    cport: int = 40000,
    vip: str = VIP,
    vport: int = 80,
    proto: Proto = Proto.TCP,
    mark: int = 0,
    length: int = 60,
) -> Packet:
    return Packet(proto, ip(client), cport, ip(vip), vport, mark, length, flags)


def open_nat(d: Director, now: float = 0.0, **kw: object):  # type: ignore[no-untyped-def]
    """SYN in, SYN+ACK out, ACK in: an ESTABLISHED NAT connection."""
    v = d.process_in(pkt(TCP_SYN, **kw), now)  # type: ignore[arg-type]
    c = v.conn
    if c is None:
        return v
    reply = Packet(c.protocol, c.daddr, c.dport, c.caddr, c.cport, 0, 60, TCP_SYN | TCP_ACK)
    d.process_out(c, reply, now)
    d.process_in(pkt(TCP_ACK, **kw), now)  # type: ignore[arg-type]
    return v


# -- service lookup order ---------------------------------------------------------------------------
def test_lookup_order_fwmark_exact_ftp_port0() -> None:
    d = Director()
    k80 = svc(d, 80, scheduler="rr")
    rs(d, k80, "192.168.1.1")
    kf = fwm(d, 5, scheduler="rr")
    rs(d, kf, "192.168.1.2", 0)
    k21 = svc(d, 21, scheduler="rr", flags=SvcFlags.PERSISTENT, timeout=60)
    rs(d, k21, "192.168.1.3")
    k0 = svc(d, 0, scheduler="rr", flags=SvcFlags.PERSISTENT, timeout=60)
    rs(d, k0, "192.168.1.4", 0)

    def where(**kw: object) -> str:
        v = d.process_in(pkt(**kw), 0.0)  # type: ignore[arg-type]
        return str(v.conn.daddr) if v.conn else v.action.name

    assert where(cport=1, mark=5) == "192.168.1.2"  # the mark wins over the exact service
    assert where(cport=2) == "192.168.1.1"
    assert where(cport=3, vport=2000) == "192.168.1.3"  # FTP data port -> the port-21 service
    assert where(cport=4, vport=20) == "192.168.1.3"
    # privileged, not FTP -> port 0 (another client: FTP and port-0 templates share one key)
    assert where(cport=5, vport=443, client="172.16.0.2") == "192.168.1.4"
    assert where(cport=9, vport=443) == "192.168.1.3"  # the same key finds the FTP template
    assert where(cport=6, vport=53, proto=Proto.UDP) == "PASS"  # no UDP service at all
    assert where(cport=7, vip="10.0.0.101") == "PASS"
    assert where(cport=8, mark=6) == "192.168.1.1"  # unknown mark: address lookup


def test_ftp_rule_on_non_persistent_service_passes() -> None:
    d = Director()
    k = svc(d, 21, scheduler="rr")
    rs(d, k, "192.168.1.3")
    assert d.process_in(pkt(vport=3000), 0).action == Action.PASS
    assert d.process_in(pkt(vport=21), 0).action == Action.FORWARD


def test_port_zero_non_persistent_logs_and_refuses() -> None:
    d = Director()
    k = svc(d, 0, scheduler="rr")
    rs(d, k, "192.168.1.3", 0)
    assert d.process_in(pkt(vport=80), 0).action == Action.NO_DEST
    assert "port zero only supported in persistent services" in d.events[-1][1]


# -- the scheduling trigger ---------------------------------------------------------------------------
def test_only_syn_schedules_tcp_unless_sloppy() -> None:
    d = Director()
    k = svc(d, scheduler="rr")
    rs(d, k, "192.168.1.1")
    assert d.process_in(pkt(TCP_ACK), 0).action == Action.PASS
    assert d.process_in(pkt(TCP_SYN | TCP_RST), 0).action == Action.PASS
    d.sysctl.sloppy_tcp = 1
    assert d.process_in(pkt(TCP_ACK, cport=2), 0).action == Action.FORWARD
    assert d.process_in(pkt(TCP_SYN, cport=20), 0).action == Action.PASS  # active FTP data


def test_no_destination_message_forms_and_rate_limit() -> None:
    d = Director()
    k = svc(d, scheduler="wlc")
    for i in range(12):
        assert d.process_in(pkt(cport=1000 + i), 1.0).action == Action.NO_DEST
    assert [t for _, t in d.events] == ["IPVS: wlc: TCP 10.0.0.100:80 - no destination available"] * 10
    d.process_in(pkt(cport=2000), 6.5)
    assert len(d.events) == 11
    fk = fwm(d, 66, scheduler="rr")
    d.process_in(pkt(cport=3000, mark=66), 7.0)
    assert d.events[-1][1] == "IPVS: rr: FWM 66 0x00000042 - no destination available"
    k6 = svc(d, 80, vip="2001:db8::1", scheduler="sh", netmask=128)
    d.process_in(pkt(client="2001:db8::9", vip="2001:db8::1"), 8.0)
    assert d.events[-1][1] == "IPVS: sh: TCP [2001:db8::1]:80 - no destination available"
    assert k6.af == AF_INET6 and fk.fwmark == 66 and k.port == 80
    lines: list[str] = []
    d.log = lines.append
    d.process_in(pkt(cport=4000), 9.0)
    assert lines == ["IPVS: wlc: TCP 10.0.0.100:80 - no destination available"]


def test_none_scheduler_refuses_silently() -> None:
    d = Director()
    k = svc(d, scheduler="none")
    rs(d, k, "192.168.1.1")
    assert d.process_in(pkt(), 0).action == Action.NO_DEST
    assert not d.events


# -- states, timers, accounting ----------------------------------------------------------------------
def test_nat_connection_life_and_counters() -> None:
    d = Director()
    k = svc(d, scheduler="rr")
    r = rs(d, k, "192.168.1.1", 8080)
    v = open_nat(d)
    c = v.conn
    assert c.state_name == "ESTABLISHED" and c.dport == 8080 and not c.flags & F_NOOUTPUT
    assert (r.activeconns, r.inactconns) == (1, 0)
    assert d.lookup_out(Proto.TCP, ip("192.168.1.1"), 8080, ip("172.16.0.1"), 40000) is c
    st = r.stats.shown()
    assert st == (1, 2, 1, 120, 60)  # conns, inpkts, outpkts, inbytes, outbytes
    assert d.services.get(k).stats.shown() == st and d.services.tot_stats.shown() == st
    d.process_in(pkt(TCP_FIN | TCP_ACK), 1)
    assert c.state_name == "CLOSE_WAIT" and (r.activeconns, r.inactconns) == (0, 1)
    d.process_out(c, Packet(Proto.TCP, r.addr, 8080, ip("172.16.0.1"), 40000, 0, 52, TCP_FIN), 1)
    assert c.state_name == "TIME_WAIT" and c.expires == 121
    d.tick(120.5)
    assert r.inactconns == 1
    d.tick(121)
    assert (r.activeconns, r.inactconns, len(d.conns)) == (0, 0, 0) and c.dead


def test_dr_connection_uses_input_only() -> None:
    d = Director()
    k = svc(d, scheduler="rr")
    r = rs(d, k, "192.168.1.1", fwd=Fwd.DROUTE)
    c = d.process_in(pkt(TCP_SYN), 0).conn
    assert c.flags & F_NOOUTPUT and c.state_name == "SYN_RECV" and r.activeconns == 1
    d.process_in(pkt(TCP_ACK), 0)
    d.process_in(pkt(TCP_FIN | TCP_ACK), 0)
    assert c.state_name == "FIN_WAIT" and c.timeout == 120 and r.inactconns == 1
    assert d.lookup_out(Proto.TCP, r.addr, 80, ip("172.16.0.1"), 40000) is None


def test_set_timeouts_apply_from_next_packet() -> None:
    d = Director()
    k = svc(d, scheduler="rr")
    rs(d, k, "192.168.1.1")
    c = open_nat(d).conn
    assert c.expires == 900
    d.set_timeouts(30, 0, 0)
    assert c.expires == 900  # running timers are not shortened
    d.process_in(pkt(TCP_ACK), 10)
    assert c.expires == 40
    d.tick(39.9)
    assert not c.dead
    d.tick(40)
    assert c.dead


def test_udp_entries_inactive_and_one_packet() -> None:
    d = Director()
    k = svc(d, 53, Proto.UDP, scheduler="rr")
    r = rs(d, k, "192.168.1.1")
    c = d.process_in(pkt(0, proto=Proto.UDP, vport=53), 0).conn
    assert c.state_name == "UDP" and (r.activeconns, r.inactconns) == (0, 1) and c.expires == 300
    ko = svc(d, 54, Proto.UDP, scheduler="rr", flags=SvcFlags.ONEPACKET)
    ro = rs(d, ko, "192.168.1.2")
    for _ in range(3):
        v = d.process_in(pkt(0, cport=5000, proto=Proto.UDP, vport=54), 1)
        assert v.action == Action.FORWARD and v.conn.dead
    assert (ro.inactconns, ro.stats.conns, ro.stats.inpkts) == (0, 3, 3)
    assert all(cv.vport != 54 for cv in d.connections_view(2))


def test_conn_reuse_mode() -> None:
    d = Director()
    k = svc(d, scheduler="rr")
    a, b = rs(d, k, "192.168.1.1"), rs(d, k, "192.168.1.2")
    c1 = open_nat(d).conn
    d.process_in(pkt(TCP_RST), 1)
    assert c1.state_name == "CLOSE"
    c2 = d.process_in(pkt(TCP_SYN), 2).conn
    assert c2 is not c1 and c1.dead and c2.dest is not c1.dest  # rescheduled
    d.sysctl.conn_reuse_mode = 0
    d.process_in(pkt(TCP_RST), 3)
    c3 = d.process_in(pkt(TCP_SYN), 4).conn
    assert c3 is c2 and c3.state_name == "SYN_RECV"  # the old entry carries the new SYN
    # mode 2: FIN_WAIT on an entry that never saw a reply (DR) is reusable too
    kd = svc(d, 81, scheduler="rr")
    rs(d, kd, "192.168.1.3", fwd=Fwd.DROUTE)
    c4 = d.process_in(pkt(TCP_SYN, vport=81), 5).conn
    d.process_in(pkt(TCP_ACK, vport=81), 5)
    d.process_in(pkt(TCP_FIN | TCP_ACK, vport=81), 5)
    assert c4.state_name == "FIN_WAIT"
    d.sysctl.conn_reuse_mode = 1
    assert d.process_in(pkt(TCP_SYN, vport=81), 6).conn is c4
    d.process_in(pkt(TCP_ACK, vport=81), 6)
    d.process_in(pkt(TCP_FIN | TCP_ACK, vport=81), 6)
    d.sysctl.conn_reuse_mode = 2
    assert d.process_in(pkt(TCP_SYN, vport=81), 7).conn is not c4
    assert (a.total + b.total) == 1


def test_deleted_server_drops_or_expires() -> None:
    d = Director()
    k = svc(d, scheduler="rr")
    rs(d, k, "192.168.1.1")
    rs(d, k, "192.168.1.2")
    c = open_nat(d).conn
    d.del_dest(k, c.dest.addr, 80)
    assert d.process_in(pkt(TCP_ACK), 1).action == Action.DROP
    d.sysctl.expire_nodest_conn = 1
    assert d.process_in(pkt(TCP_ACK), 2).action == Action.PASS and c.dead
    c2 = open_nat(d, 3, cport=40001).conn
    assert not c2.dead


def test_expire_nodest_conn_sweep_and_weight_zero_resched() -> None:
    d = Director()
    d.sysctl.expire_nodest_conn = 1
    k = svc(d, scheduler="rr", flags=SvcFlags.PERSISTENT, timeout=300)
    a = rs(d, k, "192.168.1.1")
    c = open_nat(d).conn
    assert len(d.conns) == 2  # the connection and its template
    d.del_dest(k, a.addr, 80)
    d.tick(1)
    assert c.dead and len(d.conns) == 0 and (a.total, a.persistconns) == (0, 0)
    k2 = svc(d, 81, scheduler="rr")
    b, c2 = rs(d, k2, "192.168.1.2"), rs(d, k2, "192.168.1.3")
    x = open_nat(d, 2, vport=81).conn
    d.edit_dest(k2, DestConfig(x.dest.addr, 81, Fwd.MASQ, 0))
    y = d.process_in(pkt(TCP_SYN, vport=81), 3).conn
    assert x.dead and y.dest is not x.dest and b.total + c2.total == 1


def test_active_inactive_and_thresholds_binding() -> None:
    d = Director()
    k = svc(d, scheduler="rr")
    r = rs(d, k, "192.168.1.1", u_threshold=2)
    open_nat(d, cport=1)
    assert not r.overload
    open_nat(d, cport=2)
    assert r.overload and (r.activeconns, r.total) == (2, 2)
    assert d.process_in(pkt(cport=3), 0).action == Action.NO_DEST
    d.process_in(pkt(TCP_RST, cport=1), 0)
    assert (r.activeconns, r.inactconns) == (1, 1) and r.overload  # still counted until it expires
    d.tick(10)
    assert r.total == 1 and not r.overload


# -- persistence --------------------------------------------------------------------------------------
def test_persistence_templates_and_netmask() -> None:
    d = Director()
    k = svc(d, scheduler="rr", flags=SvcFlags.PERSISTENT, timeout=100, netmask=0xFFFFFF00)
    a, b = rs(d, k, "192.168.1.1", 8080), rs(d, k, "192.168.1.2", 8080)
    first = open_nat(d, client="172.16.0.1").conn
    same = open_nat(d, client="172.16.0.200", cport=2).conn
    other = open_nat(d, client="172.16.1.1", cport=3).conn
    assert same.dest is first.dest and other.dest is not first.dest and first.dport == 8080
    assert first.control is same.control and first.control.n_control == 2
    assert (first.dest.persistconns, a.persistconns + b.persistconns) == (1, 2)
    views = {(v.caddr, v.cport, v.vport, v.dport, v.state) for v in d.connections_view(0) if v.template}
    assert ("172.16.0.0", 0, 80, 8080, "ASSURED") in views  # ESTABLISHED assured it
    assert ("172.16.1.0", 0, 80, 8080, "ASSURED") in views


def test_fwmark_template_and_port_rules() -> None:
    d = Director()
    k = fwm(d, 66, scheduler="rr", flags=SvcFlags.PERSISTENT, timeout=360)
    rs(d, k, "192.168.1.10", 0)
    c1 = open_nat(d, mark=66, vport=80).conn
    c2 = open_nat(d, mark=66, vport=443, cport=2, vip="10.9.9.9").conn
    assert (c1.dport, c2.dport) == (80, 443) and c1.control is c2.control
    tv = [v for v in d.connections_view(0) if v.template]
    assert [(v.protocol, v.vaddr, v.vport, v.daddr, v.dport, v.state) for v in tv] == [
        (0, "0.0.0.66", 0, "192.168.1.10", 0, "ASSURED")
    ]


def test_template_lifetime_quirk_60s() -> None:
    d = Director()
    k = svc(d, scheduler="rr", flags=SvcFlags.PERSISTENT, timeout=5)
    rs(d, k, "192.168.1.1")
    c = open_nat(d).conn
    tpl = c.control
    assert tpl.expires == 5
    d.tick(5)
    assert not tpl.dead and tpl.timeout == 60 and tpl.expires == 65  # still controls c
    d.process_in(pkt(TCP_RST), 6)
    d.tick(16)
    assert c.dead and not tpl.dead and tpl.n_control == 0
    open_nat(d, 20, cport=2)
    assert tpl.expires == 80  # re-armed on use, with 60 s from now on
    d.process_in(pkt(TCP_RST, cport=2), 21)
    d.tick(80)
    assert tpl.dead and len(d.conns) == 0


def test_quiescent_and_deleted_template_rules() -> None:
    d = Director()
    k = svc(d, scheduler="rr", flags=SvcFlags.PERSISTENT, timeout=300)
    a, b = rs(d, k, "192.168.1.1"), rs(d, k, "192.168.1.2")
    first = open_nat(d).conn.dest
    d.edit_dest(k, DestConfig(first.addr, 80, Fwd.MASQ, 0))
    assert open_nat(d, cport=2).conn.dest is first  # weight 0: the template still counts
    d.sysctl.expire_quiescent_template = 1
    moved = open_nat(d, cport=3).conn
    assert moved.dest is not first
    views = [v for v in d.connections_view(0) if v.template]
    assert any(v.vport == 0xFFFF and v.dport == 0xFFFF and v.cport == 0 for v in views)
    assert a.persistconns + b.persistconns == 2  # the invalid template lives until its timer


def test_persistent_one_packet_udp_keeps_template() -> None:
    d = Director()
    k = svc(d, 53, Proto.UDP, scheduler="rr", flags=SvcFlags.PERSISTENT | SvcFlags.ONEPACKET, timeout=50)
    rs(d, k, "192.168.1.1")
    rs(d, k, "192.168.1.2")
    dests = {d.process_in(pkt(0, proto=Proto.UDP, vport=53, cport=i), 0).conn.dest for i in range(4)}
    assert len(dests) == 1
    views = d.connections_view(0)
    assert len(views) == 1 and views[0].template and views[0].expires == 50


def test_udp_reply_assures_template() -> None:
    d = Director()
    k = svc(d, 53, Proto.UDP, scheduler="rr", flags=SvcFlags.PERSISTENT, timeout=50)
    rs(d, k, "192.168.1.1")
    c = d.process_in(pkt(0, proto=Proto.UDP, vport=53), 0).conn
    assert c.control.state_name == "NONE"
    d.process_out(c, Packet(Proto.UDP, c.daddr, 53, c.caddr, c.cport, 0, 40), 0)
    assert c.control.state_name == "ASSURED"


# -- estimator ----------------------------------------------------------------------------------------
def test_estimator_cps_sequence() -> None:
    d = Director()
    k = svc(d, scheduler="rr")
    r = rs(d, k, "192.168.1.1")
    shown = []
    n = 0
    for tick in range(1, 10):
        for i in range(20):  # 10 connections per second
            d.process_in(pkt(cport=10000 + n), (tick - 1) * 2 + i * 0.1)
            n += 1
        d.tick(tick * 2.0)
        shown.append(r.stats.rates()[0])
    assert shown == [2, 4, 6, 7, 8, 8, 9, 9, 9]
    assert d.services.tot_stats.rates()[0] == 9
    d.tick(10_000.0)  # a long quiet gap: the averages decay to 0 (catch-up)
    assert r.stats.rates() == (0, 0, 0, 0, 0)


def test_next_deadline_and_periodic_jobs() -> None:
    d = Director()
    assert d.next_deadline() == 2.0
    k = svc(d, scheduler="rr")
    rs(d, k, "192.168.1.1")
    c = d.process_in(pkt(), 0.5).conn
    assert c.expires == 60.5
    d.tick(59)
    assert d.next_deadline() == 60.0
    d.del_dest(k, ip("192.168.1.1"), 80)
    d.process_in(pkt(TCP_RST), 59.5)
    d.tick(200)
    assert c.dead and not d.services.trash  # freed, then purged from the trash


def test_dr_reply_crossing_the_director_is_found_by_the_vip() -> None:
    d = Director()
    k = svc(d, scheduler="rr")
    r = rs(d, k, "192.168.1.1", fwd=Fwd.DROUTE)
    c = d.process_in(pkt(TCP_SYN), 0).conn
    assert d.lookup_out(Proto.TCP, r.addr, 80, ip("172.16.0.1"), 40000) is None  # not from the RIP
    found = d.lookup_out(Proto.TCP, ip(VIP), 80, ip("172.16.0.1"), 40000)
    assert found is c
    d.process_out(c, Packet(Proto.TCP, ip(VIP), 80, ip("172.16.0.1"), 40000, 0, 60, TCP_SYN | TCP_ACK), 0)
    assert not c.flags & F_NOOUTPUT and r.stats.outpkts == 1  # counted, and the OUTPUT table from now on
    d.process_in(pkt(TCP_ACK), 0)
    d.process_in(pkt(TCP_FIN | TCP_ACK), 0)
    assert c.state_name == "CLOSE_WAIT"


def test_cache_bypass_lets_fwmark_packets_pass() -> None:
    d = Director()
    fwm(d, 7, scheduler="rr")
    assert d.process_in(pkt(mark=7), 0).action == Action.NO_DEST
    d.sysctl.cache_bypass = 1
    assert d.process_in(pkt(mark=7, cport=2), 0).action == Action.PASS


def test_ipv6_persistence_prefix() -> None:
    d = Director()
    k = svc(d, vip="2001:db8::1", scheduler="rr", flags=SvcFlags.PERSISTENT, timeout=60, netmask=64)
    rs(d, k, "2001:db8:1::1")
    rs(d, k, "2001:db8:1::2")
    a = open_nat(d, client="2001:db8:5::1", vip="2001:db8::1").conn
    b = open_nat(d, client="2001:db8:5::ffff", vip="2001:db8::1", cport=2).conn
    c = open_nat(d, client="2001:db8:6::1", vip="2001:db8::1", cport=3).conn
    assert a.dest is b.dest and c.dest is not a.dest and a.af == AF_INET6
    nets = sorted(v.caddr for v in d.connections_view(0) if v.template)
    assert nets == ["2001:db8:5::", "2001:db8:6::"]
