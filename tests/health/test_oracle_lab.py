"""The checker-driven oracle files run through pylvs in a lab of our own namespaces, compared with
what keepalived 2.2.7 programmed into real IPVS for the same files (tests/data/oracle/keepalived/out).

The director namespace has no route out: the 192.168.201.0/24 real servers exist only in the lab.
"""

from __future__ import annotations

import pytest

from .netns import ORACLE, can_netns, run_two_phases

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(not can_netns(), reason="needs root and ip netns"),
]


NAMES = ["ka-checks", "ka-quorum", "ka-quorum2", "ka-sorry"]


def test_checker_outcomes_match_keepalived() -> None:
    results = run_two_phases([ORACLE / f"{n}.conf" for n in NAMES])
    for name in NAMES:
        first, second = results[ORACLE / f"{name}.conf"]
        for phase, got in (("phase1", first), ("phase2", second)):
            want = sorted((ORACLE / "out" / f"{name}.{phase}.Sn").read_text().splitlines())
            assert sorted(got.splitlines()) == want, f"{name} {phase}"
