"""pylvsadm, pylvsadm-save and pylvsadm-restore as commands."""

from __future__ import annotations

import pytest

from pylvs.cli import pylvsadm
from pylvs.core.director import Director
from pylvs.ipvsadm.backend import LocalBackend
from pylvs.ipvsadm.run import run_ipvsadm


def test_no_daemon_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    path = f"{tmp_path}/nothing.sock"
    monkeypatch.setenv("PYLVS_SOCKET", path)
    assert pylvsadm.main(["-Ln"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"Can't initialize ipvs: pylvsd is not running on {path} (")
    assert err.count("\n") == 1
    assert pylvsadm.save_main(["-n"]) == 2
    assert pylvsadm.restore_main([]) == 2


def test_save_wrapper_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert pylvsadm.save_main(["-x"]) == 1
    assert capsys.readouterr().err == (
        "pylvsadm-save: Script to save the IPVS table to stdout.\n"
        "   With the -n option, prints out the table in numeric format.\n"
    )


def test_restore_wrapper_clears_drops_comments_and_is_one_transaction() -> None:
    b = LocalBackend(Director(), lambda: 0.0)
    assert run_ipvsadm(b, ["-A", "-t", "10.0.0.9:80"]).code == 0
    good = "# saved\n-A -t 10.0.0.1:80 -s rr\n#x\n-a -t 10.0.0.1:80 -r 10.0.0.2 -m\n"
    assert pylvsadm.restore_result(b, good).code == 0
    assert (
        run_ipvsadm(b, ["-Sn"]).out == "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m -w 1\n"
    )
    bad = "# saved\n-A -t 10.0.0.3:80 -s rr\n  # indented\n"
    r = pylvsadm.restore_result(b, bad)
    assert r.code == 255
    assert r.err.splitlines() == [
        "Try `pylvsadm -h' or 'pylvsadm --help' for more information.",
        "pylvsadm: restore rejected at line 3; no rule was changed",
    ]
    assert run_ipvsadm(b, ["-Sn"]).out.startswith("-A -t 10.0.0.1:80 -s rr\n")


def test_restore_with_listing_lines_and_help() -> None:
    b = LocalBackend(Director(), lambda: 0.0)
    r = run_ipvsadm(b, ["-R"], stdin="-A -t 10.0.0.1:80 -s rr\n-Sn\n-v\n-A -t 10.0.0.2:80\n")
    assert r.code == 0
    assert r.out == "-A -t 10.0.0.1:80 -s rr\nipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n"
    assert run_ipvsadm(b, ["-Sn"]).out == "-A -t 10.0.0.1:80 -s rr\n"


def test_batch_errors_name_the_line_in_a_live_table() -> None:
    b = LocalBackend(Director(), lambda: 0.0)
    assert run_ipvsadm(b, ["-A", "-t", "10.0.0.1:80"]).code == 0
    r = run_ipvsadm(b, ["-R"], stdin="-A -t 10.0.0.2:80\n\n-a -t 10.0.0.3:80 -r 10.9.9.9\n")
    assert (r.code, r.err) == (
        255,
        "Service not defined\nipvsadm: restore rejected at line 3; no rule was changed\n",
    )
    assert run_ipvsadm(b, ["-Sn"]).out == "-A -t 10.0.0.1:80 -s wlc\n"


def test_undecodable_arguments_come_back_as_bytes(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    backend = LocalBackend(Director(), lambda: 0.0)
    monkeypatch.setattr(pylvsadm, "_backend", lambda: backend)
    assert pylvsadm.main(["-L", "caf\udce9"]) == 2
    assert capsysbinary.readouterr().err == b"unexpected argument caf\xe9\n"
    assert pylvsadm.main(["-A", "-t", "\udcff:80"]) == 2
    assert capsysbinary.readouterr().err == b"illegal virtual server address[:port] specified\n"


def test_unexpected_daemon_answers_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken(LocalBackend):
        def snapshot(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("HTTP 500 from pylvsd")

    monkeypatch.setattr(pylvsadm, "_backend", lambda: Broken(Director(), lambda: 0.0))
    assert pylvsadm.main(["-Ln"]) == 255
    assert capsys.readouterr().err == "pylvsadm: HTTP 500 from pylvsd\n"
