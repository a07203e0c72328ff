"""The rules file: saved after every accepted change, restored at start, atomic under kill -9,
reloaded on SIGHUP (a bad file keeps the old rules), and SIGTERM exits 0."""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from pylvs.daemon.changes import Change
from pylvs.daemon.client import DaemonBackend, DaemonUnavailable

from .conftest import Pylvsd, needs_save

pytestmark = needs_save


def numeric_save(b: DaemonBackend) -> str:
    from pylvs.ipvsadm.save import format_save

    return format_save(b.snapshot(), numeric=True)


def rule_set(n: int, per: int, port: int) -> list[Change]:
    out: list[Change] = []
    for i in range(n):
        k = ServiceKey.for_addr(
            Proto.TCP, ipaddress.ip_address(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"), port
        )
        out.append(Change("add_service", key=k, svc=ServiceConfig("wrr")))
        for j in range(per):
            a = ipaddress.ip_address(f"192.168.{j}.{i % 250 + 1}")
            out.append(Change("add_dest", key=k, dest=DestConfig(a, port, Fwd.MASQ, j + 1)))
    return out


def wait_gone(d: Pylvsd, timeout: float = 20.0) -> int:
    assert d.proc is not None
    return d.proc.wait(timeout)


def test_saved_after_each_change_and_restored(make_daemon: Callable[..., Pylvsd]) -> None:
    d = make_daemon().start()
    b = d.backend()
    k = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address("172.25.254.100"), 80)
    b.add_service(k, ServiceConfig("rr"))
    b.add_dest(k, DestConfig(ipaddress.ip_address("192.168.1.10"), 80, Fwd.MASQ))
    assert d.rules.read_text() == numeric_save(b)
    b.set_timeouts(60, 0, 0)
    assert d.rules.read_text().endswith("--set 60 120 300\n")
    assert os.stat(d.rules).st_mode & 0o077 == 0
    saved = numeric_save(b)
    assert d.stop() == 0
    assert not os.path.exists(d.socket)
    d2 = make_daemon().start()
    b2 = d2.backend()
    assert numeric_save(b2) == saved
    assert b2.snapshot().timeouts == (60, 120, 300)
    d2.stop()


def test_bad_rules_file_at_start_is_refused(make_daemon: Callable[..., Pylvsd]) -> None:
    d = make_daemon()
    d.rules.write_text("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.9:80 -r 1.2.3.4 -m\n")
    d.start(wait=False)
    assert wait_gone(d) == 1
    assert "cannot restore rules" in d.log.read_text()


def test_sighup_reload_and_bad_file_keeps_old(make_daemon: Callable[..., Pylvsd]) -> None:
    d = make_daemon().start()
    b = d.backend()
    b.apply_changes(rule_set(3, 2, 80))
    old = numeric_save(b)
    d.rules.write_text("-A -t 10.9.9.9:80 -s rr\nthis is not ipvsadm\n")
    d.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(e["kind"] == "reload-failed" for e in b.request("GET", "/events")["events"]):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("no reload-failed event")
    assert numeric_save(b) == old
    # a good file edited by hand is taken as it is
    d.rules.write_text("-A -u 10.1.1.1:53 -s sh\n-a -u 10.1.1.1:53 -r 192.168.1.5:53 -m -w 3\n")
    d.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and numeric_save(b) == old:
        time.sleep(0.05)
    assert numeric_save(b) == "-A -u 10.1.1.1:53 -s sh\n-a -u 10.1.1.1:53 -r 192.168.1.5:53 -m -w 3\n"
    assert d.stop() == 0


def _restore_text(changes: list[Change]) -> str:
    """`-C` and the -Sn lines of `changes`: what `pylvsadm -R` would be given for the same batch."""
    from pylvs.daemon.rules import Rules
    from pylvs.ipvsadm.save import format_save

    rules = Rules()
    for c in changes:
        c.apply(rules)
    return "-C\n" + format_save(rules.snapshot(), numeric=True)


