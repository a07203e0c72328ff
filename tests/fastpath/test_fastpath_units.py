"""The fast path's pieces without root: netlink encoders/parsers, the DR socket filter (run on a
small classic-BPF interpreter), and the glue that keeps the core in step with conntrack."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest

from pylvs import cbpf
from pylvs.core.director import Director
from pylvs.core.proto import tcp as coretcp
from pylvs.core.types import TCP_SYN, DestConfig, Fwd, Packet, Proto, ServiceConfig, ServiceKey
from pylvs.engines.packet import coreapi
from pylvs.engines.packet.fastpath import coreglue as glue
from pylvs.engines.packet.fastpath import drsock, tables
from pylvs.engines.packet.fastpath.engine import classify
from pylvs.netlink import conntrack as ct
from pylvs.netlink import ctmsg
from pylvs.netlink.nfqueue import (
    NFQA_HWADDR,
    NFQA_MARK,
    NFQA_PACKET_HDR,
    NFQA_PAYLOAD,
    NfQueue,
    parse_packet,
)
from pylvs.netlink.nftset import concat
from pylvs.netlink.nlmsg import attr, nested

VIP, CIP, RIP1, RIP2 = "172.25.254.100", "172.25.254.10", "192.168.1.10", "192.168.1.20"
A = socket.inet_aton


# -- nfnetlink_queue --------------------------------------------------------------------------
def test_queued_packet_is_parsed() -> None:
    body = (
        attr(NFQA_PACKET_HDR, struct.pack("!IHB", 77, 0x0800, 3))
        + attr(NFQA_MARK, struct.pack("!I", 66))
        + attr(NFQA_PAYLOAD, b"\x45" + bytes(39))
    )
    q = parse_packet(body, 0, len(body))
    assert q is not None and (q.packet_id, q.mark, len(q.payload)) == (77, 66, 40)


def test_queued_packet_carries_the_senders_mac() -> None:
    # the packet engine answers fwmark traffic itself and needs the client's MAC from the queue
    mac = bytes.fromhex("02aabbccddee")
    body = (
        attr(NFQA_PACKET_HDR, struct.pack("!IHB", 5, 0x0800, 3))
        + attr(NFQA_HWADDR, struct.pack("!HH", len(mac), 0) + mac + bytes(2))
        + attr(NFQA_PAYLOAD, b"\x45" + bytes(19))
    )
    q = parse_packet(body, 0, len(body))
    assert q is not None and (q.packet_id, q.hwaddr, len(q.payload)) == (5, mac, 20)


def test_queued_packets_are_read_id_mark_payload() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    q = NfQueue.__new__(NfQueue)  # no netlink socket: one end of a datagram pair stands in
    q.sock, q.buf = b, bytearray(1 << 16)
    b.setblocking(False)
    try:
        for pid, mark in ((7, 0), (8, 66)):
            body = (
                struct.pack("!BBH", 0, 0, 7000)
                + attr(NFQA_PACKET_HDR, struct.pack("!IHB", pid, 0x0800, 3))
                + (attr(NFQA_MARK, struct.pack("!I", mark)) if mark else b"")
                + attr(NFQA_PAYLOAD, b"\x45" + bytes(39))
            )
            a.send(struct.pack("=IHHII", 16 + len(body), (3 << 8) | 0, 0, 0, 0) + body)
        got = q.receive_ids()
    finally:
        a.close()
        b.close()
    assert [(pid, mark, len(p)) for pid, mark, p in got] == [(7, 0, 40), (8, 66, 40)]


def test_verdict_message_layout() -> None:
    q = NfQueue.__new__(NfQueue)  # no socket: only the encoder
    q.seq = 0
    q._nfg = struct.pack("!BBH", 0, 0, 7000)
    m = q.verdict_msg(5, 1, 0x80010042)
    ln, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", m)
    assert ln == len(m) == 40 and kind == (3 << 8) | 1 and seq == 1
    assert struct.unpack_from("!II", m, 24) == (1, 5)
    assert struct.unpack_from("!I", m, 36)[0] == 0x80010042
    assert len(q.verdict_msg(6, 0)) == struct.unpack_from("=I", q.verdict_msg(7, 0))[0] == 32


# -- nftables set elements ----------------------------------------------------------------------
def test_concatenated_key_pads_each_field_to_four_bytes() -> None:
    k = concat(A(VIP), struct.pack("!H", 80), A(CIP), struct.pack("!H", 40000))
    assert len(k) == 16 and k[4:8] == b"\x00\x50\x00\x00" and k[12:14] == struct.pack("!H", 40000)


# -- ctnetlink --------------------------------------------------------------------------------
def _tuple(src: str, sport: int, dst: str, dport: int) -> bytes:
    ip = nested(ct.CTA_TUPLE_IP, attr(ct.CTA_IP_V4_SRC, A(src)), attr(ct.CTA_IP_V4_DST, A(dst)))
    pr = nested(
        ct.CTA_TUPLE_PROTO,
        attr(ct.CTA_PROTO_NUM, b"\x06"),
        attr(ct.CTA_PROTO_SRC_PORT, struct.pack("!H", sport)),
        attr(ct.CTA_PROTO_DST_PORT, struct.pack("!H", dport)),
    )
    return ip + pr


def ct_body(state: int, mark: int = 0x80010000, pkts: int = 10, nbytes: int = 5000) -> bytes:
    return (
        nested(ct.CTA_TUPLE_ORIG, _tuple(CIP, 40000, VIP, 80))
        + nested(ct.CTA_TUPLE_REPLY, _tuple(RIP1, 80, CIP, 40000))
        + attr(ct.CTA_MARK, struct.pack("!I", mark))
        + attr(ct.CTA_ID, struct.pack("!I", 1234))
        + nested(
            ct.CTA_PROTOINFO, nested(ct.CTA_PROTOINFO_TCP, attr(ct.CTA_PROTOINFO_TCP_STATE, bytes([state])))
        )
        + nested(
            ct.CTA_COUNTERS_ORIG,
            attr(ct.CTA_COUNTERS_PACKETS, struct.pack("!Q", pkts)),
            attr(ct.CTA_COUNTERS_BYTES, struct.pack("!Q", nbytes)),
        )
        + nested(
            ct.CTA_COUNTERS_REPLY,
            attr(ct.CTA_COUNTERS_PACKETS, struct.pack("!Q", pkts * 2)),
            attr(ct.CTA_COUNTERS_BYTES, struct.pack("!Q", nbytes * 20)),
        )
    )


def test_get_request_cut_from_the_template_equals_the_plain_encoding() -> None:
    from pylvs.netlink.nlmsg import nfmsg

    for t in ((6, A(CIP), 40000, A(VIP), 80), (17, A(RIP1), 1, A(RIP2), 65535)):
        plain = nfmsg(
            (ct.NFNL_SUBSYS_CTNETLINK << 8) | ct.IPCTNL_MSG_CT_GET,
            1,
            9,
            socket.AF_INET,
            0,
            ct.encode_tuple(ct.CTA_TUPLE_ORIG, t),
        )
        assert ct._get_request(9, t) == plain


def test_conntrack_message_is_parsed() -> None:
    b = ct_body(ct.CT_ESTABLISHED)
    e = ct.parse(b, 0, len(b), ct.UPDATE)
    assert e.orig == (6, A(CIP), 40000, A(VIP), 80)
    assert e.reply == (6, A(RIP1), 80, A(CIP), 40000)
    assert (e.mark, e.ct_id, e.tcp_state) == (0x80010000, 1234, ct.CT_ESTABLISHED)
    assert (e.pkts_orig, e.bytes_orig, e.pkts_reply, e.bytes_reply) == (10, 5000, 20, 100000)
    assert ct.peek(b, 0, len(b)) == (0x80010000, 1234, ct.CT_ESTABLISHED)
    assert ct.mark_of(b, 0, len(b)) == 0x80010000


def ct_event(state: int, mark: int = 0x80010000, kind: int = ct.IPCTNL_MSG_CT_NEW) -> bytes:
    """An update event as the kernel writes it (attribute order and sizes of ctnetlink)."""
    orig, reply = (6, A(CIP), 40000, A(VIP), 80), (6, A(RIP1), 80, A(CIP), 40000)
    return ctmsg.event(state, orig, reply, 99, mark, msg_type=kind)


def test_event_filter_drops_unneeded_states_and_other_marks_in_the_kernel() -> None:
    prog = ct.event_filter(tables.OURS, glue.UNNEEDED_EVENTS)
    assert all(0 <= jt < 256 and 0 <= jf < 256 for _c, jt, jf, _k in prog)
    m = ct_event(ct.CT_ESTABLISHED)
    assert ct.peek(m, 20, len(m)) == (0x80010000, 99, ct.CT_ESTABLISHED)  # the layout the filter expects
    for state in (ct.CT_ESTABLISHED, ct.CT_FIN_WAIT, ct.CT_LAST_ACK, ct.CT_CLOSE):
        assert run_bpf(prog, ct_event(state)), state
    for state in (ct.CT_SYN_RECV, ct.CT_CLOSE_WAIT, ct.CT_TIME_WAIT):
        assert not run_bpf(prog, ct_event(state)), state
    assert not run_bpf(prog, ct_event(ct.CT_ESTABLISHED, mark=0x10))  # not ours
    assert run_bpf(prog, ct_event(ct.CT_ESTABLISHED, mark=0))  # no mark attribute: Python decides
    assert run_bpf(prog, ct_event(ct.CT_SYN_RECV, kind=ct.IPCTNL_MSG_CT_DELETE))  # ends always pass
    odd = bytearray(ct_event(ct.CT_SYN_RECV))
    odd[132 + 2] = 20  # another attribute where the status was: layout unknown, keep it
    assert run_bpf(prog, bytes(odd))
    assert run_bpf(prog, ct_event(ct.CT_SYN_RECV)[:100])  # short messages are kept, not cut


def test_events_in_the_usual_layout_are_read_in_place() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ev = ct.CtEvents.__new__(ct.CtEvents)  # a datagram pair stands in for the netlink socket
    ev.sock, ev.buf, ev.mask, ev.overruns = b, bytearray(1 << 16), tables.OURS, 0
    b.setblocking(False)
    try:
        usual = ct_event(ct.CT_FIN_WAIT)
        odd = ct_event(ct.CT_LAST_ACK) + bytes(8)  # one more attribute: the walk reads it
        odd = struct.pack("=I", len(odd)) + odd[4:]
        for m in (usual, odd, ct_event(ct.CT_TIME_WAIT, mark=0x10)):
            a.send(m)
        got = ev.read(known={99})
    finally:
        a.close()
        b.close()
    assert [(e.kind, e.ct_id, e.mark, e.tcp_state) for e in got] == [
        (ct.UPDATE, 99, 0x80010000, ct.CT_FIN_WAIT),
        (ct.UPDATE, 99, 0x80010000, ct.CT_LAST_ACK),
    ]


def test_first_event_tuples_in_place_and_known_destroy_without_tuples() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ev = ct.CtEvents.__new__(ct.CtEvents)
    ev.sock, ev.buf, ev.mask, ev.overruns = b, bytearray(1 << 16), tables.OURS, 0
    b.setblocking(False)
    usual = ct_event(ct.CT_ESTABLISHED)
    body = ct_body(ct.CT_TIME_WAIT)
    payload = struct.pack("!BBH", socket.AF_INET, 0, 0) + body
    destroy = struct.pack(
        "=IHHII", 16 + len(payload), (ct.NFNL_SUBSYS_CTNETLINK << 8) | ct.IPCTNL_MSG_CT_DELETE, 0, 0, 0
    )
    try:
        a.send(usual)
        first = ev.read(known=())
        a.send(destroy + payload)
        gone = ev.read(known={1234})
        a.send(destroy + payload)
        unknown = ev.read(known=())
    finally:
        a.close()
        b.close()
    full = ct.parse(usual, 20, len(usual), ct.UPDATE)
    assert len(first) == 1 and (first[0].orig, first[0].reply) == (full.orig, full.reply)
    assert first[0].orig == (6, A(CIP), 40000, A(VIP), 80)
    assert (first[0].ct_id, first[0].tcp_state, first[0].mark) == (99, ct.CT_ESTABLISHED, 0x80010000)
    (e,) = gone
    assert (e.kind, e.ct_id, e.tcp_state, e.orig) == (ct.DESTROY, 1234, ct.CT_TIME_WAIT, (0, b"", 0, b"", 0))
    assert (e.pkts_orig, e.bytes_orig, e.pkts_reply, e.bytes_reply) == (10, 5000, 20, 100000)
    assert unknown[0].orig == (6, A(CIP), 40000, A(VIP), 80)


def kernel_destroy_event(cid: int = 77) -> bytes:
    """A DESTROY event in the layout this kernel writes (6.18, accounting on, no timestamps)."""
    orig, reply = (6, A(CIP), 40000, A(VIP), 80), (6, A(RIP1), 80, A(CIP), 40000)
    return ctmsg.event(ct.CT_TIME_WAIT, orig, reply, cid, destroy=True, counters=(6, 420, 5, 3333))


def test_destroy_events_in_the_kernels_layout_are_read_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    msg = kernel_destroy_event()
    assert len(msg) == 220  # the layout captured from this kernel's events
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ev = ct.CtEvents.__new__(ct.CtEvents)
    ev.sock, ev.buf, ev.mask, ev.overruns = b, bytearray(1 << 16), tables.OURS, 0
    b.setblocking(False)
    full = ct.parse(msg, 20, len(msg), ct.DESTROY)

    def no_walk(*_a: object, **_k: object) -> ct.CtEntry:
        raise AssertionError("walked")

    try:
        monkeypatch.setattr(ct, "parse", no_walk)  # the known layout is read in place
        a.send(msg)
        known = ev.read(known={77})
        a.send(msg)
        unknown = ev.read(known=())
        monkeypatch.undo()
        odd = msg[:-8] + attr(ct.CTA_MARK, struct.pack("!I", 0x80010000)) + attr(99, b"")
        a.send(struct.pack("=I", len(odd)) + odd[4:])  # one more attribute: walked, same values
        walked = ev.read(known=())
    finally:
        a.close()
        b.close()
    assert (full.pkts_orig, full.bytes_orig, full.pkts_reply, full.bytes_reply) == (6, 420, 5, 3333)
    for got, tuples in ((known, False), (unknown, True), (walked, True)):
        (e,) = got
        assert (e.kind, e.ct_id, e.mark, e.tcp_state) == (ct.DESTROY, 77, 0x80010000, ct.CT_TIME_WAIT)
        assert (e.pkts_orig, e.bytes_orig, e.pkts_reply, e.bytes_reply) == (6, 420, 5, 3333)
        assert (e.orig, e.reply) == ((full.orig, full.reply) if tuples else ((0, b"", 0, b"", 0),) * 2)


# -- the DR socket's filter ----------------------------------------------------------------------
def run_bpf(prog: list[cbpf.Insn], pkt: bytes) -> int:
    a = x = pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code in (cbpf.LD_H_ABS, cbpf.LD_W_ABS, cbpf.LD_B_ABS) and k + (
            2 if code == cbpf.LD_H_ABS else 4 if code == cbpf.LD_W_ABS else 1
        ) > len(pkt):
            return 0  # the kernel ends the program (drops) on a load past the end
        if code == 0x80:  # ld len
            a = len(pkt)
        elif code == 0x35:  # jge #k
            pc += jt if a >= k else jf
        elif code == cbpf.LD_H_ABS:
            a = int.from_bytes(pkt[k : k + 2], "big")
        elif code == cbpf.LD_W_ABS:
            a = int.from_bytes(pkt[k : k + 4], "big")
        elif code == cbpf.LD_B_ABS:
            a = pkt[k]
        elif code == cbpf.LDX_B_MSH:
            x = 4 * (pkt[k] & 0xF)
        elif code == cbpf.LD_B_IND:
            a = pkt[x + k]
        elif code == cbpf.ALU_AND_K:
            a &= k
        elif code == cbpf.JEQ_K:
            pc += jt if a == k else jf
        elif code == cbpf.JSET_K:
            pc += jt if a & k else jf
        elif code == cbpf.RET_K:
            return k
        else:
            raise AssertionError(f"opcode {code:#x}")


def frame(dst: str, flags: int, frag: int = 0) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, frag, 64, 6, 0, A(CIP), A(dst))
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, flags, 65535, 0, 0)
    return bytes(12) + b"\x08\x00" + ip + tcp


def test_dr_filter_takes_only_syn_fin_rst_to_the_vips() -> None:
    prog = drsock.program([A("192.168.1.220"), A("192.168.1.221")])
    vip = "192.168.1.220"
    assert run_bpf(prog, frame(vip, 0x02))  # SYN
    assert run_bpf(prog, frame("192.168.1.221", 0x02))
    assert run_bpf(prog, frame(vip, 0x11))  # FIN+ACK
    assert run_bpf(prog, frame(vip, 0x04))  # RST
    assert not run_bpf(prog, frame(vip, 0x12))  # SYN+ACK
    assert not run_bpf(prog, frame(vip, 0x10))  # data / ACK: the kernel's
    assert not run_bpf(prog, frame("192.168.1.222", 0x02))  # another address
    assert not run_bpf(prog, frame(vip, 0x02, frag=5))  # a later fragment has no TCP header
    arp = bytes(12) + b"\x08\x06" + bytes(40)
    assert not run_bpf(prog, arp)
    assert not run_bpf(drsock.program([]), frame(vip, 0x02))


# -- the core in step with conntrack --------------------------------------------------------------
def nat_director(fwd: Fwd = Fwd.MASQ) -> tuple[Director, ServiceKey]:
    d = Director()
    key = ServiceKey.for_addr(Proto.TCP, ipaddress.IPv4Address(VIP), 80)
    d.add_service(key, ServiceConfig(scheduler="rr"))
    for rip in (RIP1, RIP2):
        d.add_dest(key, DestConfig(addr=ipaddress.IPv4Address(rip), port=80, fwd=fwd))
    return d, key


def test_conntrack_states_drive_the_core() -> None:
    d, _key = nat_director()
    now = 100.0
    syn = Packet(
        Proto.TCP,
        ipaddress.IPv4Address(CIP),
        40000,
        ipaddress.IPv4Address(VIP),
        80,
        tcp_flags=TCP_SYN,
        length=60,
    )
    v = d.process_in(syn, now)
    conn = v.conn
    assert conn is not None and conn.state == coretcp.SYN_RECV
    flow = glue.Flow(conn, 6, A(CIP), 40000, A(VIP), 80, in_pkts=1, in_bytes=60)
    glue.ct_state_changed(d, flow, ct.CT_SYN_RECV, now)
    glue.ct_state_changed(d, flow, ct.CT_ESTABLISHED, now)
    assert conn.state == coretcp.ESTABLISHED and conn.dest.activeconns == 1
    b = ct_body(ct.CT_ESTABLISHED)
    assert glue.add_counters(d, flow, ct.parse(b, 0, len(b), ct.UPDATE), now + 1)
    st = conn.dest.stats
    assert (st.inpkts, st.inbytes) == (10, 5000)  # the kernel's totals, each packet counted once
    assert st.outpkts == 20 and st.outbytes == 100000
    glue.ct_state_changed(d, flow, ct.CT_FIN_WAIT, now + 2)
    glue.ct_state_changed(d, flow, ct.CT_TIME_WAIT, now + 3)
    assert conn.dest.activeconns == 0 and conn.dest.inactconns == 1


def test_filtered_events_leave_the_core_where_all_events_would() -> None:
    full = [
        ct.CT_SYN_RECV,
        ct.CT_ESTABLISHED,
        ct.CT_FIN_WAIT,
        ct.CT_CLOSE_WAIT,
        ct.CT_LAST_ACK,
        ct.CT_TIME_WAIT,
    ]
    # every event; the filtered ones; and what a dump or the closing GET may see after lost events
    runs = [
        full,
        [s for s in full if s not in glue.UNNEEDED_EVENTS],
        [ct.CT_TIME_WAIT],
        [ct.CT_ESTABLISHED, ct.CT_TIME_WAIT],
        [ct.CT_FIN_WAIT, ct.CT_TIME_WAIT],
    ]
    seen = []
    for states in runs:
        d, _key = nat_director()
        syn = Packet(
            Proto.TCP, ipaddress.IPv4Address(CIP), 40000, ipaddress.IPv4Address(VIP), 80, tcp_flags=TCP_SYN
        )
        conn = d.process_in(syn, 1.0).conn
        assert conn is not None
        flow = glue.Flow(conn, 6, A(CIP), 40000, A(VIP), 80)
        steps = {}
        for st in states:
            glue.ct_state_changed(d, flow, st, 2.0)
            steps[st] = (conn.state, conn.timeout, conn.dest.activeconns, conn.dest.inactconns)
        seen.append(steps)
    kept = {st: v for st, v in seen[0].items() if st not in glue.UNNEEDED_EVENTS}
    assert {st: v for st, v in seen[1].items() if st in kept} == kept
    final = (coretcp.TIME_WAIT, 120, 0, 1)
    assert all(s[ct.CT_TIME_WAIT] == final for s in seen[2:])
    assert seen[0][ct.CT_TIME_WAIT] == final


def test_adopting_a_kernel_connection_without_scheduling() -> None:
    d, _key = nat_director()
    conn = coreapi.adopt(d, 6, A(CIP), 40000, A(VIP), 80, 0, A(RIP2), 80, coretcp.ESTABLISHED, 50.0)
    assert conn is not None and str(conn.daddr) == RIP2 and conn.state == coretcp.ESTABLISHED
    assert conn.dest.activeconns == 1
    views = d.connections_view(51.0)
    assert [(v.daddr, v.state) for v in views] == [(RIP2, "ESTABLISHED")]
    # The same connection again (a second dump): found, not doubled.
    assert coreapi.adopt(d, 6, A(CIP), 40000, A(VIP), 80, 0, A(RIP2), 80, coretcp.ESTABLISHED, 52.0) is conn
    # A server the rules no longer have: nothing to adopt.
    assert coreapi.adopt(d, 6, A(CIP), 40001, A(VIP), 80, 0, A("192.168.1.99"), 80, 1, 52.0) is None


def test_services_are_classified_by_what_the_kernel_can_forward() -> None:
    d, key = nat_director()
    svc = d.services.get(key)
    assert classify(svc) == "queue"
    d.add_dest(key, DestConfig(addr=ipaddress.IPv4Address("192.168.1.30"), port=80, fwd=Fwd.TUNNEL))
    assert classify(svc) == "packet"
    d2, k2 = nat_director(Fwd.DROUTE)
    assert classify(d2.services.get(k2)) == "dr"
    ku = ServiceKey.for_addr(Proto.UDP, ipaddress.IPv4Address(VIP), 53)
    d2.add_service(ku, ServiceConfig())
    d2.add_dest(ku, DestConfig(addr=ipaddress.IPv4Address(RIP1), port=53, fwd=Fwd.DROUTE))
    assert classify(d2.services.get(ku)) == "packet"  # UDP DR: no SYN to catch


def test_queue_rules_and_tables_text() -> None:
    rules = tables.queue_rules([(6, VIP, 80), (17, VIP, 0), (6, VIP, 80)], [66])
    assert [r.text(7000, True) for r in rules] == [
        "meta mark 0x00000042 ct state new queue num 7000 bypass",  # fwmarks first
        f"ip daddr {VIP} tcp dport 80 ct state new queue num 7000 bypass",
        f"ip daddr {VIP} meta l4proto udp ct state new queue num 7000 bypass",  # port 0: any port
    ]
    assert rules[1].text(7000, False).endswith("queue num 7000")
    text = tables.ip_table_text()
    # the queue chain: after iptables' mangle PREROUTING (the user's MARK rules), before dstnat
    assert f"chain {tables.QUEUE_CHAIN} {{\n    type filter hook prerouting priority -149;" in text
    assert "dnat ip addr . port to meta mark & 0xffff0000 map @dnat_ap" in text
    assert "ct timeout closed_tcp {" in text and "time_wait: 2, close: 2" in text
    assert 'ct state new ct mark & 0x80000000 != 0 ct timeout set "closed_tcp"' in text
    # event masks: bulk segments leave at the first rule; none built for SYN+ACK; ESTABLISHED from
    # the first packet after the handshake (sets ESTB); after the first FIN only RST and DESTROY
    fin = text[text.index("chain fin {\n    ct mark") :]
    assert fin.index("tcp flags & (fin | rst) == 0 accept") < fin.index('ct timeout set "closed_tcp"')
    assert 'ct timeout set "closed_tcp" ct event set destroy' in text
    assert "ct event set protoinfo,destroy ct mark set ct mark | 0x20000000" in text
    assert "== 0x80000000 | 0x40000000 ct event set destroy" in text
    assert tables.MAX_ID < tables.ESTB >> tables.RS_SHIFT
    plain = tables.ip_table_text(linger=False)  # a kernel without conntrack timeout policies
    assert "ct timeout" not in plain and "ct mark set ct mark | 0x40000000" in plain
    assert "ct event set" not in plain  # the masks need the short TIME_WAIT (LAST_ACK comes no more)
    dr = tables.dr_table_text(
        [tables.DrSpec("eth0", "02:00:00:00:00:01", [("192.168.1.220", 80)])], 900, True
    )
    assert "tcp flags & (syn | ack) != syn" in dr and 'fwd to "eth0"' in dr and "timeout 900s" in dr


def follow_closed(d: Director, eng: Any, ports: range | tuple[int, ...], now: float) -> list[glue.Flow]:
    """Flows the engine follows (conntrack id = client port) from the client's `ports`, each
    scheduled by the core, then ESTABLISHED and FIN_WAIT."""
    flows = []
    for port in ports:
        syn = Packet(
            Proto.TCP, ipaddress.IPv4Address(CIP), port, ipaddress.IPv4Address(VIP), 80, tcp_flags=TCP_SYN
        )
        f = glue.Flow(d.process_in(syn, now).conn, 6, A(CIP), port, A(VIP), 80, in_pkts=1, in_bytes=60)
        glue.ct_state_changed(d, f, ct.CT_ESTABLISHED, now)
        glue.ct_state_changed(d, f, ct.CT_FIN_WAIT, now)
        eng.flows[port] = f
        flows.append(f)
    return flows


def test_closed_flows_wait_for_their_destroy_event_then_a_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the short TIME_WAIT policy a closed flow is not looked up at once: its DESTROY event
    brings the last counters; one still here DESTROY_GRACE after it left the open ones is looked up
    (which makes the kernel reap it and send the event), and ends without it a grace later."""
    from pylvs.engines.packet.fastpath import engine as fpe

    d, _key = nat_director()
    now = [100.0]
    eng = fpe.FastPathEngine(d, clock=lambda: now[0])
    flows = follow_closed(d, eng, (40000, 40001), now[0])
    asked: list[list[tuple[int, bytes, int, bytes, int]]] = []
    eng.ct_buckets = 262144  # a dump walks them all: two lookups cost less
    monkeypatch.setattr(fpe, "_conntrack_sysctl", lambda _name: 25000)
    monkeypatch.setattr(fpe.ct, "dump", lambda *_a, **_k: [])  # both closed: out of the dump
    monkeypatch.setattr(fpe.ct, "get_many", lambda ts, **_k: asked.append(ts) or [None] * len(ts))
    eng._sync_counters()  # first missing: wait for the DESTROY events
    now[0] += fpe.SYNC_PERIOD
    eng._sync_counters()
    assert asked == [] and len(eng.flows) == 2
    now[0] += fpe.SYNC_PERIOD
    eng._sync_counters()  # still here: looked up, not found; they wait for the event a while
    assert len(asked) == 1 and len(asked[0]) == 2 and len(eng.flows) == 2
    # The DESTROY event of the first (the lookup made the kernel reap it): last counters and state.
    body = ct_body(ct.CT_TIME_WAIT, pkts=7, nbytes=700)
    e = ct.parse(body, 0, len(body), ct.DESTROY)
    e.ct_id = 40000  # the first flow's id
    ev = ct.CtEvents.__new__(ct.CtEvents)
    monkeypatch.setattr(ev, "read", lambda *_a, **_k: [e], raising=False)
    eng._apply_events(ev)
    assert 40000 not in eng.flows and flows[0].conn.state == coretcp.TIME_WAIT
    assert flows[0].conn.dest.stats.inpkts >= 7
    now[0] += fpe.SYNC_PERIOD * 2
    eng._sync_counters()  # the second's event never came: it ends without
    assert eng.flows == {} and len(asked) == 1
    assert all(f.conn.dest.activeconns == 0 for f in flows)


