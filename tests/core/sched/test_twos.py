"""twos: reproducible with an injected random source; weights and loads steer it."""

from __future__ import annotations

import random
from collections import Counter

from pylvs.core.sched.base import SchedEnv
from pylvs.core.types import DestConfig, Fwd

from ..helpers import director_with, ip, syn


def test_twos_replays_with_the_same_seed() -> None:
    runs = []
    for _ in range(2):
        d, key = director_with("twos", [("10.0.0.1", 1), ("10.0.0.2", 3), ("10.0.0.3", 2)])
        svc = d.services.get(key)
        assert svc is not None and svc.scheduler is not None
        env = SchedEnv(rng=random.Random(42))
        seq = []
        for _ in range(50):
            r = svc.scheduler.schedule(syn(), env)
            assert r is not None
            r.bind_conn()
            r.activeconns += 1
            seq.append(str(r.addr))
        runs.append(seq)
    assert runs[0] == runs[1]


def test_twos_draws_r_in_0_to_w_inclusive() -> None:
    # r = 0 and r = W both exist; r <= w1 picks the first eligible server.
    d, key = director_with("twos", [("10.0.0.1", 2), ("10.0.0.2", 3)])
    svc = d.services.get(key)
    assert svc is not None and svc.scheduler is not None

    class Fixed(random.Random):
        def __init__(self, values: list[int]) -> None:
            super().__init__(0)
            self.values = values

        def randrange(self, n: int, *args: object, **kw: object) -> int:  # type: ignore[override]
            assert n == 6  # W + 1
            return self.values.pop(0)

    # list order .2 (w3), .1 (w2): r=3 -> .2 (3-3=0), r=4 -> .1
    env = SchedEnv(rng=Fixed([3, 4]))
    r = svc.scheduler.schedule(syn(), env)
    assert r is not None and str(r.addr) == "10.0.0.2"  # equal load: choice1 wins
    svc.dests[0].activeconns = 1
    env = SchedEnv(rng=Fixed([3, 4]))
    r = svc.scheduler.schedule(syn(), env)
    assert r is not None and str(r.addr) == "10.0.0.1"


def test_twos_shares_and_weight_zero() -> None:
    d, key = director_with("twos", [("10.0.0.1", 1), ("10.0.0.2", 3), ("10.0.0.3", 0)])
    d.add_dest(key, DestConfig(ip("10.0.0.4"), 80, Fwd.MASQ, 5, u_threshold=1))
    svc = d.services.get(key)
    assert svc is not None and svc.scheduler is not None
    svc.dests[0].bind_conn()  # .4 is OVERLOAD
    env = SchedEnv(rng=random.Random(7))
    c: Counter[str] = Counter()
    for _ in range(400):
        r = svc.scheduler.schedule(syn(), env)
        assert r is not None
        r.bind_conn()
        r.activeconns += 1
        c[str(r.addr)] += 1
    assert set(c) == {"10.0.0.1", "10.0.0.2"}
    assert 2.0 < c["10.0.0.2"] / c["10.0.0.1"] < 4.0
