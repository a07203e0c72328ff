"""The incremental rules-file text is exactly format_save's, through any sequence of changes."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.director import take_snapshot
from pylvs.core.errors import IPVSError
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey, SvcFlags, TunFlags, TunType
from pylvs.daemon.changes import Change
from pylvs.daemon.rules import Rules
from pylvs.daemon.savecache import SaveCache
from pylvs.ipvsadm.save import format_save

KEYS = [
    ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address("10.0.0.1"), 80),
    ServiceKey.for_addr(Proto.UDP, ipaddress.ip_address("10.0.0.1"), 53),
    ServiceKey.for_addr(Proto.SCTP, ipaddress.ip_address("10.0.0.2"), 0),
    ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address("2001:db8::1"), 443),
    ServiceKey.for_fwmark(66),
    ServiceKey.for_fwmark(3, 10),
]
ADDRS = [ipaddress.ip_address(a) for a in ("192.168.1.1", "192.168.1.2", "2001:db8::10", "127.0.0.1")]

svc_cfg = st.builds(
    lambda sched, persist, timeout, pe, flags: ServiceConfig(
        sched,
        (SvcFlags.PERSISTENT if persist else SvcFlags.NONE) | flags,
        timeout if persist else 0,
        0xFFFFFF00 if persist else 0xFFFFFFFF,
        pe,
    ),
    st.sampled_from(["rr", "wlc", "sh", "mh"]),
    st.booleans(),
    st.integers(1, 1000),
    st.sampled_from(["", "sip"]),
    st.sampled_from([SvcFlags.NONE, SvcFlags.ONEPACKET, SvcFlags.SCHED1 | SvcFlags.SCHED2]),
)
dest_cfg = st.builds(
    DestConfig,
    st.sampled_from(ADDRS),
    st.sampled_from([0, 80, 8080]),
    st.sampled_from(list(Fwd)),
    st.integers(0, 5),
    st.integers(0, 3),
    st.just(0),
    st.sampled_from(list(TunType)),
    st.sampled_from([0, 6080]),
    st.sampled_from(list(TunFlags)),
)
key = st.sampled_from(KEYS)


def _svc(kind: str, k: ServiceKey, c: ServiceConfig) -> Change:
    if k.af == 10:  # IPv6 services take a prefix length
        c = ServiceConfig(c.scheduler, c.flags, c.timeout, 64 if c.persistent else 128, c.pe_name)
    return Change(kind, key=k, svc=c)


change = st.one_of(
    st.builds(lambda k, c: _svc("add_service", k, c), key, svc_cfg),
    st.builds(lambda k, c: _svc("edit_service", k, c), key, svc_cfg),
    st.builds(lambda k: Change("del_service", key=k), key),
    st.builds(lambda k, d: Change("add_dest", key=k, dest=d), key, dest_cfg),
    st.builds(lambda k, d: Change("edit_dest", key=k, dest=d), key, dest_cfg),
    st.builds(lambda k, d: Change("del_dest", key=k, addr=d.addr, port=d.port), key, dest_cfg),
    st.just(Change("flush")),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(change, max_size=25), numeric=st.booleans())
def test_cached_text_equals_format_save(steps: list[Change], numeric: bool) -> None:
    rules = Rules()
    cache = SaveCache()
    text_cache = SaveCache()
    seen: set[int] = set()
    for c in steps:
        try:
            c.apply(rules)
        except IPVSError:
            continue
        snap = cache.snapshot(rules.director)
        seen.update(s.af for s in snap.services)
        want = format_save(take_snapshot(rules.director), numeric=numeric)
        assert cache.format(snap, numeric) == want
        assert cache.text(rules.director, numeric) == want  # the live path (pylvs.ipvsadm.live)
        assert text_cache.text(rules.director, numeric) == want  # live path only, incrementally


def test_ipv6_and_fwmark_services_are_covered() -> None:
    rules = Rules()
    cache = SaveCache()
    for c in (
        _svc("add_service", KEYS[3], ServiceConfig("rr")),
        _svc("add_service", KEYS[5], ServiceConfig("rr")),
        Change(
            "add_dest", key=KEYS[3], dest=DestConfig(ADDRS[2], 443, Fwd.TUNNEL, 2, 0, 0, TunType.GUE, 6080)
        ),
    ):
        c.apply(rules)
    text = cache.format(cache.snapshot(rules.director), True)
    assert text == format_save(take_snapshot(rules.director), numeric=True)
    assert "-f 3 -6" in text and "[2001:db8::10]:443 -i -w 2 --tun-type gue --tun-port 6080" in text


def test_plain_services_are_written_from_live_objects() -> None:
    """The shapes pylvs.ipvsadm.live writes itself (IPv4, no persistence or flags, no tunnels)."""
    rules = Rules()
    cache = SaveCache()
    for k in KEYS[:2]:
        _svc("add_service", k, ServiceConfig("wlc")).apply(rules)
        for fwd, port in ((Fwd.MASQ, 8080), (Fwd.DROUTE, 0), (Fwd.FULLNAT, 80), (Fwd.LOCALNODE, 0)):
            addr = ipaddress.ip_address(f"192.168.{int(fwd)}.{port % 250 + 1}")
            Change("add_dest", key=k, dest=DestConfig(addr, port, fwd, 3, 10, 2)).apply(rules)
    want = format_save(take_snapshot(rules.director), numeric=True)
    assert cache.text(rules.director, True) == want
    assert "-a -t 10.0.0.1:80 -r 192.168.0.81:8080 -m -w 3\n" in want
    Change(
        "edit_dest", key=KEYS[0], dest=DestConfig(ipaddress.ip_address("192.168.0.81"), 8080, Fwd.MASQ, 0)
    ).apply(rules)
    assert cache.text(rules.director, True) == format_save(take_snapshot(rules.director), numeric=True)
