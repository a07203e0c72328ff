"""pylvsd's `--config FILE` add-on: run a keepalived.conf's checkers against the daemon's rules.

pylvsd calls `await start(state, path)` (see pylvs.daemon.main); the handle it gets back has
`async reload()` (SIGHUP: re-read the file; a file with errors is refused and the old configuration
keeps running) and `async stop()`. Rule changes go through the daemon's own change path, so they
show in `pylvsadm -Ln`, in the event log and in the saved rules file like any other change.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pylvs.core.snapshot import ConnView, Snapshot
from pylvs.core.types import DestConfig, IPAddr, ServiceConfig, ServiceKey
from pylvs.health.config import ConfigError, KeepalivedConfig, load_config
from pylvs.health.manager import HealthEvent, HealthManager

log = logging.getLogger("pylvsd.health")
SOURCE = "health"
SAVE_DELAY = 1.0  # health flaps are saved at most about once a second


class StateBackend:
    """The Backend calls the HealthManager makes, applied synchronously to a pylvsd DaemonState."""

    def __init__(self, state: Any) -> None:
        from pylvs.daemon.changes import Change

        self._change = Change
        self.state = state
        self._save_task: asyncio.Task[None] | None = None

    def _do(self, **kw: Any) -> None:
        change = self._change(**kw)
        st = self.state
        st._set_now()
        st._refuse(change)  # the engine may refuse a server (e.g. a method it cannot do)
        change.apply(st.rules)  # raises IPVSError, nothing changed, when the core refuses
        st._after_change([change], SOURCE)
        self._schedule_save()

    def _schedule_save(self) -> None:
        if self.state.store is None or (self._save_task is not None and not self._save_task.done()):
            return
        self._save_task = asyncio.get_running_loop().create_task(self._save_later())

    async def _save_later(self) -> None:
        await asyncio.sleep(SAVE_DELAY)
        try:
            await self.state.save_now()
        except Exception as e:  # logged by the state too; a failed save must not stop the checks
            log.error("saving rules after health changes failed: %s", e)

    async def flush_save(self) -> None:
        if self._save_task is not None and not self._save_task.done():
            self._save_task.cancel()
            await self.state.save_now()

    def add_service(self, key: ServiceKey, cfg: ServiceConfig) -> None:
        self._do(kind="add_service", key=key, svc=cfg)

    def edit_service(self, key: ServiceKey, cfg: ServiceConfig) -> None:
        self._do(kind="edit_service", key=key, svc=cfg)

    def del_service(self, key: ServiceKey) -> None:
        self._do(kind="del_service", key=key)

    def add_dest(self, key: ServiceKey, cfg: DestConfig) -> None:
        self._do(kind="add_dest", key=key, dest=cfg)

    def edit_dest(self, key: ServiceKey, cfg: DestConfig) -> None:
        self._do(kind="edit_dest", key=key, dest=cfg)

    def del_dest(self, key: ServiceKey, addr: IPAddr, port: int) -> None:
        self._do(kind="del_dest", key=key, addr=addr, port=port)

    def flush(self) -> None:
        self._do(kind="flush")

    def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        self._do(kind="set_timeouts", timeouts=(tcp, tcpfin, udp))

    def snapshot(self) -> Snapshot:
        snap: Snapshot = self.state.snapshot()
        return snap

    def connections(self) -> list[ConnView]:
        conns: list[ConnView] = self.state.connections()
        return conns


class HealthAddon:
    """What pylvsd holds for --config: the manager, the file, and reload/stop."""

    def __init__(self, state: Any, path: str, config: KeepalivedConfig) -> None:
        self.state = state
        self.path = path
        self.backend = StateBackend(state)
        self.manager = HealthManager(self.backend, config, on_event=self._on_event)
        state.health = self  # for listings/API: state.health.manager.dest_health() / .to_json()

    def _on_event(self, ev: HealthEvent) -> None:
        where = " ".join(x for x in (ev.vs, ev.rs) if x)
        self.state.events.add(f"health-{ev.kind}", f"{where}: {ev.reason}" if where else ev.reason, SOURCE)
        level = logging.WARNING if ev.kind in ("down", "quorum-lost", "error") else logging.INFO
        log.log(level, "%s %s: %s", ev.kind, where, ev.reason)

    async def reload(self) -> None:
        try:
            new = load_config(self.path)
        except ConfigError as e:
            log.error("keepalived config reload refused, old configuration kept: %s", e)
            self.state.events.add("health-reload-failed", str(e), SOURCE)
            return
        for w in new.warnings:
            log.warning("%s", w)
        self.manager.apply_config(new)

    async def stop(self) -> None:
        # keepalived removes its services when it stops; so do we (and the saved file follows)
        await self.manager.stop(remove_services=True)
        await self.backend.flush_save()

    def to_json(self) -> dict[str, Any]:
        """The health state for the control API."""
        from dataclasses import asdict

        return {
            "config": self.path,
            "virtual_servers": [asdict(v) for v in self.manager.state()],
            "events": [asdict(e) for e in self.manager.events],
            "lag": self.manager.lag_stats(),
        }


async def start(state: Any, path: str) -> HealthAddon:
    """pylvsd's hook: load `path`, program its services, start checking. RuntimeError on a bad file."""
    try:
        config = load_config(path)
    except ConfigError as e:
        raise RuntimeError(f"--config refused: {e}") from None
    for w in config.warnings:
        log.warning("%s", w)
    addon = HealthAddon(state, path, config)
    await addon.manager.start()
    return addon
