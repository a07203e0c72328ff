"""lblc and lblcr: cache per destination address, set growth and shrinking, garbage collection."""

from __future__ import annotations

from pylvs.core.sched.base import SchedEnv
from pylvs.core.sched.lblc import LocalityLeastConnection
from pylvs.core.sched.lblcr import LocalityLeastConnectionReplicated
from pylvs.core.sched.locality import COUNT_FOR_FULL_EXPIRATION, MAX_SIZE
from pylvs.core.sysctl import Sysctls
from pylvs.core.types import DestConfig, Fwd, ServiceKey

from ..helpers import director_with, hold, ip, svc_of, syn


def test_lblc_cached_server_used_even_when_overload() -> None:
    # lblc-overload.sim: A=.1 w1, B=.2 w4 -x 2.
    d, key = director_with("lblc", [("10.0.0.1", 1)])
    d.add_dest(key, DestConfig(ip("10.0.0.2"), 80, Fwd.MASQ, 4, u_threshold=2))
    svc = svc_of(d, key)
    env = SchedEnv()
    assert [hold(svc, env) for _ in range(9)] == ["2"] * 5 + ["1"] * 4
    d.edit_dest(key, DestConfig(ip("10.0.0.1"), 80, Fwd.MASQ, 0))
    assert hold(svc, env) == "-"


def test_lblc_entry_per_destination_and_deleted_server() -> None:
    key = ServiceKey.for_fwmark(7)
    d, key = director_with("lblc", [("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 1)], key=key)
    svc = svc_of(d, key)
    env = SchedEnv()
    first = [hold(svc, env, f"10.9.0.{v}") for v in range(1, 6)]
    assert [hold(svc, env, f"10.9.0.{v}") for v in range(1, 6)] == first
    d.del_dest(key, ip("10.0.0.2"), 0)
    again = [hold(svc, env, f"10.9.0.{v}") for v in range(1, 6)]
    assert "2" not in again
    assert all(a == f for a, f in zip(again, first, strict=True) if f != "2")


def test_lblcr_set_growth() -> None:
    # lblcr-set-growth.sim: A=.1 w1, B=.2 w4, connections held.
    d, key = director_with("lblcr", [("10.0.0.1", 1), ("10.0.0.2", 4)])
    svc = svc_of(d, key)
    env = SchedEnv()
    got = [hold(svc, env) for _ in range(12)]
    assert got == ["2", "2", "2", "2", "2", "1", "1", "2", "2", "2", "1", "2"]
    sched = svc.scheduler
    assert isinstance(sched, LocalityLeastConnectionReplicated)
    en = sched.table.get(ip("172.25.254.100"))
    assert en is not None
    assert [str(m.addr) for m in en.value.members] == ["10.0.0.1", "10.0.0.2"]


def test_lblcr_set_sheds_busiest_member_after_expiration() -> None:
    d, key = director_with("lblcr", [("10.0.0.1", 1), ("10.0.0.2", 4)])
    d.sysctl.lblcr_expiration = 100
    svc = svc_of(d, key)
    env = SchedEnv(sysctl=d.sysctl)
    for _ in range(7):
        hold(svc, env)
    sched = svc.scheduler
    assert isinstance(sched, LocalityLeastConnectionReplicated)
    en = sched.table.get(ip("172.25.254.100"))
    assert en is not None and len(en.value.members) == 2
    lastmod = en.value.lastmod
    env.now = lastmod + 100  # not yet: the kernel needs now > lastmod + expiration
    hold(svc, env)
    assert len(en.value.members) == 2
    env.now = lastmod + 101
    busiest = max(en.value.members, key=lambda m: ((m.activeconns << 8) + m.total) / m.weight)
    hold(svc, env)
    assert busiest not in en.value.members and len(en.value.members) == 1
    assert en.value.lastmod == env.now


def test_gc_full_check_every_30th_run() -> None:
    for name, attr in (("lblc", "lblc_expiration"), ("lblcr", "lblcr_expiration")):
        sysctl = Sysctls()
        setattr(sysctl, attr, 600)
        d, key = director_with(name, [("10.0.0.1", 1)])
        svc = svc_of(d, key)
        sched = svc.scheduler
        assert isinstance(sched, LocalityLeastConnection | LocalityLeastConnectionReplicated)
        env = SchedEnv(now=0.0, sysctl=sysctl)
        sched.tick(env)  # the timer starts: first run at 60 s
        hold(svc, env, "10.9.0.1")
        assert len(sched.table.entries) == 1
        # Runs at 60, 120, ..., the 30th at 1800 s does the full check (unused for >= 600 s).
        env.now = 60.0 * (COUNT_FOR_FULL_EXPIRATION - 1)
        sched.tick(env)
        assert len(sched.table.entries) == 1
        env.now = 60.0 * COUNT_FOR_FULL_EXPIRATION
        sched.tick(env)
        assert len(sched.table.entries) == 0, name


def test_gc_partial_when_table_is_too_big() -> None:
    d, key = director_with("lblc", [("10.0.0.1", 1)])
    svc = svc_of(d, key)
    sched = svc.scheduler
    assert isinstance(sched, LocalityLeastConnection)
    env = SchedEnv()
    sched.tick(env)
    table = sched.table
    for i in range(MAX_SIZE + 300):
        table.add(ip(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"), 0.0, svc.dests[0])
    env.now = 60.0  # entries unused for 60 s only: nothing is older than 6 minutes
    sched.tick(env)
    assert len(table.entries) == MAX_SIZE + 300
    env.now = 420.0  # runs at 120..420; the first one after 6 minutes removes (300*4/3) = 400
    sched.tick(env)
    assert MAX_SIZE - 200 <= len(table.entries) <= MAX_SIZE


def test_lblcr_no_entry_and_nothing_eligible_fails_silently() -> None:
    d, key = director_with("lblcr", [("10.0.0.1", 0)])
    svc = svc_of(d, key)
    assert svc.scheduler is not None
    assert svc.scheduler.schedule(syn(), SchedEnv()) is None
    assert svc.scheduler.last_fail_text == ""
