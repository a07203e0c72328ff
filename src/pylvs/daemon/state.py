"""The daemon's heart: live rules, the engine, the rules file and the event log, changed only here.

Every change goes through `apply()`: one change is tried on the live rules (the core checks before it
touches anything); several are first tried on a throw-away copy, so a batch is all or nothing. After an
accepted change the engine hears of it, the rules file is rewritten (before the caller gets its answer,
so a kill -9 loses nothing that was acknowledged) and an event is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pylvs.core.errors import IPVSError
from pylvs.core.snapshot import ConnView, Snapshot
from pylvs.daemon.changes import Change
from pylvs.daemon.events import EventLog
from pylvs.daemon.recorder import RecordingBackend, diff_changes, engine_refusal
from pylvs.daemon.rules import Rules
from pylvs.daemon.savecache import SaveCache
from pylvs.daemon.store import RulesFileError, RulesStore, restore_text, timeouts_line
from pylvs.engines.base import Engine

log = logging.getLogger("pylvsd")

PER_CHANGE_EVENTS_MAX = 200  # a bigger batch is logged as one summary event


class SaveError(Exception):
    """The change was applied but the rules file could not be written."""


class BatchError(Exception):
    """Change number `index` of a batch was refused; nothing was applied."""

    def __init__(self, index: int, error: IPVSError) -> None:
        self.index = index
        self.error = error
        super().__init__(f"change {index}: {error.message}")


class DaemonState:
    def __init__(
        self,
        rules: Rules,
        engine: Engine | None = None,
        store: RulesStore | None = None,
        events: EventLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = rules
        self.engine = engine
        self.store = store
        self.events = events or EventLog()
        self.clock = clock
        self.lock = asyncio.Lock()
        self.started = clock()
        self.engine_name = engine.name if engine is not None else "none"
        self.save_cache = SaveCache()
        self.closing = asyncio.Event()  # set at shutdown: long-lived streams end

    @property
    def director(self) -> Any:
        return self.rules.director

    # -- reading -----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        self._set_now()
        return self.rules.snapshot()

    def connections(self) -> list[ConnView]:
        view = getattr(self.director, "connections_view", None)  # added by the connection-table work
        if view is None:
            return []
        result: list[ConnView] = view(self.clock())
        return result

    # -- time ------------------------------------------------------------------------------------
    def _set_now(self) -> float:
        """Bring the core's clock to now (running any timer that is due) before it is read or changed."""
        now = self.clock()
        advance = getattr(self.director, "advance", None)
        if advance is not None:
            advance(now)
        elif now > self.director.env.now:
            self.director.env.now = now
        return now

    def tick(self) -> float:
        """Drive the core's timers; returns seconds until the next wanted call (at most 1 s)."""
        now = self._set_now()
        nd = getattr(self.director, "next_deadline", None)
        wait = 1.0
        if nd is not None:
            deadline = nd()
            if deadline is not None:
                wait = min(wait, max(deadline - now, 0.01))
        return wait

    # -- changing --------------------------------------------------------------------------------
    def _refuse(self, change: Change) -> None:
        if self.engine is not None and change.dest is not None and change.key is not None:
            msg = self.engine.refuse_dest(change.key, change.dest)
            if msg is not None:
                raise engine_refusal(change, msg)

    def _live_is_empty(self) -> bool:
        """No services, no trashed servers, no connections: nothing a batch could interact with."""
        d = self.director
        return len(d.services) == 0 and not d.services.trash and len(getattr(d, "conns", ())) == 0

    def _trial(self, changes: list[Change]) -> Rules:
        """A throw-away copy of the rules to try a batch on."""
        if (changes and changes[0].kind == "flush") or len(self.director.services) == 0:
            # Nothing but the timeouts and daemons would survive (or exist): skip the rebuild.
            trial = Rules()
            trial.director.timeouts = self.director.timeouts
            trial.daemons = dict(self.rules.daemons)
            return trial
        return Rules.from_snapshot(self.rules.snapshot())

    def _validate_batch(self, changes: list[Change], trial: Rules) -> None:
        """Try the whole batch on `trial`; BatchError at the first refusal."""
        for i, c in enumerate(changes):
            try:
                self._refuse(c)
                c.apply(trial)
            except IPVSError as e:
                raise BatchError(i, e) from None

    def _adopt(self, trial: Rules) -> None:
        """Take the checked copy's table as the live one (only when the live one is empty, see
        _live_is_empty): the same result as replaying the batch, without doing it twice."""
        live = self.director
        table = trial.director.services
        table.tot_stats = live.services.tot_stats
        table.generation = live.services.generation + 1
        live.services = table
        live.timeouts = trial.director.timeouts
        self.rules.daemons = trial.daemons

    async def apply(self, changes: list[Change], source: str) -> None:
        """Apply all of `changes` or none; raises IPVSError (one change) or BatchError (several)."""
        if not changes:
            return
        async with self.lock:
            await self._apply_locked(changes, source)

    async def _apply_locked(self, changes: list[Change], source: str) -> None:
        if self.apply_sync(changes, source):
            await self._save()

    def apply_sync(self, changes: list[Change], source: str) -> bool:
        """The synchronous part of apply(): check, apply, tell the engine, log. True when the rules
        file must now be saved. The caller holds `lock` and awaits `_save()` before answering."""
        if not changes:
            return False
        self._set_now()
        if len(changes) == 1:
            self._refuse(changes[0])
            self._changing()
            changes[0].apply(self.rules)  # the core checks first: a refusal changes nothing
            self._after_change(changes, source)
            return changes[0].changes_rules
        trial = self._trial(changes)
        self._validate_batch(changes, trial)
        return self.commit_checked(changes, trial, source)

    def trial_for(self, first: Change | None) -> Rules:
        """A throw-away copy of the rules for a batch that starts with `first` (see _trial)."""
        return self._trial([first] if first is not None else [])

    def commit_checked(self, changes: list[Change], trial: Rules, source: str) -> bool:
        """Make `changes`, already played without error on `trial` (from trial_for(), lock held
        since), live; True when the rules file must now be saved."""
        if not changes:
            return False
        self._set_now()
        self._changing()
        if self._live_is_empty():
            self._adopt(trial)
        else:
            for c in changes:
                c.apply(self.rules)
        self._after_change(changes, source)
        return any(c.changes_rules for c in changes)

    def _changing(self) -> None:
        if self.engine is not None:
            try:
                self.engine.rules_changing()
            except Exception:
                log.exception("engine %s failed in rules_changing()", self.engine_name)

    def _after_change(self, changes: list[Change], source: str) -> None:
        if self.engine is not None:
            try:
                self.engine.rules_changed()
            except Exception:
                log.exception("engine %s failed in rules_changed()", self.engine_name)
        if len(changes) <= PER_CHANGE_EVENTS_MAX:
            for c in changes:
                self.events.add(c.kind, c.describe(), source)
        else:
            counts = Counter(c.kind for c in changes)
            detail = f"{len(changes)} changes: " + ", ".join(f"{n} {k}" for k, n in counts.items())
            self.events.add("batch", detail, source)

    async def _save(self) -> None:
        if self.store is None:
            return
        store = self.store
        try:
            t = self.director.timeouts
            text = self.save_cache.text(self.director, store.numeric) + timeouts_line(
                (t.tcp, t.tcpfin, t.udp)
            )
            # The write and its fsyncs run off the loop; the lock keeps other changes out meanwhile.
            await asyncio.get_running_loop().run_in_executor(None, store.write_text, text)
        except (OSError, ImportError) as e:
            log.error("could not save rules to %s: %s", store.path, e)
            raise SaveError(str(e)) from e

    async def save_now(self) -> None:
        async with self.lock:
            await self._save()

    async def reload(self, source: str = "daemon") -> int:
        """Re-read the rules file and make the live rules equal to it (RulesFileError: nothing changed)."""
        if self.store is None:
            raise RulesFileError("no rules file")
        store = self.store
        loop = asyncio.get_running_loop()
        # Under the lock: a change being saved right now must not be undone by reading the file early.
        async with self.lock:
            text = await loop.run_in_executor(None, store.read)
            new = RecordingBackend()
            try:
                restore_text(text, new.rules)
            except RulesFileError as e:
                raise RulesFileError(f"{store.path}: {e}") from None
            changes = diff_changes(self.rules.snapshot(), new.rules.snapshot())
            if not changes:
                return 0
            try:
                await self._apply_locked(changes, source)
            except (BatchError, IPVSError) as e:
                raise RulesFileError(f"{store.path}: {e}") from None
            return len(changes)
