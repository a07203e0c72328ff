"""The indexed least-load schedulers (lc wlc sed nq fo ovf, and the wlc step of lblc/lblcr) against literal translations of the
kernel's list scans, over random histories of adds, deletes, edits (weight 0, thresholds),
connections bound, made inactive and released, and scheduler switches."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.director import Director
from pylvs.core.sched.base import SchedEnv, conn_overhead
from pylvs.core.sched.index import ratio_key
from pylvs.core.sched.locality import LocalityScheduler
from pylvs.core.service import RealServer
from pylvs.core.types import DestConfig, Fwd, ServiceConfig

from ..helpers import ip, syn, tcp_svc

Scan = Callable[[list[RealServer]], RealServer | None]


def _weighted_min(dests: list[RealServer], load: Callable[[RealServer], int]) -> RealServer | None:
    # wlc/sed: first usable server, then replace on a strictly smaller cross-multiplied load.
    least: RealServer | None = None
    loh = 0
    for d in dests:
        if least is None:
            if not d.overload and d.weight > 0:
                least, loh = d, load(d)
            continue
        if d.overload:
            continue
        doh = load(d)
        if loh * d.weight > doh * least.weight:
            least, loh = d, doh
    return least


def scan_lc(dests: list[RealServer]) -> RealServer | None:
    least: RealServer | None = None
    loh = 0
    for d in dests:
        if d.overload or d.weight == 0:
            continue
        doh = conn_overhead(d)
        if least is None or doh < loh:
            least, loh = d, doh
    return least


def scan_wlc(dests: list[RealServer]) -> RealServer | None:
    return _weighted_min(dests, conn_overhead)


def scan_sed(dests: list[RealServer]) -> RealServer | None:
    return _weighted_min(dests, lambda d: d.activeconns + 1)


def scan_nq(dests: list[RealServer]) -> RealServer | None:
    least: RealServer | None = None
    loh = 0
    for d in dests:
        if d.overload or not d.weight:
            continue
        doh = d.activeconns + 1
        if d.activeconns == 0:
            return d
        if least is None or loh * d.weight > doh * least.weight:
            least, loh = d, doh
    return least


def scan_fo(dests: list[RealServer]) -> RealServer | None:
    best, hw = None, 0
    for d in dests:
        if not d.overload and d.weight > hw:
            best, hw = d, d.weight
    return best


def scan_ovf(dests: list[RealServer]) -> RealServer | None:
    best: RealServer | None = None
    for d in dests:
        w = d.weight
        if d.overload or d.activeconns > w or w == 0:
            continue
        if best is None or w > best.weight:
            best = d
    return best


SCANS: dict[str, Scan] = {
    "lc": scan_lc,
    "wlc": scan_wlc,
    "sed": scan_sed,
    "nq": scan_nq,
    "fo": scan_fo,
    "ovf": scan_ovf,
}

WEIGHTS = st.one_of(
    st.integers(0, 6), st.sampled_from([2, 257, 513, 65535, 2**31 - 1]), st.integers(0, 2**31 - 1)
)
OPS = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 11), WEIGHTS, st.sampled_from([0, 0, 1, 2, 3, 5])),
    st.tuples(st.just("del"), st.integers(0, 11)),
    st.tuples(st.just("edit"), st.integers(0, 11), WEIGHTS, st.sampled_from([0, 1, 2, 4]), st.integers(0, 2)),
    st.tuples(st.just("bind"), st.integers(0, 11), st.booleans()),
    st.tuples(st.just("idle"), st.integers(0, 11)),
    st.tuples(st.just("release"), st.integers(0, 11), st.booleans()),
    st.tuples(st.just("pick")),
    st.tuples(st.just("pick")),
    st.tuples(st.just("switch"), st.sampled_from([*sorted(SCANS), "lblc", "lblcr"])),
)


def _addr(i: int) -> str:
    return f"192.168.1.{10 + i}"


def _bind(d: RealServer, active: bool) -> None:
    d.bind_conn()
    if active:
        d.activeconns += 1


def _release(d: RealServer, active: bool) -> None:
    if active and d.activeconns > 0:
        d.unbind_conn(True)
    elif d.total > d.activeconns:
        d.unbind_conn(False)


def run_history(sched: str, ops: list[tuple[object, ...]]) -> None:
    director = Director()
    key = tcp_svc()
    director.add_service(key, ServiceConfig(scheduler=sched))
    svc = director.services.get(key)
    assert svc is not None
    trashed: list[RealServer] = []
    env = SchedEnv()

    def notify(d: RealServer) -> None:
        assert svc is not None and svc.scheduler is not None
        svc.scheduler.load_changed(d)

    for op in ops:
        kind = op[0]
        if kind == "add":
            _, i, w, u = op
            if svc.find_dest(ip(_addr(int(i))), 80) is None:  # type: ignore[call-overload]
                director.add_dest(key, DestConfig(ip(_addr(i)), 80, Fwd.MASQ, w, u_threshold=u))  # type: ignore[arg-type]
        elif kind in ("del", "edit", "bind", "idle", "release"):
            if not svc.dests and not trashed:
                continue
            pool = svc.dests + trashed if kind == "release" else svc.dests
            if not pool:
                continue
            d = pool[int(op[1]) % len(pool)]  # type: ignore[call-overload]
            if kind == "del":
                director.del_dest(key, d.addr, d.port)
                trashed.append(d)
            elif kind == "edit":
                _, _, w, u, lo = op
                lo = min(int(lo), int(u))  # type: ignore[call-overload]
                director.edit_dest(key, DestConfig(d.addr, 80, Fwd.MASQ, w, u_threshold=u, l_threshold=lo))  # type: ignore[arg-type]
            elif kind == "bind":
                _bind(d, bool(op[2]))
                notify(d)
            elif kind == "idle":
                if d.activeconns > 0:
                    d.activeconns -= 1
                    notify(d)
            else:
                _release(d, bool(op[2]))
                notify(d)
        elif kind == "pick":
            assert svc.scheduler is not None
            got = svc.scheduler.schedule(syn(), env)
            if got is not None:
                _bind(got, True)
                notify(got)
        elif kind == "switch":
            director.edit_service(key, ServiceConfig(scheduler=str(op[1])))
        sched_now = svc.scheduler
        assert sched_now is not None
        if isinstance(sched_now, LocalityScheduler):
            # lblc/lblcr: their wlc step and their "some server below half its weight" test.
            assert sched_now.least.best() is scan_wlc(svc.dests)
            assert bool(sched_now.below_half) == any(2 * x.activeconns < x.weight for x in svc.dests)
            continue
        want = SCANS[svc.scheduler_name](svc.dests)
        assert sched_now.schedule(syn(), env) is want, (svc.scheduler_name, svc.dests)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([*sorted(SCANS), "lblc", "lblcr"]), st.lists(OPS, max_size=60))
def test_index_gives_the_scan_answer(sched: str, ops: list[tuple[object, ...]]) -> None:
    run_history(sched, ops)


def test_ties_go_to_the_newest_server() -> None:
    for sched in SCANS:
        run_history(sched, [("add", i, 1, 0) for i in range(5)])


@settings(max_examples=500, deadline=None)
@given(
    st.integers(0, 2**40),
    st.integers(1, 2**31 - 1),
    st.integers(0, 2**40),
    st.integers(1, 2**31 - 1),
)
def test_ratio_key_orders_like_cross_multiplication(a: int, b: int, c: int, d: int) -> None:
    ka, kc = ratio_key(a, b), ratio_key(c, d)
    assert (ka < kc) == (a * d < c * b)
    assert (ka == kc) == (a * d == c * b)


@given(st.integers(1, 2**31 - 2), st.integers(0, 2**31 - 1))
def test_ratio_key_near_ties(w: int, k: int) -> None:
    # Adjacent fractions k/w and (k*(w+1)+1)/(w*(w+1)) style near-ties with the largest weights.
    assert ratio_key(k, w) < ratio_key(k * (w + 1) + 1, w * (w + 1)) if w * (w + 1) < 2**62 else True
    assert ratio_key(k * 2, w * 2) == ratio_key(k, w) if w * 2 < 2**31 else True
