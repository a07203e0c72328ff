"""Every scheduler oracle file (tests/data/oracle/sched/*.sim, answered by the real kernel through
kernel_sim.py into *.sim.out) replayed against our schedulers: the same server for every `open`."""

from __future__ import annotations

from pathlib import Path

import pytest

from .replay import kernel_picks, replay_file

DATA = Path(__file__).resolve().parents[2] / "data" / "oracle" / "sched"
CASES = sorted(p for p in DATA.glob("*.sim") if p.with_name(p.name + ".out").exists())


def test_there_are_oracle_files() -> None:
    assert len(CASES) >= 16


@pytest.mark.parametrize("sim", [p for p in CASES if "twos" not in p.name], ids=lambda p: p.stem)
def test_replay_matches_kernel(sim: Path) -> None:
    assert replay_file(sim) == kernel_picks(sim.with_name(sim.name + ".out"))
