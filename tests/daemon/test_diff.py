"""The SIGHUP reload's diff: applying diff_changes(live, new) to live gives new's rules."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from pylvs.daemon.changes import Change
from pylvs.daemon.recorder import changes_from_snapshot, diff_changes
from pylvs.daemon.rules import Rules

KEYS = [ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(f"10.0.0.{i}"), 80) for i in range(1, 5)]
KEYS.append(ServiceKey.for_fwmark(7))
ADDRS = [ipaddress.ip_address(f"192.168.1.{i}") for i in range(1, 6)]

service = st.tuples(
    st.sampled_from(KEYS),
    st.sampled_from(["rr", "wlc", "sh"]),
    st.dictionaries(
        st.sampled_from(ADDRS), st.tuples(st.integers(0, 5), st.sampled_from([Fwd.MASQ, Fwd.DROUTE]))
    ),
)
rule_sets = st.tuples(st.lists(service, max_size=5), st.sampled_from([(900, 120, 300), (60, 30, 20)]))


def build(spec: tuple[list[tuple[ServiceKey, str, dict]], tuple[int, int, int]]) -> Rules:  # type: ignore[type-arg]
    rules = Rules()
    seen = set()
    for key, sched, dests in spec[0]:
        if key in seen:
            continue
        seen.add(key)
        Change("add_service", key=key, svc=ServiceConfig(sched)).apply(rules)
        for addr, (w, fwd) in dests.items():
            Change("add_dest", key=key, dest=DestConfig(addr, 80, fwd, w)).apply(rules)
    Change("set_timeouts", timeouts=spec[1]).apply(rules)
    return rules


def rules_of(rules: Rules) -> set[tuple[object, ...]]:
    snap = rules.snapshot()
    out: set[tuple[object, ...]] = {("timeouts", snap.timeouts)}
    for s in snap.services:
        out.add((s.key(), s.config()))
        out.update((s.key(), d.config()) for d in s.dests)
    return out


@settings(max_examples=200, deadline=None)
@given(a=rule_sets, b=rule_sets)
def test_diff_turns_live_into_new(a, b) -> None:  # type: ignore[no-untyped-def]
    live, new = build(a), build(b)
    changes = diff_changes(live.snapshot(), new.snapshot())
    for c in changes:
        c.apply(live)
    assert rules_of(live) == rules_of(new)
    assert diff_changes(live.snapshot(), new.snapshot()) == []


def test_changes_from_snapshot_rebuilds_list_order() -> None:
    src = build(([(KEYS[0], "rr", {ADDRS[0]: (1, Fwd.MASQ), ADDRS[1]: (2, Fwd.MASQ)})], (900, 120, 300)))
    copy = Rules()
    for c in changes_from_snapshot(src.snapshot()):
        c.apply(copy)
    assert copy.snapshot() == src.snapshot()