def test_periodic_sync_looks_up_the_open_flows_unless_a_dump_costs_less(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dump walks conntrack's whole hash table: while few connections are open the sync looks
    them up by their tuples instead (closed ones wait for their DESTROY event), and a connection
    the core scheduled whose first event has not come in a whole period is looked up too; with
    many open, and every FULL_DUMP_EVERY-th sync, it dumps."""
    from pylvs.engines.packet.fastpath import engine as fpe

    d, _key = nat_director()
    now = [100.0]
    eng = fpe.FastPathEngine(d, clock=lambda: now[0])
    eng.ct_buckets = 262144
    conns = {}
    for port in (40000, 40001, 40002):
        syn = Packet(
            Proto.TCP, ipaddress.IPv4Address(CIP), port, ipaddress.IPv4Address(VIP), 80, tcp_flags=TCP_SYN
        )
        conns[port] = d.process_in(syn, now[0]).conn
    for port in (40000, 40001):  # followed: one open, one closed
        f = glue.Flow(conns[port], 6, A(CIP), port, A(VIP), 80, in_pkts=1, in_bytes=60)
        glue.ct_state_changed(d, f, ct.CT_ESTABLISHED, now[0])
        if port == 40001:
            glue.ct_state_changed(d, f, ct.CT_FIN_WAIT, now[0])
        eng.flows[port] = f
    sched = (6, A(CIP), 40002, A(VIP), 80)  # scheduled, its first event not come yet
    eng.scheduled[sched] = (conns[40002], 60)

    def entry(port: int, state: int = ct.CT_ESTABLISHED, mark: int = 0x80010000) -> ct.CtEntry:
        body = ct_body(state, mark=mark, pkts=5, nbytes=900)
        e = ct.parse(body, 0, len(body), ct.NEW)
        e.ct_id, e.orig = port, (6, A(CIP), port, A(VIP), 80)
        e.reply = (6, A(RIP1), 80, A(CIP), port)
        return e

    asked: list[list[tuple[int, bytes, int, bytes, int]]] = []
    dumps: list[int] = []

    def get_many(ts: list[tuple[int, bytes, int, bytes, int]], **_k: object) -> list[ct.CtEntry | None]:
        asked.append(ts)
        return [entry(t[2]) for t in ts]

    monkeypatch.setattr(fpe.ct, "get_many", get_many)
    monkeypatch.setattr(fpe.ct, "dump", lambda *_a, **_k: dumps.append(1) or [entry(40000)])
    monkeypatch.setattr(fpe, "_conntrack_sysctl", lambda _name: 25000)
    eng._sync_counters()
    assert asked == [[(6, A(CIP), 40000, A(VIP), 80)]] and not dumps  # the open one only
    assert eng.flows[40000].in_pkts == 5 and conns[40000].dest.stats.inpkts >= 5
    now[0] += fpe.SYNC_PERIOD
    eng._sync_counters()  # the scheduled one waited a whole period: looked up, followed from now
    assert sched in asked[1] and sched not in eng.scheduled and 40002 in eng.flows
    # Too many open for lookups to pay: a dump.
    monkeypatch.setattr(fpe, "LOOKUP_US", 1e9)
    now[0] += fpe.SYNC_PERIOD
    eng._sync_counters()
    # (the closed one, its DESTROY late, is not looked up right after a walk of the table, which
    # reaped it if it had expired: its event is on the way; still here at the next sync, it is)
    assert dumps == [1] and asked[2:] == [] and eng.flows[40001].reaped == now[0]
    monkeypatch.setattr(fpe, "LOOKUP_US", 15.0)
    now[0] += fpe.SYNC_PERIOD
    eng._sync_counters()
    assert asked[-1] == [(6, A(CIP), 40001, A(VIP), 80)]
    while eng.ticks % fpe.FULL_DUMP_EVERY != fpe.FULL_DUMP_EVERY - 1:
        now[0] += fpe.SYNC_PERIOD
        eng._sync_counters()
    assert dumps == [1]
    now[0] += fpe.SYNC_PERIOD
    eng._sync_counters()  # now and then a dump anyway: finds a connection we lost track of
    assert dumps == [1, 1]


def test_a_lookup_that_times_out_does_not_close_the_open_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lookups that go unanswered (a slow kernel) must not pass for closed connections: the sync
    is skipped whole, as a failed dump is, and the flows stay open for the next one."""
    from pylvs.engines.packet.fastpath import engine as fpe

    d, _key = nat_director()
    now = [100.0]
    eng = fpe.FastPathEngine(d, clock=lambda: now[0])
    eng.ct_buckets = 262144
    syn = Packet(
        Proto.TCP, ipaddress.IPv4Address(CIP), 40000, ipaddress.IPv4Address(VIP), 80, tcp_flags=TCP_SYN
    )
    f = glue.Flow(d.process_in(syn, now[0]).conn, 6, A(CIP), 40000, A(VIP), 80, in_pkts=1, in_bytes=60)
    glue.ct_state_changed(d, f, ct.CT_ESTABLISHED, now[0])
    eng.flows[7] = f

    def slow(_ts: object, **k: object) -> list[None]:
        assert k.get("strict") is True
        raise TimeoutError("timed out")

    monkeypatch.setattr(fpe.ct, "get_many", slow)
    monkeypatch.setattr(fpe, "_conntrack_sysctl", lambda _name: 25000)
    for _ in range(3):
        now[0] += fpe.SYNC_PERIOD
        eng._tick()  # logged, skipped
    assert eng.flows == {7: f} and not f.left_open and not f.asked and not f.final
    assert f.conn.state == coretcp.ESTABLISHED and f.conn.dest.activeconns == 1


def test_an_id_ended_in_a_read_is_new_for_the_events_after_it() -> None:
    """conntrack gives a new connection of the same tuple the same id when it reuses the ended
    one's memory (a client port reused; the new SYN reaps the old entry): its first event,
    right behind the old one's DESTROY in the same read, must carry its tuples (in place or
    walked), or the fast path could not tell which connection it is."""
    old = (6, A(CIP), 40000, A(VIP), 80)
    reply = (6, A(RIP1), 80, A(CIP), 40000)
    destroy = ctmsg.event(ct.CT_TIME_WAIT, old, reply, 77, destroy=True, counters=(6, 420, 5, 900))
    estab = ctmsg.event(ct.CT_ESTABLISHED, old, (6, A(RIP2), 80, A(CIP), 40000), 77)
    odd = estab + attr(99, b"")  # a layout the reader walks
    odd = struct.pack("=I", len(odd)) + odd[4:]
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ev = ct.CtEvents.__new__(ct.CtEvents)
    ev.sock, ev.buf, ev.mask, ev.overruns = b, bytearray(1 << 16), tables.OURS, 0
    b.setblocking(False)
    try:
        for m in (estab, destroy, estab, destroy, odd):
            a.send(m)
        got = ev.read(known={77})
    finally:
        a.close()
        b.close()
    assert [(e.kind, e.tcp_state) for e in got] == [
        (ct.UPDATE, ct.CT_ESTABLISHED),
        (ct.DESTROY, ct.CT_TIME_WAIT),
        (ct.UPDATE, ct.CT_ESTABLISHED),
        (ct.DESTROY, ct.CT_TIME_WAIT),
        (ct.UPDATE, ct.CT_ESTABLISHED),
    ]
    assert got[0].orig == got[1].orig == (0, b"", 0, b"", 0)  # known: no tuples
    assert got[2].orig == got[3].orig == got[4].orig == old  # after its DESTROY: a new connection
    assert got[2].reply[1] == A(RIP2)


def client_syn(d: Director, now: float) -> Any:
    """The core's entry for a SYN from the client's port 40000 to the VIP."""
    p = Packet(
        Proto.TCP, ipaddress.IPv4Address(CIP), 40000, ipaddress.IPv4Address(VIP), 80, tcp_flags=TCP_SYN
    )
    return d.process_in(p, now).conn


def followed_then_reused(*states: int) -> tuple[Director, Any, Any]:
    """A NAT director whose fast path follows a connection from the client's port 40000 under
    conntrack id 77 through `states` (at t=100); the engine's clock then reads 105, when the
    client reuses the port."""
    from pylvs.engines.packet.fastpath import engine as fpe

    d, _key = nat_director()
    eng = fpe.FastPathEngine(d, clock=lambda: 105.0)
    conn = client_syn(d, 100.0)
    f = glue.Flow(conn, 6, A(CIP), 40000, A(VIP), 80, in_pkts=1, in_bytes=60)
    for st in states:
        glue.ct_state_changed(d, f, st, 100.0)
    eng.flows[77] = f
    return d, eng, conn


def apply_events(eng: Any, *msgs: bytes) -> None:
    """Run the engine's event handler on kernel-layout messages (a datagram pair stands in for the
    netlink socket)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ev = ct.CtEvents.__new__(ct.CtEvents)
    ev.sock, ev.buf, ev.mask, ev.overruns = b, bytearray(1 << 16), tables.OURS, 0
    b.setblocking(False)
    try:
        for m in msgs:
            a.send(m)
        eng._apply_events(ev)
    finally:
        a.close()
        b.close()


def test_a_new_connection_with_a_reused_id_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The old flow ends with its DESTROY (its counters counted, the core's entry, which the new
    SYN took over, left as it is), and the new connection's ESTABLISHED event, in the same read
    and with the same id, takes that entry to ESTABLISHED. (The event was dropped, the core
    catching up only at the FIN: 4-5% of connections at 10k connections/s.)"""
    d, eng, old_conn = followed_then_reused(ct.CT_ESTABLISHED, ct.CT_FIN_WAIT)
    # The client reuses the port: the core takes the new SYN on the entry it finds in FIN_WAIT
    # (as IPVS does with conn_reuse_mode 1: back to SYN_RECV), the queue handler keeps it until
    # the first event. The old conntrack entry's DESTROY must not end it.
    new_conn = client_syn(d, 105.0)
    assert new_conn is old_conn and new_conn.state == coretcp.SYN_RECV
    tup = (6, A(CIP), 40000, A(VIP), 80)
    eng.scheduled[tup] = (new_conn, 60)
    reply = (6, A(RIP1), 80, A(CIP), 40000)
    apply_events(
        eng,
        ctmsg.event(ct.CT_TIME_WAIT, tup, reply, 77, destroy=True, counters=(6, 420, 5, 900)),
        ctmsg.event(ct.CT_ESTABLISHED, tup, reply, 77),
    )
    assert eng.flows[77].conn is new_conn and tup not in eng.scheduled
    assert new_conn.state == coretcp.ESTABLISHED and new_conn.dest.activeconns == 1
    assert new_conn.dest.stats.outbytes >= 900  # the old connection's last counters


def test_last_counters_count_when_the_core_already_ended_the_entry() -> None:
    """A client reusing its port finds the core's TIME_WAIT entry and is scheduled afresh (the
    old entry ends) before the old conntrack entry's DESTROY is read: its last counters still go
    to the server's, the service's and the total stats."""
    d, eng, old = followed_then_reused(ct.CT_ESTABLISHED, ct.CT_FIN_WAIT, ct.CT_TIME_WAIT)
    assert old.state == coretcp.TIME_WAIT
    new = client_syn(d, 105.0)
    assert new is not old and old.dead  # rescheduled: the TIME_WAIT entry ended
    before = (old.dest.stats.outbytes, d.services.tot_stats.outbytes)
    tup, reply = (6, A(CIP), 40000, A(VIP), 80), (6, A(RIP1), 80, A(CIP), 40000)
    apply_events(eng, ctmsg.event(ct.CT_TIME_WAIT, tup, reply, 77, destroy=True, counters=(6, 420, 5, 900)))
    assert 77 not in eng.flows
    assert (old.dest.stats.outbytes, d.services.tot_stats.outbytes) == (before[0] + 900, before[1] + 900)
    assert new.state == coretcp.SYN_RECV  # the new connection's entry is not touched


class _Backlog:
    """An event socket with `msgs` waiting (a datagram pair holds only net.unix.max_dgram_qlen)."""

    def __init__(self, msgs: list[bytes]) -> None:
        self.msgs = msgs

    def recv(self, _n: int) -> bytes:
        if not self.msgs:
            raise BlockingIOError
        return self.msgs.pop(0)


def test_one_handler_run_reads_the_events_of_many_new_connections() -> None:
    """Three events come for each new connection, and the loop runs the queue's handler and the
    events' in turn: a run must read more than three times what a queue run admits (with 64 a run,
    256 clients made the reader fall behind until the socket overflowed and events were lost)."""
    from pylvs.engines.packet.fastpath import engine as fpe

    d, key = nat_director()
    eng = fpe.FastPathEngine(d, clock=lambda: 100.0)
    n = 300
    msgs, conns = [], []
    for i in range(n):
        port = 20000 + i
        syn = Packet(
            Proto.TCP, ipaddress.IPv4Address(CIP), port, ipaddress.IPv4Address(VIP), 80, tcp_flags=TCP_SYN
        )
        conns.append(d.process_in(syn, 99.0).conn)
        orig, reply = (6, A(CIP), port, A(VIP), 80), (6, conns[-1].daddr.packed, 80, A(CIP), port)
        msgs.append(ctmsg.event(ct.CT_ESTABLISHED, orig, reply, 1000 + i))
    ev = ct.CtEvents.__new__(ct.CtEvents)
    ev.sock, ev.buf, ev.mask, ev.overruns = _Backlog(msgs), bytearray(1 << 16), tables.OURS, 0
    eng._apply_events(ev)
    assert fpe.EVENT_BATCH >= 3 * 128 and eng.counters["ct_established"] == n
    assert all(c.state == coretcp.ESTABLISHED for c in conns) and len(eng.flows) == n
    assert sum(dest.total for dest in d.services.get(key).dests) == n


def test_many_overdue_closed_flows_are_reaped_by_one_walk_then_looked_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """conntrack's collector can leave expired entries (and so their DESTROY events) waiting for
    many seconds in a big table. When many closed flows are overdue, one dump (which removes every
    expired entry it walks past) costs less than a lookup each: the sync dumps, and looks up by
    itself only a flow still here at the next sync (half-closed and alive, or its event lost)."""
    from pylvs.engines.packet.fastpath import engine as fpe

    d, _key = nat_director()
    now = [100.0]
    eng = fpe.FastPathEngine(d, clock=lambda: now[0])
    eng.ct_buckets = 262144  # ~10.5 ms to walk: worth 700 lookups
    monkeypatch.setattr(fpe, "_conntrack_sysctl", lambda _name: 25000)
    follow_closed(d, eng, range(20000, 21000), now[0])
    asked: list[list[tuple[int, bytes, int, bytes, int]]] = []
    dumps: list[tuple[object, ...]] = []
    monkeypatch.setattr(fpe.ct, "dump", lambda *a, **_k: dumps.append(a) or [])
    monkeypatch.setattr(fpe.ct, "get_many", lambda ts, **_k: asked.append(ts) or [None] * len(ts))
    for _ in range(3):  # closed, then DESTROY_GRACE without their events
        eng._sync_counters()
        now[0] += fpe.SYNC_PERIOD
    assert asked == [] and dumps == [(tables.OURS, tables.OURS | tables.CLOSED)]
    assert eng.counters["ct_reaps"] == 1
    # The walk reaped them: DESTROY events come for all but one.
    for port in range(20000, 20999):
        f = eng.flows.pop(port)
        eng._ended(f, now[0])
    eng._sync_counters()
    assert asked == [[(6, A(CIP), 20999, A(VIP), 80)]] and len(dumps) == 1


def test_without_the_short_time_wait_closed_flows_are_looked_up_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the linger policy a closed entry stays in conntrack's TIME_WAIT (two minutes): no
    walk would reap it, so each closed flow is looked up once, right away, however many there are."""
    from pylvs.engines.packet.fastpath import engine as fpe

    d, _key = nat_director()
    eng = fpe.FastPathEngine(d, clock=lambda: 100.0)
    eng.linger = False
    eng.ct_buckets = 262144
    monkeypatch.setattr(fpe, "_conntrack_sysctl", lambda _name: 25000)
    follow_closed(d, eng, range(20000, 21000), 100.0)
    asked: list[list[tuple[int, bytes, int, bytes, int]]] = []
    dumps: list[tuple[object, ...]] = []
    monkeypatch.setattr(fpe.ct, "dump", lambda *a, **_k: dumps.append(a) or [])
    monkeypatch.setattr(fpe.ct, "get_many", lambda ts, **_k: asked.append(ts) or [None] * len(ts))
    eng._sync_counters()
    assert dumps == [] and len(asked) == 1 and len(asked[0]) == 1000
