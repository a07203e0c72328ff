"""`pylvs simulate` against the real kernel: every `*.sim` + `*.sim.out` pair under tests/data/oracle/."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("pylvs.ipvsadm.run")

from pylvs.simulate import simulate

ORACLE = Path(__file__).parent / "data" / "oracle"
# simulate/conns/ holds pairs with the test-only `conns` event: test_simulate_conns_oracle.py plays them
PAIRS = sorted(
    p
    for p in ORACLE.rglob("*.sim")
    if p.with_name(p.name + ".out").exists() and p.parent.relative_to(ORACLE).parts != ("simulate", "conns")
)
# Pairs under a `statistical/` folder come from random schedulers (twos): their kernel answer is one
# draw, so they are compared by the scheduler's own tests, not line for line here.
RANDOM = "statistical"


def test_pairs_found() -> None:
    assert len([p for p in PAIRS if p.parent.name == "simulate"]) >= 15


@pytest.mark.parametrize("sim", PAIRS, ids=[str(p.relative_to(ORACLE)) for p in PAIRS])
def test_simulate_matches_kernel(sim: Path) -> None:
    if RANDOM in sim.relative_to(ORACLE).parts:
        pytest.skip("random scheduler: one draw of the kernel, not comparable line for line")
    out = io.StringIO()
    rc = simulate(sim.read_text(encoding="utf-8").splitlines(), out)
    expected = sim.with_name(sim.name + ".out").read_text(encoding="utf-8")
    assert out.getvalue().splitlines() == expected.splitlines()
    if sim.name.startswith("reject-"):
        assert rc == 1
    else:
        assert rc == 0