@pytest.mark.slow
@pytest.mark.parametrize("via", ["batch", "pylvsadm -R"])
def test_kill9_during_large_batch_keeps_old_or_new(make_daemon: Callable[..., Pylvsd], via: str) -> None:
    """kill -9 at several moments of an 11,000-line batch, sent as one API batch or as the text of a
    `pylvsadm -R` (POST /ipvsadm, what pylvsadm sends); the first run measures how long it takes and is
    killed right after the answer: the restored rules are all old or all new, never a mix."""
    old_changes = rule_set(200, 3, 80)
    new_changes = [Change("flush"), *rule_set(1000, 10, 443)]
    new_text = _restore_text(new_changes)
    new_lines = 11000
    outcomes: list[str] = []
    took = 0.0
    for fraction in (None, 0.0, 0.3, 0.7, 0.95):
        d = make_daemon().start()
        b = d.backend()
        b.apply_changes([Change("flush"), *old_changes])
        old = numeric_save(b)
        errors: list[BaseException] = []
        done = threading.Event()

        def send(
            b: DaemonBackend = b, errors: list[BaseException] = errors, done: threading.Event = done
        ) -> None:
            try:
                if via == "batch":
                    b.apply_changes(new_changes)
                else:
                    answer = b.request("POST", "/ipvsadm", {"argv": ["-R"], "stdin": new_text})
                    assert answer["code"] == 0, answer
            except BaseException as e:  # killed mid-way: the connection drops
                errors.append(e)
            done.set()

        t0 = time.monotonic()
        t = threading.Thread(target=send)
        t.start()
        if fraction is None:
            done.wait(120)
            took = time.monotonic() - t0
        else:
            time.sleep(took * fraction)
        d.kill9()
        t.join(60)
        acknowledged = not errors
        text = d.rules.read_text()
        d2 = make_daemon().start()
        restored = numeric_save(d2.backend())
        assert restored == text
        if acknowledged:
            assert len(restored.splitlines()) == new_lines  # an acknowledged batch is never lost
        else:
            assert isinstance(errors[0], DaemonUnavailable)
        if len(restored.splitlines()) == new_lines:
            outcomes.append("new")
        else:
            assert restored == old
            outcomes.append("old")
        assert not [p for p in os.listdir(d.dir) if ".tmp." in p]  # a crash's temporary file is swept
        d2.stop()
    print("kill -9 outcomes:", outcomes)
    assert outcomes[0] == "new" and outcomes[1] == "old"


def test_sigterm_during_a_batch_exits_0_with_old_or_new_rules(make_daemon: Callable[..., Pylvsd]) -> None:
    d = make_daemon().start()
    b = d.backend()
    b.apply_changes(rule_set(50, 2, 80))
    old = numeric_save(b)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            b.apply_changes([Change("flush"), *rule_set(1000, 10, 443)])
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(0.3)
    d.signal(signal.SIGTERM)
    assert wait_gone(d, 60) == 0
    t.join(60)
    text = d.rules.read_text()
    assert text == old or len(text.splitlines()) == 11000
    if not errors:
        assert len(text.splitlines()) == 11000
    assert not os.path.exists(d.socket)


def test_kill9_during_a_stream_of_single_changes_loses_nothing_acknowledged(
    make_daemon: Callable[..., Pylvsd],
) -> None:
    """Many small saves, killed at three moments: every acknowledged change is restored, plus at most
    the one that was in flight."""
    for delay in (0.2, 0.5, 0.9):
        d = make_daemon().start()
        b = d.backend()
        b.flush()  # the rules file is shared by the rounds
        acked: list[int] = []

        def add_many(b: DaemonBackend = b, acked: list[int] = acked) -> None:
            for i in range(10000):
                k = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(f"10.1.{i // 256}.{i % 256}"), 80)
                try:
                    b.add_service(k, ServiceConfig("rr"))
                except DaemonUnavailable:
                    return
                acked.append(i)

        t = threading.Thread(target=add_many)
        t.start()
        time.sleep(delay)
        d.kill9()
        t.join(30)
        d2 = make_daemon().start()
        restored = len(d2.backend().snapshot().services)
        assert len(acked) <= restored <= len(acked) + 1, (len(acked), restored)
        d2.stop()
