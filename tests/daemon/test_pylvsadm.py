"""pylvsadm against a running pylvsd: the seed article's commands, -R as one transaction, -S, and
the one-line error when the daemon is not there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Pylvsd, needs_save

pytest.importorskip("pylvs.cli.pylvsadm")


def pylvsadm(d: Pylvsd | str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    sock = d if isinstance(d, str) else d.socket
    env = {**os.environ, "PYLVS_SOCKET": sock}
    return subprocess.run(
        [sys.executable, "-m", "pylvs.cli.pylvsadm", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_seed_commands_and_listing(ephemeral: Pylvsd) -> None:
    for cmd in (
        "-A -t 172.25.254.100:80 -s rr",
        "-a -t 172.25.254.100:80 -r 192.168.1.10:80 -m",
        "-a -t 172.25.254.100:80 -r 192.168.1.20:80 -m",
    ):
        r = pylvsadm(ephemeral, *cmd.split())
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = pylvsadm(ephemeral, "-Ln")
    assert r.returncode == 0
    assert r.stdout.splitlines()[3:] == [
        "TCP  172.25.254.100:80 rr",
        "  -> 192.168.1.10:80              Masq    1      0          0         ",
        "  -> 192.168.1.20:80              Masq    1      0          0         ",
    ]  # ipvsadm sorts; --nosort shows the kernel's order (newest first)
    r = pylvsadm(ephemeral, "-Ln", "--nosort")
    assert [ln[:22] for ln in r.stdout.splitlines()[4:]] == [
        "  -> 192.168.1.20:80  ",
        "  -> 192.168.1.10:80  ",
    ]
    r = pylvsadm(ephemeral, "-Sn")
    assert r.stdout == (
        "-A -t 172.25.254.100:80 -s rr\n"
        "-a -t 172.25.254.100:80 -r 192.168.1.10:80 -m -w 1\n"
        "-a -t 172.25.254.100:80 -r 192.168.1.20:80 -m -w 1\n"
    )


def test_refusal_message_and_exit_code(ephemeral: Pylvsd) -> None:
    r = pylvsadm(ephemeral, "-D", "-t", "1.1.1.1:80")
    assert (r.returncode, r.stdout, r.stderr) == (255, "", "No such service\n")


def test_restore_is_one_transaction(ephemeral: Pylvsd) -> None:
    pylvsadm(ephemeral, "-A", "-t", "10.0.0.1:80", "-s", "wlc")
    before = pylvsadm(ephemeral, "-Sn").stdout
    bad = "-A -t 10.0.0.2:80 -s rr\n-a -t 10.0.0.2:80 -r 192.168.1.1:80 -m\n-a -t 10.0.0.3:80 -r 192.168.1.1 -m\n"
    r = pylvsadm(ephemeral, "-R", stdin=bad)
    assert r.returncode == 255
    assert r.stderr.startswith("Service not defined\n") and "line 3" in r.stderr
    assert pylvsadm(ephemeral, "-Sn").stdout == before
    good = "-A -t 10.0.0.2:80 -s rr\n-a -t 10.0.0.2:80 -r 192.168.1.1:80 -m\n"
    assert pylvsadm(ephemeral, "-R", stdin=good).returncode == 0
    assert pylvsadm(ephemeral, "-Sn").stdout == before + good.replace(" -m\n", " -m -w 1\n")


def test_not_running_is_one_line(tmp_path: Path) -> None:
    sock = str(tmp_path / "none.sock")
    r = pylvsadm(sock, "-Ln")
    assert r.returncode != 0 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and sock in r.stderr


@needs_save
def test_pylvsadm_changes_survive_restart(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    pylvsadm(d, "-A", "-u", "10.1.1.1:53", "-s", "sh")
    pylvsadm(d, "-a", "-u", "10.1.1.1:53", "-r", "192.168.1.5:53", "-m", "-w", "3")
    saved = pylvsadm(d, "-Sn").stdout
    d.kill9()
    d2 = make_daemon().start()
    assert pylvsadm(d2, "-Sn").stdout == saved
    d2.stop()


def test_restore_names_the_first_bad_line(ephemeral: Pylvsd) -> None:
    """pylvsd plays -R line by line on its own copy: a refusal on line 2 is reported even though
    line 3 does not parse (ipvsadm would have stopped at line 2 too)."""
    text = "-A -t 10.9.0.1:80\n-A -t 10.9.0.1:80\n-A -t 10.9.0.2:80 --bogus\n"
    r = pylvsadm(ephemeral, "-R", stdin=text)
    assert (r.returncode, r.stdout) == (255, "")
    assert r.stderr.startswith("Service already exists\n")
    assert r.stderr.endswith(": restore rejected at line 2; no rule was changed\n")
    assert pylvsadm(ephemeral, "-Sn").stdout == ""


def test_every_command_runs_in_the_daemon_and_prints_as_locally(ephemeral: Pylvsd, tmp_path: Path) -> None:
    """The same bytes and exit code whether pylvsd runs the command line (POST /ipvsadm) or pylvsadm
    does without a daemon (help, usage errors, names with undecodable bytes)."""

    def run(sock: str, *args: str) -> tuple[int, bytes, bytes]:
        env = {**os.environ, "PYLVS_SOCKET": sock}
        argv = [sys.executable, "-m", "pylvs.cli.pylvsadm", *args]
        p = subprocess.run(argv, env=env, capture_output=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    none = str(tmp_path / "none.sock")
    for args in (
        ["-h"],
        ["--bogus\udcff"],
        ["-A", "-t", "host\udcff:80"],
        ["-a", "-t", "1.2.3.4:80", "-w", "x"],
    ):
        assert run(ephemeral.socket, *args) == run(none, *args), args  # no rules needed: parsed alike
    code, out, err = run(ephemeral.socket, "-A", "-t", "10.0.0.1:80", "-s", "r\udcffr")
    assert (code, out) == (255, b"") and err.endswith(b" not found\n")
    code, out, err = run(ephemeral.socket, "-L", "-n", "--stats", "--rate")
    assert (code, err) == (0, b"") and b"Conns   InPkts" in out  # --stats wins, as in ipvsadm


def test_a_connection_lost_mid_command_is_not_run_again(tmp_path: Path) -> None:
    """pylvsd took the command and vanished before answering: pylvsadm says so (ipvsadm's init
    failure, exit 2) and does not send it a second time the long way."""
    import socket
    import threading

    sock_path = str(tmp_path / "half.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(4)
    accepted: list[bytes] = []

    def serve() -> None:
        srv.settimeout(20)
        try:
            while True:
                c, _ = srv.accept()
                accepted.append(c.recv(65536))
                c.close()  # no answer
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        r = pylvsadm(sock_path, "-A", "-t", "10.0.0.1:80")
    finally:
        srv.close()
        t.join(5)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(
        f"Can't initialize ipvs: pylvsd is not running on {sock_path} (connection lost"
    )
    assert len(accepted) == 1 and accepted[0].startswith(b"POST /ipvsadm ")
