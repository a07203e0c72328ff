"""rr: worked sequences from the spec, confirmed on the real kernel (oracle examples)."""

from __future__ import annotations

from pylvs.core.sched.base import SchedEnv

from ..helpers import director_with, ip, syn


def picks(d, key, n):  # type: ignore[no-untyped-def]
    svc = d.services.get(key)
    return [str(svc.scheduler.schedule(syn(), SchedEnv()).addr) for _ in range(n)]


def test_rr_newest_first() -> None:
    d, key = director_with("rr", [("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)])
    assert picks(d, key, 6) == ["10.0.0.3", "10.0.0.2", "10.0.0.1"] * 2


def test_rr_delete_position_moves_to_predecessor() -> None:
    d, key = director_with("rr", [("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)])
    assert picks(d, key, 2) == ["10.0.0.3", "10.0.0.2"]
    d.del_dest(key, ip("10.0.0.2"), 80)
    assert picks(d, key, 3) == ["10.0.0.1", "10.0.0.3", "10.0.0.1"]


def test_rr_skips_weight_zero_and_fails_when_empty() -> None:
    d, key = director_with("rr", [("10.0.0.1", 0), ("10.0.0.2", 1)])
    assert picks(d, key, 2) == ["10.0.0.2", "10.0.0.2"]
    d2, key2 = director_with("rr", [("10.0.0.1", 0)])
    svc = d2.services.get(key2)
    assert svc is not None and svc.scheduler is not None
    assert svc.scheduler.schedule(syn(), SchedEnv()) is None
