"""The plain -Ln table written from live objects (pylvs.ipvsadm.live) is the views' listing, byte for
byte, whatever the table holds (shapes it does not write itself go through the fallback)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.director import Director, service_view, take_snapshot
from pylvs.core.errors import IPVSError
from pylvs.core.snapshot import Snapshot
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey, SvcFlags
from pylvs.ipvsadm import listing, live
from pylvs.ipvsadm.grammar import Format

V4 = ["10.0.0.1", "10.0.0.2", "200.1.1.1", "1.2.3.4", "255.255.255.254"]  # far apart: C sort wraps
KEYS = [
    *(
        ServiceKey.for_addr(p, ipaddress.ip_address(a), port)
        for a in V4[:3]
        for p in (Proto.TCP, Proto.UDP)
        for port in (80, 65535)
    ),
    ServiceKey.for_addr(Proto.SCTP, ipaddress.ip_address("10.0.0.3"), 9),
    ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address("2001:db8::1"), 443),
    ServiceKey.for_fwmark(7),
]
RS = [ipaddress.ip_address(a) for a in (*V4, "192.168.100.200", "2001:db8::10")]

svc_cfg = st.builds(
    lambda sched, flags: ServiceConfig(sched, flags, 300 if flags & SvcFlags.PERSISTENT else 0),
    st.sampled_from(["rr", "wlc", "sh"]),
    st.sampled_from([SvcFlags.NONE, SvcFlags.NONE, SvcFlags.PERSISTENT, SvcFlags.ONEPACKET, SvcFlags.SCHED1]),
)
dest_cfg = st.builds(
    DestConfig,
    st.sampled_from(RS),
    st.sampled_from([0, 80, 65535]),
    st.sampled_from([Fwd.MASQ, Fwd.DROUTE, Fwd.TUNNEL, Fwd.FULLNAT]),
    st.integers(0, 100000),
)


def _views_listing(d: Director, nosort: bool) -> str:
    fmt = Format(numeric=True, nosort=nosort)
    return listing.list_all(take_snapshot(d), fmt, None)


def _live_listing(d: Director, nosort: bool) -> str:
    fmt = Format(numeric=True, nosort=nosort)
    head = listing.version_line(Snapshot()) + listing.title(fmt)
    return head + live.list_table(
        d.services, nosort, lambda s: listing.service_entry(service_view(s), fmt, None)
    )


@settings(max_examples=200, deadline=None)
@given(
    services=st.lists(st.tuples(st.sampled_from(KEYS), svc_cfg), max_size=8),
    dests=st.lists(st.tuples(st.integers(0, 7), dest_cfg, st.integers(0, 3), st.integers(0, 3)), max_size=25),
    nosort=st.booleans(),
)
def test_live_listing_equals_views(services, dests, nosort) -> None:  # type: ignore[no-untyped-def]
    d = Director()
    for key, cfg in services:
        try:
            d.add_service(key, cfg)
        except IPVSError:
            pass
    svcs = list(d.services)
    for i, cfg, active, inact in dests:
        if not svcs:
            break
        svc = svcs[i % len(svcs)]
        try:
            rs = d.add_dest(svc.key, cfg)
        except IPVSError:
            continue
        rs.activeconns, rs.total = active, active + inact  # counters as connections would leave them
    assert _live_listing(d, nosort) == _views_listing(d, nosort)


def _v4port_by_pattern(word: str) -> tuple[ipaddress.IPv4Address, int] | None:
    from pylvs.ipvsadm.grammar import _V4PORT

    m = _V4PORT.fullmatch(word)
    if m is None or int(m.group(2)) > 65535:
        return None
    return ipaddress.IPv4Address(m.group(1)), int(m.group(2))


octet = st.one_of(
    st.integers(0, 300).map(str), st.sampled_from(["01", "00", "0x1", "", " 1", "1 ", "+1", "٣"])
)
words = st.one_of(
    st.builds(lambda a, b, c, d, p: f"{a}.{b}.{c}.{d}:{p}", octet, octet, octet, octet, octet),
    st.text(alphabet="0123456789.: x", max_size=22),
)


@settings(max_examples=2000, deadline=None)
@given(word=words)
def test_fast_address_reader_reads_what_the_pattern_does(word: str) -> None:
    from pylvs.ipvsadm.grammar import _v4port

    assert _v4port(word) == _v4port_by_pattern(word)
