"""HealthManager: runs the checkers of a keepalived configuration and keeps the IPVS rules in step.

Each checker is one asyncio task: probe, then sleep delay_loop (or delay_before_retry while an alive
checker is retrying). A real server is alive while all its checkers are; a virtual server holds quorum
while its live weight stays at or above quorum - hysteresis (and regains it at quorum + hysteresis).
After every change the wanted real servers of each affected service are worked out from that state
and the difference is sent to the backend (add_dest / edit_dest / del_dest), as keepalived does:
  alive                                -> present with its (possibly dynamic) weight
  dead, inhibit_on_failure             -> present with weight 0
  dead                                 -> absent
  quorum lost and a sorry_server       -> the sorry server only (inhibited servers stay at weight 0)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shlex
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from errno import EEXIST, ENOENT
from typing import Protocol

from pylvs.core.errors import IPVSError
from pylvs.core.types import DestConfig, IPAddr, ServiceConfig, ServiceKey
from pylvs.health.checkers import CHECKERS, Checker, CheckResult
from pylvs.health.config.model import KeepalivedConfig, RealServerConf, VirtualServerConf
from pylvs.health.resolve import Settings, settings, target
from pylvs.health.rules import ServiceRule, dest_config, services_of, sorry_config

SCRIPT_TIMEOUT = 30.0
STOP_SCRIPT_WAIT = 5.0  # how long stop() lets running scripts finish
EVENT_LOG_SIZE = 1000
LAG_SAMPLES = 4096


class RuleBackend(Protocol):
    """The part of pylvs.ipvsadm.backend.Backend the manager uses (a Director fits it as well)."""

    def add_service(self, key: ServiceKey, cfg: ServiceConfig) -> object: ...
    def edit_service(self, key: ServiceKey, cfg: ServiceConfig) -> object: ...
    def del_service(self, key: ServiceKey) -> object: ...
    def add_dest(self, key: ServiceKey, cfg: DestConfig) -> object: ...
    def edit_dest(self, key: ServiceKey, cfg: DestConfig) -> object: ...
    def del_dest(self, key: ServiceKey, addr: IPAddr, port: int) -> object: ...


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """One state change, with its reason: what the event log keeps and the callback receives."""

    time: float
    kind: str  # up | down | weight | quorum-lost | quorum-gained | error | reload | suspended | resumed
    vs: str
    rs: str
    reason: str


@dataclass(frozen=True, slots=True)
class CheckerView:
    kind: str
    up: bool
    failures: int
    last_ok: bool | None
    last_reason: str
    last_time: float | None


@dataclass(frozen=True, slots=True)
class RealServerView:
    addr: str
    port: int
    up: bool
    weight: int  # the weight it has (or would have) while alive
    reason: str
    since: float
    checkers: tuple[CheckerView, ...]


@dataclass(frozen=True, slots=True)
class VirtualServerView:
    label: str
    services: tuple[str, ...]
    quorum_up: bool
    live_weight: int
    quorum: int
    hysteresis: int
    sorry_active: bool
    real_servers: tuple[RealServerView, ...]


@dataclass(slots=True)
class _Ck:
    checker: Checker
    s: Settings
    up: bool
    failures: int = 0
    weight: int | None = None  # misc_dynamic weight while up
    last: CheckResult | None = None
    last_time: float | None = None
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class _Rs:
    conf: RealServerConf
    inhibit: bool
    alive: bool
    weight: int
    reason: str
    since: float
    checkers: list[_Ck] = field(default_factory=list)


@dataclass(slots=True)
class _Vs:
    conf: VirtualServerConf
    rules: list[ServiceRule]
    rs: list[_Rs]
    quorum_up: bool = True
    programmed: dict[ServiceKey, dict[tuple[IPAddr, int], DestConfig]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.conf.label()

    def ident(self) -> tuple[str, int]:
        return (self.label, int(self.conf.protocol or 0))


def _rs_label(rs: RealServerConf) -> str:
    a = f"[{rs.addr}]" if rs.addr.version == 6 else str(rs.addr)
    return f"{a}:{rs.port}"


def is_local_address(addr: IPAddr) -> bool:
    """Whether `addr` is configured on this host (ha_suspend): a bind test, no traffic."""
    fam = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.bind((str(addr), 0))
        except OSError:
            return False
    return True


class HealthManager:
    """Checks the real servers of `config` and programs `backend` accordingly (see module doc)."""

    def __init__(
        self,
        backend: RuleBackend,
        config: KeepalivedConfig,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[HealthEvent], None] | None = None,
        rng: random.Random | None = None,
        run_scripts: bool = True,
    ) -> None:
        self.backend = backend
        self.config = config
        self.clock = clock
        self.on_event = on_event
        self.rng = rng or random.Random()
        self.run_scripts = run_scripts
        self.events: deque[HealthEvent] = deque(maxlen=EVENT_LOG_SIZE)
        self.lags: deque[float] = deque(maxlen=LAG_SAMPLES)
        self.checks_done = 0
        self._vs: list[_Vs] = []
        self._scripts: set[asyncio.Task[None]] = set()
        self._running = False

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self, checks: bool = True) -> None:
        """Program every service (real servers up unless alpha) and start the checkers.

        checks=False only programs the rules (no checker runs, no traffic): `python -m pylvs.health
        check` and parser tests use it."""
        self._vs = self._build(self.config, {})
        g = self.config.global_defs
        if g.lvs_flush and hasattr(self.backend, "flush"):
            self._call(None, "", self.backend.flush)
        if g.lvs_timeouts is not None and hasattr(self.backend, "set_timeouts"):
            self._call(None, "", self.backend.set_timeouts, *g.lvs_timeouts)
        for vs in self._vs:
            for rule in vs.rules:
                self._add_service(vs, rule)
            self._eval_quorum(vs, initial=True)
            self._reconcile(vs)
        self._running = checks
        if checks:
            for vs in self._vs:
                self._start_checkers(vs)

    async def stop(self, remove_services: bool = True) -> None:
        """Stop checking; remove the services this manager added (as keepalived does on shutdown)."""
        self._running = False
        tasks = [ck.task for vs in self._vs for rs in vs.rs for ck in rs.checkers if ck.task]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        # omega: shutting down counts as the servers and the quorum going down, for the scripts
        for vs in self._vs:
            if vs.conf.omega:
                for rs in vs.rs:
                    if rs.alive:
                        self._script(rs.conf.notify_down)
                if vs.quorum_up:
                    self._script(vs.conf.quorum_down)
        if self._scripts:
            _, pending = await asyncio.wait(list(self._scripts), timeout=STOP_SCRIPT_WAIT)
            for t in pending:
                t.cancel()
        if remove_services:
            for vs in self._vs:
                for rule in vs.rules:
                    self._call(vs, "", self.backend.del_service, rule.key)
                vs.programmed.clear()

    def apply_config(self, new: KeepalivedConfig) -> None:
        """Switch to `new` (SIGHUP): services and servers that stay keep their state; others come or go."""
        old = {vs.ident(): vs for vs in self._vs}
        for vs in self._vs:
            for rs in vs.rs:
                for ck in rs.checkers:
                    if ck.task:
                        ck.task.cancel()
        carried: dict[tuple[tuple[str, int], IPAddr, int], _Rs] = {
            (vs.ident(), rs.conf.addr, rs.conf.port): rs for vs in self._vs for rs in vs.rs
        }
        fresh = self._build(new, carried)
        new_keys = {r.key for vs in fresh for r in vs.rules}
        for vs in self._vs:
            for rule in vs.rules:
                if rule.key not in new_keys:
                    self._call(vs, "", self.backend.del_service, rule.key)
        prev_rules = {r.key: r for pv in self._vs for r in pv.rules}
        prev_programmed = {k: dests for pv in self._vs for k, dests in pv.programmed.items()}
        for vs in fresh:
            prev = old.get(vs.ident())
            for rule in vs.rules:
                before = prev_rules.get(rule.key)
                if before is None:
                    self._add_service(vs, rule)
                    continue
                if before.cfg != rule.cfg:
                    self._call(vs, "", self.backend.edit_service, rule.key, rule.cfg)
                vs.programmed[rule.key] = prev_programmed.get(rule.key, {})
            if prev is not None:
                vs.quorum_up = prev.quorum_up
            self._eval_quorum(vs, initial=prev is None)
            self._reconcile(vs)
        self.config = new
        self._vs = fresh
        self._event("reload", "", "", f"configuration {new.path} applied ({len(fresh)} virtual servers)")
        if self._running:
            for vs in self._vs:
                self._start_checkers(vs)

    # -- views --------------------------------------------------------------------------------
    def state(self) -> tuple[VirtualServerView, ...]:
        out = []
        for vs in self._vs:
            rss = tuple(
                RealServerView(
                    addr=str(rs.conf.addr),
                    port=rs.conf.port,
                    up=rs.alive,
                    weight=rs.weight,
                    reason=rs.reason,
                    since=rs.since,
                    checkers=tuple(
                        CheckerView(
                            kind=ck.checker.kind,
                            up=ck.up,
                            failures=ck.failures,
                            last_ok=None if ck.last is None else ck.last.ok,
                            last_reason="" if ck.last is None else ck.last.reason,
                            last_time=ck.last_time,
                        )
                        for ck in rs.checkers
                    ),
                )
                for rs in vs.rs
            )
            out.append(
                VirtualServerView(
                    label=vs.label,
                    services=tuple(_key_label(r.key) for r in vs.rules),
                    quorum_up=vs.quorum_up,
                    live_weight=self._live_weight(vs),
                    quorum=vs.conf.quorum,
                    hysteresis=vs.conf.hysteresis,
                    sorry_active=self._sorry_active(vs),
                    real_servers=rss,
                )
            )
        return tuple(out)

    def dest_health(self) -> dict[tuple[ServiceKey, str, int], str]:
        """'up' / 'down' / 'sorry' per programmed real server, to fill DestView.health in listings."""
        out: dict[tuple[ServiceKey, str, int], str] = {}
        for vs in self._vs:
            for key, dests in vs.programmed.items():
                for (addr, port), d in dests.items():
                    out[(key, str(addr), port)] = self._health_word(vs, key, addr, d)
        return out

    def lag_stats(self) -> dict[str, float]:
        """How late checks started compared to when they were due (seconds), over recent checks."""
        lags = sorted(self.lags)
        if not lags:
            return {"count": 0, "mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
        n = len(lags)
        return {
            "count": float(n),
            "mean": sum(lags) / n,
            "p50": lags[n // 2],
            "p99": lags[min(n - 1, int(n * 0.99))],
            "max": lags[-1],
        }

    # -- building -----------------------------------------------------------------------------
    def _build(
        self, cfg: KeepalivedConfig, carried: dict[tuple[tuple[str, int], IPAddr, int], _Rs]
    ) -> list[_Vs]:
        out = []
        now = self.clock()
        for vconf in cfg.virtual_servers:
            vs = _Vs(vconf, services_of(vconf, cfg), [])
            for rconf in vconf.real_servers:
                own = settings(vconf, rconf, None)
                prev = carried.get((vs.ident(), rconf.addr, rconf.port))
                checkers = []
                for cconf in rconf.checkers:
                    s = settings(vconf, rconf, cconf)
                    checker = CHECKERS[cconf.kind](cconf, target(rconf, cconf, s))
                    up = prev.alive if prev is not None else not s.alpha
                    checkers.append(_Ck(checker, s, up))
                if prev is not None:
                    alive, reason, since = prev.alive, prev.reason, prev.since
                else:
                    alive = all(ck.up for ck in checkers)
                    reason = (
                        "no checker"
                        if not checkers
                        else ("alpha: down until checked" if not alive else "assumed up at start")
                    )
                    since = now
                rs = _Rs(rconf, own.inhibit_on_failure, alive, rconf.weight, reason, since, checkers)
                vs.rs.append(rs)
            out.append(vs)
        return out

    def _start_checkers(self, vs: _Vs) -> None:
        for rs in vs.rs:
            for ck in rs.checkers:
                ck.task = asyncio.get_running_loop().create_task(self._run(vs, rs, ck))

    # -- the checker loop -----------------------------------------------------------------------
    async def _run(self, vs: _Vs, rs: _Rs, ck: _Ck) -> None:
        loop = asyncio.get_running_loop()
        s = ck.s
        first = self.rng.uniform(0.0, s.warmup) if s.warmup > 0 else 0.0
        due = loop.time() + first
        await asyncio.sleep(first)
        suspended = False
        while True:
            self.lags.append(max(0.0, loop.time() - due))
            if vs.conf.ha_suspend and vs.conf.addr is not None:
                local = is_local_address(vs.conf.addr)
                if local == suspended:  # state of the VIP changed
                    suspended = not local
                    kind = "suspended" if suspended else "resumed"
                    self._event(
                        kind,
                        vs.label,
                        _rs_label(rs.conf),
                        f"VIP {vs.conf.addr} is {'absent' if suspended else 'present'}",
                    )
                if suspended:
                    due = loop.time() + s.delay_loop
                    await asyncio.sleep(s.delay_loop)
                    continue
            try:
                res = await ck.checker.check()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a checker bug must not stop the others
                res = CheckResult(False, f"checker error: {e!r}")
            self.checks_done += 1
            ck.last, ck.last_time = res, self.clock()
            delay = s.delay_loop
            if res.ok:
                changed = not ck.up or res.weight != ck.weight
                ck.up, ck.failures, ck.weight = True, 0, res.weight
            else:
                ck.failures += 1
                if ck.up and ck.failures <= s.retry:
                    changed = False
                    delay = s.delay_before_retry
                else:
                    changed = ck.up
                    ck.up = False
            if changed:
                self._rs_changed(vs, rs, res.reason)
            due = loop.time() + delay
            await asyncio.sleep(delay)

    def _rs_changed(self, vs: _Vs, rs: _Rs, reason: str) -> None:
        alive = all(ck.up for ck in rs.checkers)
        weight = rs.conf.weight + sum(
            ck.weight - rs.conf.weight for ck in rs.checkers if ck.up and ck.weight is not None
        )
        weight = max(0, weight)
        label = _rs_label(rs.conf)
        if alive != rs.alive:
            rs.alive, rs.reason, rs.since = alive, reason, self.clock()
            self._event("up" if alive else "down", vs.label, label, reason)
            self._script(rs.conf.notify_up if alive else rs.conf.notify_down)
        if weight != rs.weight:
            rs.weight = weight
            self._event("weight", vs.label, label, f"weight {weight}: {reason}")
        self._eval_quorum(vs)
        self._reconcile(vs)

    # -- quorum ---------------------------------------------------------------------------------
    def _live_weight(self, vs: _Vs) -> int:
        return sum(rs.weight for rs in vs.rs if rs.alive)

    def _eval_quorum(self, vs: _Vs, initial: bool = False) -> None:
        live = self._live_weight(vs)
        q, h = vs.conf.quorum, vs.conf.hysteresis
        if vs.quorum_up and live < q - h:
            vs.quorum_up = False
            self._event("quorum-lost", vs.label, "", f"live weight {live} < quorum {q} - hysteresis {h}")
            if not initial:
                self._script(vs.conf.quorum_down)
        elif not vs.quorum_up and live >= q + h:
            vs.quorum_up = True
            self._event("quorum-gained", vs.label, "", f"live weight {live} >= quorum {q} + hysteresis {h}")
            if not initial:
                self._script(vs.conf.quorum_up)

    def _sorry_active(self, vs: _Vs) -> bool:
        return not vs.quorum_up and vs.conf.sorry_server is not None

    # -- programming the backend ------------------------------------------------------------------
    def _wanted(self, vs: _Vs, key: ServiceKey) -> dict[tuple[IPAddr, int], DestConfig]:
        sorry = self._sorry_active(vs)
        out: dict[tuple[IPAddr, int], DestConfig] = {}
        for rs in vs.rs:
            if rs.alive and not sorry:
                d = dest_config(vs.conf, rs.conf, key, rs.weight)
            elif rs.inhibit:
                d = dest_config(vs.conf, rs.conf, key, 0)
            else:
                continue
            out.setdefault((d.addr, d.port), d)
        if sorry or vs.conf.sorry_server_inhibit:
            # sorry_server_inhibit: out of use, the sorry server stays with weight 0
            d2 = sorry_config(vs.conf, key, 1 if sorry else 0)
            if d2 is not None:
                out.setdefault((d2.addr, d2.port), d2)
        return out

    def _reconcile(self, vs: _Vs) -> None:
        for rule in vs.rules:
            have = vs.programmed.setdefault(rule.key, {})
            want = self._wanted(vs, rule.key)
            for ident in [i for i in have if i not in want]:
                # removed by hand meanwhile (ENOENT) or not: either way it is no longer ours to track
                self._call(
                    vs, _dest_label(ident), self.backend.del_dest, rule.key, ident[0], ident[1], quiet=ENOENT
                )
                del have[ident]
            for ident, d in want.items():
                cur = have.get(ident)
                if cur == d:
                    continue
                label = _dest_label(ident)
                if cur is None:
                    # added by hand meanwhile (EEXIST): make it what we want
                    ok = self._call(
                        vs, label, self.backend.add_dest, rule.key, d, quiet=EEXIST
                    ) or self._call(vs, label, self.backend.edit_dest, rule.key, d)
                else:
                    ok = self._call(
                        vs, label, self.backend.edit_dest, rule.key, d, quiet=ENOENT
                    ) or self._call(vs, label, self.backend.add_dest, rule.key, d)
                if ok:
                    have[ident] = d

    def _add_service(self, vs: _Vs, rule: ServiceRule) -> None:
        have = vs.programmed.setdefault(rule.key, {})
        try:
            self.backend.add_service(rule.key, rule.cfg)
            return
        except IPVSError:
            pass
        # already there (restored from a rules file, or left by an earlier run): take it over with
        # our settings, and start from the real servers it has so the next reconcile fixes them
        self._call(vs, "", self.backend.edit_service, rule.key, rule.cfg)
        snapshot = getattr(self.backend, "snapshot", None)
        if snapshot is None:
            return
        for sv in snapshot().services:
            if sv.key() == rule.key:
                for dv in sv.dests:
                    have[(dv.ip, dv.port)] = dv.config()

    def _call(
        self, vs: _Vs | None, rs: str, fn: Callable[..., object], *args: object, quiet: int = 0
    ) -> bool:
        """Call the backend; a refusal becomes an error event (unless its errno is `quiet`) and False."""
        try:
            fn(*args)
        except IPVSError as e:
            if e.errno != quiet:
                self._event("error", vs.label if vs is not None else "", rs, f"{fn.__name__}: {e}")
            return False
        return True

    def _health_word(self, vs: _Vs, key: ServiceKey, addr: IPAddr, d: DestConfig) -> str:
        sorry = sorry_config(vs.conf, key)
        if self._sorry_active(vs) and sorry is not None and (sorry.addr, sorry.port) == (addr, d.port):
            return "sorry"
        for rs in vs.rs:
            if rs.conf.addr == addr:
                return "up" if rs.alive else "down"
        return ""

    # -- events and scripts -----------------------------------------------------------------------
    def _event(self, kind: str, vs: str, rs: str, reason: str) -> None:
        ev = HealthEvent(self.clock(), kind, vs, rs, reason)
        self.events.append(ev)
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:  # a broken listener must not stop the checkers
                pass

    def _script(self, cmd: str | None) -> None:
        if not cmd or not self.run_scripts:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._run_script(cmd))
        self._scripts.add(task)
        task.add_done_callback(self._scripts.discard)

    async def _run_script(self, cmd: str) -> None:
        try:
            argv = shlex.split(cmd)
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        except (OSError, ValueError) as e:
            self._event("error", "", "", f"script {cmd!r}: {e}")
            return
        try:
            async with asyncio.timeout(SCRIPT_TIMEOUT):
                rc = await proc.wait()
        except (TimeoutError, asyncio.CancelledError) as e:
            proc.kill()
            await asyncio.shield(proc.wait())
            if isinstance(e, asyncio.CancelledError):
                raise
            self._event("error", "", "", f"script {cmd!r} killed after {SCRIPT_TIMEOUT:g}s")
            return
        if rc != 0:
            self._event("error", "", "", f"script {cmd!r} exited {rc}")


def _dest_label(ident: tuple[IPAddr, int]) -> str:
    a = f"[{ident[0]}]" if ident[0].version == 6 else str(ident[0])
    return f"{a}:{ident[1]}"


def _key_label(key: ServiceKey) -> str:
    if key.fwmark:
        return f"FWM {key.fwmark}"
    assert key.addr is not None
    a = f"[{key.addr}]" if key.addr.version == 6 else str(key.addr)
    return f"{key.protocol.label} {a}:{key.port}"
