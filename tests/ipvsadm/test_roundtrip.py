"""Round trip: for random rule sets, -S, -C, -R, -S gives identical text (numeric and with names)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from pylvs.core.director import Director
from pylvs.ipvsadm.backend import LocalBackend
from pylvs.ipvsadm.names import NameResolver
from pylvs.ipvsadm.run import run_ipvsadm

from .replay import OUT
from .strategies import rule_set

NAMES = NameResolver(
    hosts_text=(OUT / "hosts.orig").read_text(), services_text=(OUT / "services").read_text()
)


def _backend() -> LocalBackend:
    return LocalBackend(Director(), lambda: 0.0, lambda: {"lo", "eth0"})


def _build(lines: list[str]) -> LocalBackend:
    b = _backend()
    for line in lines:
        run_ipvsadm(b, line.split(), names=NAMES)  # some are refused (duplicates): that is fine
    return b


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_set())
def test_save_clear_restore_save(lines: list[str]) -> None:
    b = _build(lines)
    for save in (["-Sn"], ["-S"]):
        first = run_ipvsadm(b, save, names=NAMES)
        assert first.code == 0 and first.err == ""
        assert run_ipvsadm(b, ["-C"]).code == 0
        assert run_ipvsadm(b, ["-Ln"]).out.count("\n") == 3
        restored = run_ipvsadm(b, ["-R"], stdin=first.out, names=NAMES)
        assert (restored.code, restored.err) == (0, ""), first.out
        assert run_ipvsadm(b, save, names=NAMES).out == first.out


@settings(max_examples=60, deadline=None)
@given(rule_set())
def test_restore_into_a_fresh_table_gives_the_same_listing(lines: list[str]) -> None:
    b = _build(lines)
    saved = run_ipvsadm(b, ["-Sn"]).out
    other = _backend()
    assert run_ipvsadm(other, ["-R"], stdin=saved).code == 0
    # Thresholds are not saved (as in ipvsadm), and -Ln does not show them.
    assert run_ipvsadm(other, ["-Ln"]).out == run_ipvsadm(b, ["-Ln"]).out
