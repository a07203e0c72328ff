"""The SIP persistence engine (spec §A7 "Persistence engine sip"): Call-ID parsing and templates."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import pytest

from pylvs.core.director import Director
from pylvs.core.packet import Action
from pylvs.core.pe_sip import sip_callid
from pylvs.core.types import DestConfig, Fwd, Packet, Proto, ServiceConfig, ServiceKey, SvcFlags
from pylvs.ipvsadm.listing import list_connections
from pylvs.simulate import simulate

from .helpers import ip

VIP = "172.25.254.100"


def msg(*headers: str, eol: str = "\r\n") -> bytes:
    lines = ["INVITE sip:bob@example.com SIP/2.0", *headers, "", ""]
    return eol.join(lines).encode("latin-1")


@pytest.mark.parametrize(
    ("payload", "callid"),
    [
        (msg("Via: SIP/2.0/UDP a", "Call-ID: abc123@host.example"), b"abc123@host.example"),
        (msg("call-id:x1"), b"x1"),
        (msg("CALL-ID   :   x2"), b"x2"),
        (msg("i: compact-1"), b"compact-1"),
        (msg("In-Reply-To: no", "i:c2"), b"c2"),  # 'i' followed by a letter is another header
        (msg("Call-ID: a", "Call-ID: b"), b"a"),  # the first one
        (msg("Call-ID: first", eol="\n"), b"first"),  # LF only (RFC 2543)
        (msg("Call-ID: cr", eol="\r"), b"cr"),  # CR only
        (msg("Call-ID:\r\n  folded"), b"folded"),  # continuation line before the value
        (msg("Call-ID: ;", "i: next"), b"next"),  # an unusable value: the search goes on
        (msg("Call-ID: " + "a" * 255), b"a" * 255),
        (msg("Call-ID: \xe9t\xe9"), "\xe9t\xe9".encode("latin-1")),  # kernel ctype: Latin-1 letters
    ],
)
def test_callid_found(payload: bytes, callid: bytes) -> None:
    assert sip_callid(payload) == callid


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"Call-ID: at-start\r\n",  # the first line is never a header
        msg("From: x"),  # no Call-ID at all
        msg("Call-ID: " + "a" * 256),  # longer than 255 bytes
        b"INVITE x\r\nCall-ID: abc",  # the value runs to the end: no line terminator
        b"INVITE x\r\nCall-ID: abc def\r\n",  # followed by a space, not CR/LF
        msg("Call-ID abc"),  # no colon: the search ends
        msg("Call-ID: a@"),  # '@' without a domain
        msg("Call-ID: a@b;tag=1"),  # ';' ends the word, and it is no line terminator
        msg("Call-ID:"),  # empty value and nothing after it
    ],
)
def test_callid_refused(payload: bytes) -> None:
    assert sip_callid(payload) is None


def sip_director(servers: int = 3, fwmark: int = 0) -> tuple[Director, ServiceKey]:
    d = Director()
    key = ServiceKey.for_fwmark(fwmark) if fwmark else ServiceKey.for_addr(Proto.UDP, ip(VIP), 5060)
    d.add_service(key, ServiceConfig("rr", SvcFlags.PERSISTENT, 360, 0xFFFFFFFF, "sip"))
    for i in range(servers):
        d.add_dest(key, DestConfig(ip(f"192.168.1.{10 + i}"), 5060 if not fwmark else 0, Fwd.MASQ, 1))
    return d, key


def datagram(client: str, cport: int, callid: str | None, proto: Proto = Proto.UDP, mark: int = 0) -> Packet:
    payload = msg(f"Call-ID: {callid}") if callid is not None else msg("From: x")
    return Packet(proto, ip(client), cport, ip(VIP), 5060, fwmark=mark, length=100, payload=payload)


def server_of(d: Director, pkt: Packet, now: float = 0.0) -> str | None:
    v = d.process_in(pkt, now)
    if v.action is Action.DROP:
        return None
    assert v.conn is not None
    return str(v.conn.dest.addr)


def test_same_callid_same_server_different_callid_scheduled_anew() -> None:
    d, _ = sip_director()
    a = server_of(d, datagram("172.25.254.10", 5001, "call-A"))
    # another client port (a new connection entry) with the same Call-ID: the template holds
    assert server_of(d, datagram("172.25.254.10", 5002, "call-A")) == a
    # a different Call-ID from the same client is a different template: rr moves on
    b = server_of(d, datagram("172.25.254.10", 5003, "call-B"))
    assert b != a
    assert server_of(d, datagram("172.25.254.10", 5004, "call-B")) == b
    # the same Call-ID from another client is another template (the client net is in the key)
    c = server_of(d, datagram("172.25.254.11", 5001, "call-A"))
    assert c not in (a, b)
    assert len(d.conns.pe_templates) == 3 and not d.conns.templates


def test_existing_connection_wins_over_the_callid() -> None:
    """The 4-tuple entry is looked up first (ip_vs_in): the Call-ID only matters for new entries."""
    d, _ = sip_director()
    a = server_of(d, datagram("172.25.254.10", 5001, "call-A"))
    assert server_of(d, datagram("172.25.254.10", 5001, "call-B")) == a
    assert len(d.conns.pe_templates) == 1


def test_no_callid_or_not_udp_is_dropped() -> None:
    d, _ = sip_director(fwmark=7)
    assert server_of(d, datagram("172.25.254.10", 5001, None, mark=7)) is None
    tcp = Packet(
        Proto.TCP, ip("172.25.254.10"), 5001, ip(VIP), 5060, fwmark=7, tcp_flags=0x02, payload=msg("i: x")
    )
    assert d.process_in(tcp, 0.0).action is Action.DROP
    assert len(d.conns) == 0
    # through the fwmark service a UDP datagram with a Call-ID does make a template (protocol IP)
    assert server_of(d, datagram("172.25.254.10", 5001, "m1", mark=7)) is not None
    ((_, tpl),) = d.conns.pe_templates.items()
    assert tpl.protocol == Proto.IP and str(tpl.vaddr) == "0.0.0.7"


def test_template_lifetime_and_deleted_server() -> None:
    d, key = sip_director(servers=2)
    a = server_of(d, datagram("172.25.254.10", 5001, "c"), 0.0)
    assert a is not None
    # UDP entry expires at 300 s, the template 360 s after its last use
    assert server_of(d, datagram("172.25.254.10", 5002, "c"), 100.0) == a
    d.advance(100.0 + 361)
    assert len(d.conns) == 0
    b = server_of(d, datagram("172.25.254.10", 5003, "c"), 500.0)
    assert b is not None
    d.del_dest(key, ip(b), 5060)
    # the template's server is gone: invalidated at next use, the client is rescheduled
    other = server_of(d, datagram("172.25.254.10", 5004, "c"), 501.0)
    assert other is not None and other != b


def test_listing_shows_pe_name_and_data() -> None:
    d, _ = sip_director()
    server_of(d, datagram("172.25.254.10", 5001, "abc@x"))
    views = d.connections_view(0.0)
    tpl = next(v for v in views if v.template)
    assert (tpl.pe_name, tpl.pe_data) == ("sip", "abc@x")
    out = list_connections(views, True, True, None).splitlines()
    assert out[1].endswith("pe name          pe_data")
    t_line = next(line for line in out if line.startswith("UDP 06:00"))
    assert t_line == (
        "UDP 06:00  NONE        172.25.254.10:0    172.25.254.100:5060 192.168.1.12:5060 sip                abc@x"
    )
    c_line = next(line for line in out if line.startswith("UDP 05:00"))
    assert c_line.endswith("192.168.1.12:5060")  # the connection entry has no pe data


# -- the real kernel's answers (tests/data/oracle/sip: sip.sh run in the oracle VM, kernel 6.1) ----
ORACLE = Path(__file__).resolve().parents[1] / "data" / "oracle" / "sip"


def oracle_sections() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    name = ""
    for line in (ORACLE / "sip.out").read_text().splitlines():
        if line.startswith("=== "):
            name = line[4:]
            sections[name] = []
        elif name:
            sections[name].append(line)
    return sections


def oracle_payload(callid: str) -> bytes:
    """What sip_udp.py sends."""
    lines = ["INVITE sip:bob@example.com SIP/2.0", "Via: SIP/2.0/UDP client"]
    if callid.startswith("i="):
        lines.append(f"i: {callid[2:]}")
    elif callid != "-":
        lines.append(f"Call-ID: {callid}")
    lines += ["CSeq: 1 INVITE", "", ""]
    return "\r\n".join(lines).encode()


def test_oracle_sip_traffic_and_listing() -> None:
    sec = oracle_sections()
    d = Director()
    key = ServiceKey.for_addr(Proto.UDP, ip(VIP), 5060)
    d.add_service(key, ServiceConfig("rr", SvcFlags.PERSISTENT, 600, 0xFFFFFFFF, "sip"))
    names = {}
    for k, addr in enumerate(("192.168.1.10", "192.168.1.20", "192.168.1.30"), 1):
        d.add_dest(key, DestConfig(ip(addr), 5060, Fwd.MASQ, 1))
        names[addr] = f"rs{k}"
    now = 0.0
    got = []
    for line in sec["traffic"]:
        label, src, rest = line.split(" ", 2)
        callid = rest.split(" ", 1)[0].removeprefix("callid=")
        caddr, cport = src.split(":")
        payload = oracle_payload(callid)
        pkt = Packet(
            Proto.UDP, ip(caddr), int(cport), ip(VIP), 5060, length=28 + len(payload), payload=payload
        )
        v = d.process_in(pkt, now)
        if v.action is Action.FORWARD and v.conn is not None:
            conn = v.conn
            reply = Packet(Proto.UDP, conn.daddr, conn.dport, ip(caddr), int(cport), length=31)
            d.process_out(conn, reply, now)
            answer = names[str(conn.daddr)]
        else:
            answer = "none"
        got.append(f"{label} {src} {rest.rsplit(' -> ', 1)[0].split(' ', 1)[0]} -> {answer}")
        now += 0.1
    assert got == sec["traffic"]
    # the listing, expiry column aside (the kernel's run took a few seconds)
    listing = list_connections(d.connections_view(now), True, True, None).splitlines()

    def norm(lines: list[str]) -> list[str]:
        return sorted(line[:4] + line[11:] for line in lines[2:])

    want = sec["ipvsadm -Lnc --persistent-conn"]
    assert listing[:2] == want[:2]
    assert norm(listing) == norm(want)
    # (sip.out's --stats figures lack the last two datagrams, e1 and e2: the kernel sums its per-CPU
    # counters into the listed ones on the estimator's 2-second tick, and the listing came sooner)


def test_oracle_tcp_on_a_sip_service_is_dropped_uncounted() -> None:
    sec = oracle_sections()["tcp service with --pe sip"]
    assert "tcp not connected" in sec and "0" in sec
    d = Director()
    key = ServiceKey.for_addr(Proto.TCP, ip(VIP), 5060)
    d.add_service(key, ServiceConfig("rr", SvcFlags.PERSISTENT, 600, 0xFFFFFFFF, "sip"))
    d.add_dest(key, DestConfig(ip("192.168.1.10"), 5060, Fwd.MASQ, 1))
    syn = Packet(Proto.TCP, ip("172.25.254.10"), 40000, ip(VIP), 5060, length=60, tcp_flags=0x02)
    assert d.process_in(syn, 0.0).action is Action.DROP
    svc = d.services.get(key)
    assert svc is not None and svc.stats.inpkts == 0 and svc.stats.conns == 0


def test_simulate_callid() -> None:
    """`open ... callid X` (docs/simulate.md): the same sequence as the oracle's, Call-ID headers only."""
    lines = [
        "-A -u 172.25.254.100:5060 -s rr -p 600 --pe sip",
        "-a -u 172.25.254.100:5060 -r 192.168.1.10:5060 -m",
        "-a -u 172.25.254.100:5060 -r 192.168.1.20:5060 -m",
        "-a -u 172.25.254.100:5060 -r 192.168.1.30:5060 -m",
    ]
    want = []
    names = {"rs1": "192.168.1.10:5060", "rs2": "192.168.1.20:5060", "rs3": "192.168.1.30:5060"}
    for line in oracle_sections()["traffic"]:
        label, src, callid, _, answer = line.split()
        callid = callid.removeprefix("callid=").removeprefix("i=")
        tail = "" if callid == "-" else f" callid {callid}"
        lines.append(f"open {label} udp {src} 172.25.254.100:5060{tail}")
        want.append(f"{label} {names.get(answer, answer)}")
    out = io.StringIO()
    assert simulate(lines, out) == 0
    assert out.getvalue().splitlines() == want
    bad = io.StringIO()
    assert simulate(["open x tcp 1.2.3.4:1 1.2.3.5:2 callid y"], bad, io.StringIO()) == 2


def test_callid_never_fails_on_junk() -> None:
    """Random mixes of header pieces: an answer or None, never an exception or a bad value."""
    rng = random.Random(3)
    pieces = [b"\r", b"\n", b" ", b"\t", b":", b"@", b"Call-ID", b"i", b"I", b"x", b";", b"\xe9", b"a" * 300]
    for _ in range(3000):
        payload = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 20)))
        got = sip_callid(payload)
        if got is not None:
            assert 0 < len(got) <= 255
            assert re.search(re.escape(got) + rb"[\r\n]", payload)
