"""Unit tests of the pieces behind the golden tests: number format, sort, rules splitting, popt."""

from __future__ import annotations

import ipaddress
from functools import cmp_to_key

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.snapshot import DestView, ServiceView
from pylvs.ipvsadm.grammar import UsageError, parse, parse_fast
from pylvs.ipvsadm.listing import largenum
from pylvs.ipvsadm.names import NameResolver
from pylvs.ipvsadm.run import split_rules
from pylvs.ipvsadm.sort import cmp_dests, cmp_services, merge_sort, sort_dests, sort_services

NO_NAMES = NameResolver(hosts_text="", services_text="http 80/tcp www\n")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "        0"),
        (99_999_999, " 99999999"),
        (100_000_000, "  100000K"),
        (999_999_999, "  999999K"),
        (1_000_000_000, "    1000M"),
        (99_999_999_999, "   99999M"),
        (100_000_000_000, "     100G"),
        (99_999_999_999_999, "   99999G"),
        (100_000_000_000_000, "     100T"),
    ],
)
def test_largenum(value: int, text: str) -> None:
    assert largenum(value, False) == text


def test_largenum_exact() -> None:
    assert largenum(12345678, True) == " 12345678"
    assert largenum(123456789, True) == " 123456789"
    assert largenum(2**64 - 1, True) == " 18446744073709551615"


def _svc(addr: str, port: int = 80, fwmark: int = 0) -> ServiceView:
    return ServiceView(2, 6, addr, port, fwmark, "rr", 0, 0, 0xFFFFFFFF, "")


def _dest(addr: str, port: int = 80) -> DestView:
    return DestView(addr, port, 0, 1, 0, 0, 0, 0, 0)


def test_service_sort_wraps_like_c() -> None:
    got = sort_services([_svc("10.0.0.1"), _svc("172.25.254.100"), _svc("192.168.1.1")])
    assert [s.addr for s in got] == ["172.25.254.100", "192.168.1.1", "10.0.0.1"]


def test_dest_sort_spec_example() -> None:
    got = sort_dests([_dest("192.168.1.20"), _dest("192.168.1.10")])
    assert [d.addr for d in got] == ["192.168.1.10", "192.168.1.20"]


def test_merge_sort_is_not_pythons_sort_for_an_inconsistent_order() -> None:
    # 1.1.1.1 < 100.1.1.1 < 200.1.1.1 < 1.1.1.1 under the wrap-around comparator: a cycle.
    items = [_dest("200.1.1.1"), _dest("1.1.1.1"), _dest("100.1.1.1"), _dest("130.1.1.1")]
    ours = [d.addr for d in merge_sort(items, cmp_dests)]
    assert ours == [d.addr for d in sort_dests(items)]
    pythons = [d.addr for d in sorted(items, key=cmp_to_key(cmp_dests))]
    assert ours != pythons or len(set(ours)) == 4


def test_split_rules_quirks() -> None:
    text = "ipvsadm -A -t 1.1.1.1:80\n\n  -C\r\n\t\nipvsadm\n-L -n\n-Z  "
    assert split_rules(text) == [(1, ["-A", "-t", "1.1.1.1:80"]), (3, ["-C"]), (6, ["-L", "-n"])]
    assert split_rules("-C") == [(1, ["-C"])]
    assert split_rules("-C ") == [(1, ["-C"])]
    assert split_rules("x" * 5000) == [(1, ["x" * 4096, "x" * 904])]


def test_popt_forms() -> None:
    cmd = parse(["ipvsadm", "-A", "-t10.0.0.1:http", "-p=77", "-M", "255.255.0.0"], NO_NAMES)
    assert cmd.key is not None and cmd.key.port == 80
    assert cmd.service.timeout == 77 and cmd.service.netmask == 0xFFFF0000
    assert parse(["ipvsadm", "-A", "-t", "10.0.0.1:80", "-p"], NO_NAMES).service.timeout == 360
    with pytest.raises(UsageError) as e:
        parse(["ipvsadm", "-Ln=x"], NO_NAMES)
    assert (e.value.message, e.value.exit_code) == ("-Ln=x: option does not take an argument", 255)


def test_fullnat_is_a_forwarding_method() -> None:
    cmd = parse(["ipvsadm", "-a", "-t", "10.0.0.1:80", "-r", "10.0.0.2:8080", "--fullnat"], NO_NAMES)
    assert cmd.dest is not None and cmd.dest.port == 8080 and cmd.dest.fwd.name == "FULLNAT"
    with pytest.raises(UsageError) as e:
        parse(["ipvsadm", "-a", "-t", "10.0.0.1:80", "-r", "10.0.0.2", "-m", "--fullnat"], NO_NAMES)
    assert e.value.message == "multiple 'forwarding-method' options specified"


_V4 = st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v)))
_V6 = st.integers(0, 2**128 - 1).map(lambda v: ipaddress.IPv6Address(v).compressed)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(_V4, _V6), st.integers(0, 65535)), max_size=12), st.booleans())
def test_sort_fast_path_equals_merge_sort(pairs: list[tuple[str, int]], small: bool) -> None:
    if small:  # mostly consistent orders, so that the fast path is taken
        pairs = [(a if ":" in a else f"10.0.{p % 256}.{p // 256 % 256}", p) for a, p in pairs]
    dests = [_dest(a, p) for a, p in pairs]
    assert sort_dests(dests) == merge_sort(dests, cmp_dests)
    services = [ServiceView(10 if ":" in a else 2, 6, a, p, 0, "rr", 0, 0, 0, "") for a, p in pairs] + [
        ServiceView(2, 6, "", 0, p * (2**20 if small else 2**17), "rr", 0, 0, 0, "") for _, p in pairs
    ]
    assert sort_services(services) == merge_sort(services, cmp_services)


_PIECE = st.sampled_from(
    ["1.2.3.4", "10.0.0.1", "255.255.255.255", "0.0.0.0", "01.2.3.4", "1.2.3", "a.b.c.d"]
)
_PORT = st.sampled_from(["0", "80", "65535", "65536", "080", "+80", "http", "99999"])


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["-A", "-a", "-E"]),
    st.sampled_from(["-t", "-u", "--sctp-service", "-f"]),
    _PIECE,
    _PORT,
    _PIECE,
    _PORT,
    st.sampled_from(["-m", "-g", "-i", "--fullnat", "-x"]),
    st.sampled_from(["0", "1", "2147483647", "2147483648", "-1", "+3", "x"]),
    st.sampled_from(["rr", "wlc", "averyveryverylongschedulername", "-p"]),
)
def test_parse_fast_agrees_with_parse(
    c: str, proto: str, va: str, vp: str, ra: str, rp: str, fwd: str, w: str, sched: str
) -> None:
    for words in (
        [c, proto, f"{va}:{vp}", "-s", sched],
        [c, proto, f"{va}:{vp}", "-r", f"{ra}:{rp}", fwd, "-w", w],
    ):
        fast = parse_fast(words)
        if fast is None:
            continue
        assert fast == parse(["ipvsadm", *words], NO_NAMES)
