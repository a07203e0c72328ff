"""pylvsd's packet-engine and fast-path switches reach the engine; other engines are left as they are."""

from __future__ import annotations

import pytest

from pylvs.daemon.main import _with_packet_options, build_parser
from pylvs.engines import get_engine


def test_packet_ring_switches_bind_the_engine_options() -> None:
    args = build_parser().parse_args(["--engine", "packet", "--packet-ring", "v3", "--packet-tx-ring", "no"])
    cls = get_engine("packet")
    factory = _with_packet_options(cls, "packet", args)
    assert factory.func is cls and factory.keywords == {
        "ring": "v3",
        "tx_ring": False,
        "offload": False,
        "ahead": False,
    }
    assert factory.name == cls.name
    defaults = _with_packet_options(cls, "packet", build_parser().parse_args([]))
    assert defaults.keywords == {"ring": None, "tx_ring": True, "offload": False, "ahead": False}
    on = _with_packet_options(cls, "packet", build_parser().parse_args(["--packet-offload", "yes"]))
    assert on.keywords["offload"] is True and on.keywords["ahead"] is False
    ahead = _with_packet_options(cls, "packet", build_parser().parse_args(["--packet-offload", "ahead"]))
    assert ahead.keywords["offload"] is True and ahead.keywords["ahead"] is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--packet-offload", "later"])
    v2 = _with_packet_options(cls, "packet", build_parser().parse_args(["--packet-ring", "v2"]))
    assert v2.keywords["ring"] == "v2"


def test_other_engines_untouched() -> None:
    args = build_parser().parse_args(["--engine", "none", "--packet-ring", "v3"])
    cls = get_engine("none")
    assert _with_packet_options(cls, "none", args) is cls


def test_bad_ring_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--packet-ring", "v9"])
    assert e.value.code == 2


def test_queue_switches_bind_the_fast_paths_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = get_engine("fastpath")
    args = build_parser().parse_args(["--engine", "fastpath", "--queue-bypass", "no", "--queue-num", "7100"])
    factory = _with_packet_options(cls, "fastpath", args)
    assert factory.func is cls and factory.keywords == {"queue_num": 7100, "queue_bypass": False}
    assert factory.name == cls.name
    # not given: the engine's own defaults (fail open, queue 7000, or its PYLVS_FASTPATH_* settings)
    defaults = _with_packet_options(cls, "fastpath", build_parser().parse_args([]))
    assert defaults.keywords == {"queue_num": None, "queue_bypass": None}
    eng = defaults(None)
    assert (eng.queue_num, eng.bypass) == (7000, True)
    monkeypatch.setenv("PYLVSD_QUEUE_BYPASS", "off")
    monkeypatch.setenv("PYLVSD_QUEUE_NUM", "7001")
    eng = _with_packet_options(cls, "fastpath", build_parser().parse_args([]))(None)
    assert (eng.queue_num, eng.bypass) == (7001, False)


@pytest.mark.parametrize(
    "argv", [["--queue-bypass", "maybe"], ["--queue-num", "70000"], ["--queue-num", "x"]]
)
def test_bad_queue_switches_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
