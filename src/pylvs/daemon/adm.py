"""pylvsadm's commands run inside pylvsd (POST /ipvsadm): one round trip per command line.

pylvsadm sends its arguments (and for -R its input); pylvsd runs them through the same ipvsadm code
(grammar, listings, -R's one transaction) against its live rules, under its lock, and answers with
what ipvsadm would print and its exit code. Rule changes go through DaemonState.apply_sync like any
other API change (checked by the core, engine told, event logged) and the rules file is saved before
the answer. For a 100,000-server `-R` followed by `-Ln` this replaces a JSON row per rule each way
(and the client's parsing, checking and formatting) by the text itself.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pylvs.core.errors import IPVSError
from pylvs.core.snapshot import ConnView, Snapshot
from pylvs.core.types import DestConfig, ServiceKey
from pylvs.daemon.changes import Change, change_from_call, rule_change
from pylvs.daemon.client import BatchRefused, _refused
from pylvs.daemon.recorder import ChangeCalls, RecordingBackend, RefuseDest, engine_refusal
from pylvs.daemon.rules import Rules
from pylvs.daemon.state import BatchError, DaemonState
from pylvs.ipvsadm.run import Result, restore, run_ipvsadm

_paused = 0  # commands running with the cyclic collector paused


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a big batch builds 100,000s of objects: each full
    collection walks the whole heap, and several would run (a third of a restore's CPU time).
    Reference counting still frees everything. The collector comes back once the answer is on its
    way (see _resume)."""
    global _paused
    if _paused == 0 and not gc.isenabled():
        yield  # someone else turned it off: leave it so
        return
    _paused += 1
    gc.disable()
    try:
        yield
    finally:
        _paused -= 1
        if _paused == 0:
            try:
                asyncio.get_running_loop().call_soon(_resume)
            except RuntimeError:  # no loop (tests, tools): now
                _resume()


def _resume() -> None:
    if _paused == 0:
        # Everything the command made goes straight to the oldest generation (freeze moves all
        # tracked objects aside, unfreeze puts them back as old): the young-generation pass would
        # otherwise walk them all once, for nothing, since the rules they make up are long-lived.
        # They stay collectable, by the full collections that walk the rest of the rules anyway.
        gc.freeze()
        gc.unfreeze()
        gc.enable()


class LiveBackend(ChangeCalls):
    """The ipvsadm Backend protocol over DaemonState, synchronous; used with `state.lock` held."""

    def __init__(self, state: DaemonState, source: str) -> None:
        self.state = state
        self.source = source
        self.changed = False  # the rules file must be saved before answering

    # reads
    def snapshot(self) -> Snapshot:
        return self.state.snapshot()

    def connections(self) -> list[ConnView]:
        return self.state.connections()

    def list_plain(self, nosort: bool) -> str:
        """`-Ln` of the whole table, written from the live rules (pylvs.ipvsadm.live)."""
        from pylvs.core.director import service_view
        from pylvs.ipvsadm import listing, live
        from pylvs.ipvsadm.grammar import Format

        self.state._set_now()
        fmt = Format(numeric=True, nosort=nosort)

        def fallback(svc: Any) -> str:
            return listing.service_entry(service_view(svc), fmt, None)

        head = listing.version_line(Snapshot()) + listing.title(fmt)
        return head + live.list_table(self.state.director.services, nosort, fallback)

    # changes
    def apply_changes(self, changes: list[Change], lines: list[int | None] | None = None) -> None:
        """All of `changes` or none (the Transaction's commit); BatchRefused names the refused one."""
        try:
            changed = self.state.apply_sync(changes, self.source)
        except BatchError as e:
            line = lines[e.index] if lines is not None and 0 <= e.index < len(lines) else None
            raise _refused(e.error, e.index, line) from None
        self.changed = self.changed or changed

    def _do(self, change: Change) -> None:  # each Backend call of ChangeCalls: one change, live
        self.apply_changes([change])

    def apply_batch(self, ops: Sequence[Any]) -> None:
        from pylvs.ipvsadm.backend import BatchError as OpBatchError

        try:
            self.apply_changes([change_from_call(op.method, tuple(op.args)) for op in ops])
        except BatchRefused as e:
            raise OpBatchError(e.index, e) from None

    def transaction(self) -> DaemonTransaction:
        return DaemonTransaction(self)


class DaemonTransaction(RecordingBackend):
    """-R inside pylvsd: each line is played at once on a throw-away copy of the live rules, so a
    refusal names its own line (the first bad one, as ipvsadm would stop there); commit() makes the
    whole batch live (taking the copy over when the live table is empty) and logs it once."""

    def __init__(self, live: LiveBackend) -> None:
        super().__init__(Rules(), refuse_dest=_engine_refusal(live.state))
        self.live = live
        self._started = False

    def _begin(self, change: Change) -> None:
        if not self._started:
            # Built on the first change: a restore that begins with a flush needs no copy of the table.
            self.rules = self.live.state.trial_for(change)
            self._started = True

    def _do(self, change: Change) -> None:
        self._begin(change)
        super()._do(change)

    def add_dest(self, key: ServiceKey, cfg: DestConfig) -> None:
        # RecordingBackend.add_dest with its layers inlined: a big restore is mostly this call.
        change = rule_change("add_dest", key, None, cfg)
        self._begin(change)
        if self._refuse_dest is not None:
            msg = self._refuse_dest(key, cfg)
            if msg is not None:
                raise engine_refusal(change, msg)
        director = self.rules.director
        director.services.add_dest(key, cfg, director.env.now)
        self.changes.append(change)

    def snapshot(self) -> Snapshot:
        return self.rules.snapshot() if self._started else self.live.snapshot()

    def connections(self) -> list[ConnView]:
        return self.live.connections()

    def commit(self) -> int:
        n = len(self.changes)
        if self.live.state.commit_checked(self.changes, self.rules, self.live.source):
            self.live.changed = True
        self.changes = []
        return n


def _engine_refusal(state: DaemonState) -> RefuseDest | None:
    engine = state.engine
    return engine.refuse_dest if engine is not None else None


async def run_command(
    state: DaemonState,
    argv: list[str],
    prog: str,
    stdin: str | None,
    *,
    flush_first: bool = False,
    source: str = "pylvsadm",
) -> Result:
    """What `prog argv...` prints, run on the live rules; with flush_first, pylvsadm-restore of stdin
    (-C then -R as one transaction). Raises SaveError when a change was made but not saved."""
    async with state.lock:
        backend = LiveBackend(state, source)
        try:
            with gc_paused():
                if flush_first:
                    result = restore(backend, stdin or "", prog, flush_first=True)
                else:
                    result = run_ipvsadm(backend, argv, prog=prog, stdin=stdin)
        except IPVSError as e:  # a refusal the ipvsadm layer did not turn into output itself
            result = Result("", e.message + "\n", 255)
        if backend.changed:
            await state._save()
    return result
