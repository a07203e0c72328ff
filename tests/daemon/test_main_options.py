"""pylvsd's packet-engine switches reach the engine; other engines are left as they are."""

from __future__ import annotations

import pytest

from pylvs.daemon.main import _with_packet_options, build_parser
from pylvs.engines import get_engine


def test_packet_ring_switches_bind_the_engine_options() -> None:
    args = build_parser().parse_args(["--engine", "packet", "--packet-ring", "v3", "--packet-tx-ring", "no"])
    cls = get_engine("packet")
    factory = _with_packet_options(cls, "packet", args)
    assert factory.func is cls and factory.keywords == {"ring": "v3", "tx_ring": False}
    assert factory.name == cls.name
    defaults = _with_packet_options(cls, "packet", build_parser().parse_args([]))
    assert defaults.keywords == {"ring": None, "tx_ring": True}


def test_other_engines_untouched() -> None:
    args = build_parser().parse_args(["--engine", "none", "--packet-ring", "v3"])
    cls = get_engine("none")
    assert _with_packet_options(cls, "none", args) is cls


def test_bad_ring_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--packet-ring", "v9"])
    assert e.value.code == 2
