"""Fuzzed command lines and rules files: every bad input ends in an ipvsadm-style message and exit
code, never a Python exception, and never a changed rule set."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.core.director import Director
from pylvs.ipvsadm.backend import LocalBackend
from pylvs.ipvsadm.grammar import UsageError, parse
from pylvs.ipvsadm.names import NameResolver
from pylvs.ipvsadm.run import run_ipvsadm

from .replay import OUT
from .strategies import WORDS, argv_words

NAMES = NameResolver(
    hosts_text=(OUT / "hosts.orig").read_text(), services_text=(OUT / "services").read_text()
)
BASE = [
    "-A -t 10.0.0.1:80 -s rr",
    "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 3",
    "-a -t 10.0.0.1:80 -r 10.1.0.2 -g",
    "-A -u [2001:db8::1]:53 -s sh -b sh-port -p 30",
    "-a -u [2001:db8::1]:53 -r [2001:db8::10]:53 -m",
    "-A -f 66 -s wlc -p",
    "--start-daemon master --mcast-interface lo",
]


def _state(b: LocalBackend) -> tuple[str, str, str, str]:
    return tuple(
        run_ipvsadm(b, a, names=NAMES).out
        for a in (["-Sn"], ["-Ln", "--thresholds"], ["-L", "--timeout"], ["-L", "--daemon"])
    )  # type: ignore[return-value]


def _base() -> LocalBackend:
    b = LocalBackend(Director(), lambda: 0.0, lambda: {"lo", "eth0"})
    for line in BASE:
        assert run_ipvsadm(b, line.split(), names=NAMES).code == 0, line
    return b


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv_words())
def test_fuzzed_command_lines(argv: list[str]) -> None:
    b = _base()
    before = _state(b)
    r = run_ipvsadm(b, argv, names=NAMES, stdin="")
    assert r.code in (0, 1, 2, 255)
    if r.code:
        assert r.err.strip(), argv  # a message, on stderr
        assert "Traceback" not in r.err
        assert _state(b) == before, argv
    else:
        assert r.err == "", argv


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), max_size=12))
def test_parser_only_raises_usage_errors(argv: list[str]) -> None:
    try:
        parse(["ipvsadm", *argv], NAMES)
    except UsageError as e:
        assert e.exit_code in (2, 255) and e.message


_LINE = st.lists(st.sampled_from(WORDS), min_size=0, max_size=8).map(" ".join)
_SEP = st.sampled_from(["\n", "\n", " \n", "\r\n", "\t", "\n\n"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_LINE, _SEP), max_size=8), st.booleans())
def test_fuzzed_rules_files(lines: list[tuple[str, str]], good_prefix: bool) -> None:
    b = _base()
    before = _state(b)
    text = "".join(line + sep for line, sep in lines)
    if good_prefix:
        text = "-A -t 10.9.9.9:80 -s rr\n-a -t 10.9.9.9:80 -r 10.1.0.9 -m\n" + text
    r = run_ipvsadm(b, ["-R"], stdin=text, names=NAMES)
    assert r.code in (0, 2, 255)
    if r.code:
        assert "restore rejected at line" in r.err.splitlines()[-1]
        assert _state(b) == before, text
