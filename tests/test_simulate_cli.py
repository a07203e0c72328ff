"""`pylvs simulate`: the command, bad input, and the packet sequences each event stands for."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("pylvs.ipvsadm.run")

from pylvs.cli.pylvs import main
from pylvs.ipvsadm.run import run_ipvsadm
from pylvs.simulate import Simulation, simulate


def play(text: str) -> tuple[int, str, Simulation]:
    out = io.StringIO()
    sim = Simulation(out)
    rc = sim.run(text.strip().splitlines())
    return rc, out.getvalue(), sim


def states(sim: Simulation) -> list[tuple[str, str, int]]:
    return sorted(
        (v.state, f"{v.caddr}:{v.cport}", v.expires) for v in sim.director.connections_view(sim.now)
    )


def test_file_and_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 192.168.1.1:80 -m\nopen 1 tcp 1.1.1.1:1000 10.0.0.1:80\n"
    f = tmp_path / "a.sim"
    f.write_text(text)
    assert main(["simulate", str(f)]) == 0
    assert capsys.readouterr().out == "1 192.168.1.1:80\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert main(["simulate"]) == 0
    assert capsys.readouterr().out == "1 192.168.1.1:80\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("frobnicate", "unknown event"),
        ("open 1 icmp 1.1.1.1:1 10.0.0.1:80", "unknown protocol"),
        ("open 1 tcp 1.1.1:1 10.0.0.1:80", "bad address"),
        ("open 1 tcp 1.1.1.1:99999 10.0.0.1:80", "bad port"),
        ("open 1 tcp 1.1.1.1 10.0.0.1:80", "address:port expected"),
        ("open 1 tcp [::1]:5 10.0.0.1:80", "different families"),
        ("open 1 tcp 1.1.1.1:1 10.0.0.1:80 mark x", "bad mark"),
        ("open 1 tcp", "usage: open"),
        ("time -1", "before the current time"),
        ("time soon", "bad time"),
        ("close", "usage: close"),
        ("list now", "list takes no arguments"),
        ('open "1 tcp', "cannot split"),
    ],
)
def test_bad_lines(line: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert simulate(["# comment", "", line, "list"], out) == 2
    err = capsys.readouterr().err
    assert err.startswith("pylvs simulate: line 3: ") and message in err
    assert out.getvalue() == ""


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "/nonexistent/x.sim"]) == 2
    assert "No such file" in capsys.readouterr().err


def test_rejected_rule_stops_with_ipvsadm_message() -> None:
    rc, out, _ = play("-a -t 10.0.0.1:80 -r 192.168.1.1:80\nlist\n")
    assert rc == 1 and out == "Service not defined\n"


def test_nat_tcp_open_close_reset_states() -> None:
    rc, out, sim = play(
        """
        -A -t 10.0.0.1:80 -s rr
        -a -t 10.0.0.1:80 -r 192.168.1.1:8080 -m
        open 1 tcp 1.1.1.1:1001 10.0.0.1:80
        open 2 tcp 1.1.1.1:1002 10.0.0.1:80
        open 3 tcp 1.1.1.1:1003 10.0.0.1:80
        close 2
        reset 3
        close 99
        """
    )
    assert rc == 0 and out == "1 192.168.1.1:8080\n2 192.168.1.1:8080\n3 192.168.1.1:8080\n"
    assert states(sim) == [
        ("CLOSE", "1.1.1.1:1003", 10),
        ("ESTABLISHED", "1.1.1.1:1001", 900),
        ("TIME_WAIT", "1.1.1.1:1002", 120),
    ]
    st = sim.director.services.tot_stats.shown()
    assert st[0] == 3 and st[1] == 3 * 3 + 2 + 1 and st[2] == 3 * 2 + 2  # conns, inpkts, outpkts


def test_dr_sees_only_the_client_side() -> None:
    rc, out, sim = play(
        """
        -A -t 10.0.0.1:80 -s rr
        -a -t 10.0.0.1:80 -r 192.168.1.1 -g
        open 1 tcp 1.1.1.1:1001 10.0.0.1:80
        open 2 tcp 1.1.1.1:1002 10.0.0.1:80
        close 2
        -A -u 10.0.0.1:53 -s rr
        -a -u 10.0.0.1:53 -r 192.168.1.1 -g
        open 3 udp 1.1.1.1:1003 10.0.0.1:53
        """
    )
    assert rc == 0 and out == "1 192.168.1.1:80\n2 192.168.1.1:80\n3 192.168.1.1:53\n"
    assert states(sim) == [
        ("ESTABLISHED", "1.1.1.1:1001", 900),
        ("FIN_WAIT", "1.1.1.1:1002", 120),
        ("UDP", "1.1.1.1:1003", 300),
    ]
    assert sim.director.services.tot_stats.shown()[2] == 0  # no replies seen


def test_sctp_and_ipv6() -> None:
    rc, out, sim = play(
        """
        -A --sctp-service 10.0.0.1:9 -s rr
        -a --sctp-service 10.0.0.1:9 -r 192.168.1.1 -m
        open 1 sctp 1.1.1.1:1001 10.0.0.1:9
        open 2 sctp 1.1.1.1:1002 10.0.0.1:9
        close 2
        -A -t [2001:db8::1]:80 -s rr
        -a -t [2001:db8::1]:80 -r [2001:db8:1::5]:80 -m
        open 3 tcp [2001:db8::9]:1003 [2001:db8::1]:80
        open 4 tcp [2001:db8::9]:1004 [2001:db8::2]:80
        """
    )
    assert rc == 0
    assert out == "1 192.168.1.1:9\n2 192.168.1.1:9\n3 [2001:db8:1::5]:80\n4 none\n"
    assert [s for s, _, _ in states(sim)] == ["CLOSED", "ESTABLISHED", "ESTABLISHED"]


def test_time_expires_and_logs(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    lines = [
        "-A -u 10.0.0.1:53 -s wlc",
        "open 1 udp 1.1.1.1:1 10.0.0.1:53",
        "-a -u 10.0.0.1:53 -r 192.168.1.1 -m",
        "open 2 udp 1.1.1.1:2 10.0.0.1:53",
        "time 299.5",
        "list",
        "time 300",
        "list",
    ]
    import sys

    sim = Simulation(out, log=sys.stderr)
    assert sim.run(lines) == 0
    text = out.getvalue()
    assert text.startswith("1 none\n2 192.168.1.1:53\n")
    assert "Masq    1      0          1" in text and text.rstrip().endswith("Masq    1      0          0")
    assert "IPVS: wlc: UDP 10.0.0.1:53 - no destination available" in capsys.readouterr().err
    assert run_ipvsadm(sim.backend, ["-Lnc"], prog="ipvsadm").out.count("\n") == 2
