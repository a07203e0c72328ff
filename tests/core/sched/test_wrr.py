"""wrr: the spec's worked sequences (confirmed by wrr-*.sim oracle files) and exact per-cycle shares."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.sched.base import SchedEnv
from pylvs.core.sched.wrr import OVERLOADED_TEXT
from pylvs.core.types import DestConfig, Fwd, ServiceConfig

from ..helpers import director_with, ip, syn


def picks(d, key, n):  # type: ignore[no-untyped-def]
    svc = d.services.get(key)
    out = []
    for _ in range(n):
        r = svc.scheduler.schedule(syn(), SchedEnv())
        out.append(str(r.addr)[-1] if r else "-")
    return "".join(out)


def test_wrr_initialised_with_432() -> None:
    d, key = director_with("rr", [("10.0.0.1", 4), ("10.0.0.2", 3), ("10.0.0.3", 2)])
    d.edit_service(key, ServiceConfig(scheduler="wrr"))
    # A=1 B=2 C=3: A B A C B A C B A, repeating.
    assert picks(d, key, 18) == "121321321" * 2


def test_wrr_321_added_one_by_one() -> None:
    d, key = director_with("wrr", [("10.0.0.1", 3), ("10.0.0.2", 1), ("10.0.0.3", 2)])
    assert picks(d, key, 15) == "321" + "131321" * 2


def test_wrr_42_gcd() -> None:
    d, key = director_with("wrr", [("10.0.0.1", 4), ("10.0.0.2", 2)])
    assert picks(d, key, 6) == "211211"


def test_wrr_failure_texts() -> None:
    d, key = director_with("wrr", [("10.0.0.1", 0)])
    svc = d.services.get(key)
    assert svc is not None and svc.scheduler is not None
    assert svc.scheduler.schedule(syn(), SchedEnv()) is None
    assert svc.scheduler.last_fail_text == "no destination available"
    d.edit_dest(key, DestConfig(ip("10.0.0.1"), 80, Fwd.MASQ, 2, u_threshold=1))
    dest = svc.dests[0]
    dest.bind_conn()
    assert dest.overload
    assert svc.scheduler.schedule(syn(), SchedEnv()) is None
    assert svc.scheduler.last_fail_text == OVERLOADED_TEXT


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=6))
def test_wrr_exact_shares_per_cycle(weights: list[int]) -> None:
    d, key = director_with("wrr", [(f"10.0.0.{i + 1}", w) for i, w in enumerate(weights)])
    svc = d.services.get(key)
    assert svc is not None and svc.scheduler is not None
    total = sum(weights)
    if total == 0:
        assert svc.scheduler.schedule(syn(), SchedEnv()) is None
        return
    # Skip the partial first round (cw starts wherever the adds left it), then count whole cycles.
    seen = [svc.scheduler.schedule(syn(), SchedEnv()) for _ in range(total * 4)]
    counts = {f"10.0.0.{i + 1}": 0 for i in range(len(weights))}
    for r in seen[total * 2 :]:
        assert r is not None
        counts[str(r.addr)] += 1
    for i, w in enumerate(weights):
        assert counts[f"10.0.0.{i + 1}"] == 2 * w
