"""The engine hears of every rule change before it is made (rules_changing: the packet engine's
decisions taken ahead go back then) and after (rules_changed)."""

from __future__ import annotations

import pytest

from pylvs.core.errors import IPVSError
from pylvs.core.types import ServiceConfig
from pylvs.daemon.changes import Change
from pylvs.daemon.rules import Rules
from pylvs.daemon.state import DaemonState
from pylvs.engines.base import Engine

from .test_batch import changes, dest, key


class Recording(Engine):
    """Writes down each hook with the number of services the director had at that moment."""

    def __init__(self, rules: Rules) -> None:
        super().__init__(rules.director)
        self.calls: list[tuple[str, int]] = []

    def rules_changing(self) -> None:
        self.calls.append(("changing", len(self.director.services)))

    def rules_changed(self) -> None:
        self.calls.append(("changed", len(self.director.services)))


def _state() -> tuple[DaemonState, Recording]:
    rules = Rules()
    engine = Recording(rules)
    return DaemonState(rules, engine=engine), engine


def test_one_change_is_announced_before_it_is_made_and_after() -> None:
    state, engine = _state()
    state.apply_sync([Change("add_service", key=key(0), svc=ServiceConfig("rr"))], "test")
    assert engine.calls == [("changing", 0), ("changed", 1)]


def test_a_batch_is_announced_once_before_and_once_after() -> None:
    state, engine = _state()
    state.apply_sync(changes(1, 1), "test")  # onto empty rules: the checked copy is adopted
    state.apply_sync(changes(3, 2)[2:], "test")  # the services 1 and 2, onto live rules
    assert engine.calls == [("changing", 0), ("changed", 1), ("changing", 1), ("changed", 3)]


def test_a_refused_change_may_be_announced_but_is_not_made() -> None:
    """(The packet engine refills its queues at its next sync: nothing is lost.)"""
    state, engine = _state()
    with pytest.raises(IPVSError):  # no such service
        state.apply_sync([Change("add_dest", key=key(5), dest=dest(5, 0))], "test")
    assert engine.calls == [("changing", 0)] and len(state.director.services) == 0
