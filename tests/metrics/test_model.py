"""dest_columns(): the figures of `ipvsadm -Ln --stats --rate` per real server, as columns, whatever
state the counters and the estimator are in."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.director import Director
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from pylvs.metrics.model import dest_columns

counter = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(counter, min_size=5, max_size=5),  # counters
            st.lists(st.integers(0, 10**6), min_size=5, max_size=5),  # deltas before each estimator tick
            st.integers(0, 3),  # estimator ticks
            st.booleans(),  # zeroed in between
            st.integers(0, 50),  # active
            st.integers(-3, 80),  # total (may be below active while a server is being torn down)
        ),
        min_size=1,
        max_size=6,
    )
)
def test_columns_equal_the_core_methods(
    servers: list[tuple[list[int], list[int], int, bool, int, int]],
) -> None:
    d = Director()
    key = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address("192.0.2.1"), 80)
    d.add_service(key, ServiceConfig("rr"))
    dests = []
    for i, (counters, deltas, ticks, zeroed, active, total) in enumerate(servers):
        rs = d.add_dest(key, DestConfig(ipaddress.ip_address(f"10.0.0.{i + 1}"), 80, Fwd.MASQ, i))
        s = rs.stats
        s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes = counters
        for t in range(ticks):
            s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes = (
                c + dl * (t + 1) for c, dl in zip(s.raw(), deltas, strict=True)
            )
            s.estimate()
            if zeroed and t == 0:
                s.zero()
        rs.activeconns, rs.total, rs.persistconns = active, total, i
        dests.append(rs)
    cols = dest_columns(dests)
    got = [tuple(c[j] for c in cols) for j in range(len(dests))]
    want = [
        (r.activeconns, r.inactconns, r.weight, r.persistconns, *r.stats.shown(), *r.stats.rates())
        for r in dests
    ]
    assert got == want


def test_no_servers() -> None:
    assert dest_columns([]) == []
