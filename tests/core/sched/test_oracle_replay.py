"""Every scheduler oracle file (tests/data/oracle/sched/*.sim, answered by the real kernel through
kernel_sim.py into *.sim.out) replayed against our schedulers: the same server for every `open`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from .replay import kernel_picks, replay_file

DATA = Path(__file__).resolve().parents[2] / "data" / "oracle" / "sched"
CASES = sorted(p for p in DATA.glob("*.sim") if p.with_name(p.name + ".out").exists())


def test_there_are_oracle_files() -> None:
    assert len(CASES) >= 16


@pytest.mark.parametrize("sim", CASES, ids=lambda p: p.stem)
def test_replay_matches_kernel(sim: Path) -> None:
    assert replay_file(sim) == kernel_picks(sim.with_name(sim.name + ".out"))


def test_twos_shares_like_the_kernel() -> None:
    """statistical/twos-shares.sim: the kernel (6.12) gave weights 1:3:0 held shares 10:30:0."""
    sim = DATA / "statistical" / "twos-shares.sim"
    kernel = Counter(line.split()[1] for line in kernel_picks(sim.with_name(sim.name + ".out")))
    assert kernel == {"192.168.1.10:80": 10, "192.168.1.20:80": 30}
    for seed in range(20):
        ours = Counter(line.split()[1] for line in replay_file(sim, seed))
        assert set(ours) == set(kernel)
        assert 24 <= ours["192.168.1.20:80"] <= 35, (seed, ours)
