"""Connection entries against the real kernel: `conns` pairs under tests/data/oracle/simulate/conns/.

Those files add two events to the simulate format (here, in the test only): `conns`, the entries as
`ipvsadm -Lnc` lists them, sorted; and `sysctl NAME=VALUE` (net.ipv4.vs.NAME). They were played in the oracle VM by `kernel_sim_conns.py` (beside
them), which also wires real servers for direct routing. Every other line must match exactly; the
entries must match in protocol, state and addresses, and their time left within a few seconds (the
kernel's events take real time, ours none).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

pytest.importorskip("pylvs.ipvsadm.run")

from pylvs.ipvsadm.run import run_ipvsadm
from pylvs.simulate import Simulation

HERE = Path(__file__).parent / "data" / "oracle" / "simulate" / "conns"
PAIRS = sorted(p for p in HERE.glob("*.sim") if p.with_name(p.name + ".out").exists())
SLACK = 6  # seconds the kernel's clock may differ from ours at a `conns` event (its events take time)
ENTRY = re.compile(r"^(TCP|UDP|SCTP|IP) +\d+:\d\d ")


class ConnSim(Simulation):
    def event(self, line: str) -> int:
        if line.startswith("sysctl "):
            name, _, value = line.split()[1].partition("=")
            setattr(self.director.sysctl, name, int(value))
            return 0
        if line == "conns":
            self.director.tick(self.now)
            lines = run_ipvsadm(self.backend, ["-Lnc"], prog="ipvsadm").out.splitlines()
            self.out.write("conns:\n" + "".join(sorted(x + "\n" for x in lines[2:])))
            return 0
        return super().event(line)


def blocks(text: str) -> list[tuple[str, list[str]]]:
    """Split the output into ('line', [text]) and ('conns', [entries]) blocks."""
    out: list[tuple[str, list[str]]] = []
    in_conns = False
    for line in text.splitlines():
        if line == "conns:":
            out.append(("conns", []))
            in_conns = True
        elif in_conns and ENTRY.match(line):
            out[-1][1].append(line)
        else:
            in_conns = False
            out.append(("line", [line]))
    return out


def entry(line: str) -> tuple[tuple[str, ...], int]:
    proto, expire, state, src, vip, dst = line.split()
    m, s = expire.split(":")
    return (proto, state, src, vip, dst), int(m) * 60 + int(s)


@pytest.mark.parametrize("sim", PAIRS, ids=[p.name for p in PAIRS])
def test_connection_entries_match_kernel(sim: Path) -> None:
    out = io.StringIO()
    # the lab routes the real servers' replies through the director, for DR servers too
    assert ConnSim(out, dr_replies=True).run(sim.read_text(encoding="utf-8").splitlines()) == 0
    ours = blocks(out.getvalue())
    theirs = blocks(sim.with_name(sim.name + ".out").read_text(encoding="utf-8"))
    assert [k for k, _ in ours] == [k for k, _ in theirs]
    for (kind, a), (_, b) in zip(ours, theirs, strict=True):
        if kind == "line":
            assert a == b
            continue
        mine = sorted(entry(x) for x in a)
        kernel = sorted(entry(x) for x in b)
        assert [k for k, _ in mine] == [k for k, _ in kernel]
        for (k, left), (_, kleft) in zip(mine, kernel, strict=True):
            assert abs(left - kleft) <= SLACK, (k, left, kleft)
