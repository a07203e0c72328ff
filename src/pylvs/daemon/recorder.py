"""A Backend over a Rules that also records every change it accepts.

ipvsadm's -R runs against it: each line is applied at once (so errors come back per line, exactly as
the kernel would answer), and the accepted changes are kept so they can be sent to pylvsd as one
batch, or replayed. The daemon restores its rules file through it too.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import Any

from pylvs.core.errors import IPVSError
from pylvs.core.snapshot import ConnView, DaemonView, Snapshot
from pylvs.core.types import DestConfig, IPAddr, ServiceConfig, ServiceKey
from pylvs.daemon.changes import Change, change_from_call, rule_change
from pylvs.daemon.rules import Rules

RefuseDest = Callable[[ServiceKey, DestConfig], str | None]


class ChangeCalls:
    """The Backend protocol's rule-changing calls, each made into one Change for `_do()`."""

    def _do(self, change: Change) -> None:
        raise NotImplementedError

    def add_service(self, key: ServiceKey, cfg: ServiceConfig) -> None:
        self._do(rule_change("add_service", key, cfg, None))

    def edit_service(self, key: ServiceKey, cfg: ServiceConfig) -> None:
        self._do(Change("edit_service", key=key, svc=cfg))

    def del_service(self, key: ServiceKey) -> None:
        self._do(Change("del_service", key=key))

    def flush(self) -> None:
        self._do(Change("flush"))

    def add_dest(self, key: ServiceKey, cfg: DestConfig) -> None:
        self._do(rule_change("add_dest", key, None, cfg))

    def edit_dest(self, key: ServiceKey, cfg: DestConfig) -> None:
        self._do(Change("edit_dest", key=key, dest=cfg))

    def del_dest(self, key: ServiceKey, addr: IPAddr, port: int) -> None:
        self._do(Change("del_dest", key=key, addr=addr, port=port))

    def zero(self, key: ServiceKey | None) -> None:
        self._do(Change("zero", key=key))

    def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        self._do(Change("set_timeouts", timeouts=(tcp, tcpfin, udp)))

    def start_daemon(self, daemon: DaemonView) -> None:
        self._do(Change("start_daemon", daemon=daemon))

    def stop_daemon(self, state: str, syncid: int) -> None:
        self._do(Change("stop_daemon", state=state, syncid=syncid))


class RecordingBackend(ChangeCalls):
    def __init__(self, rules: Rules | None = None, refuse_dest: RefuseDest | None = None) -> None:
        self.rules = rules or Rules()
        self.changes: list[Change] = []
        self._refuse_dest = refuse_dest

    def _do(self, change: Change) -> None:
        if self._refuse_dest is not None and change.dest is not None and change.key is not None:
            msg = self._refuse_dest(change.key, change.dest)
            if msg is not None:
                raise engine_refusal(change, msg)
        change.apply(self.rules)
        self.changes.append(change)

    def snapshot(self) -> Snapshot:
        return self.rules.snapshot()

    def connections(self) -> list[ConnView]:
        return []

    # -- transactions: changes already went to `rules`, which the caller drops if the restore fails
    def transaction(self) -> RecordingBackend:
        return self

    def commit(self) -> int:
        return len(self.changes)

    def apply_batch(self, ops: Sequence[Any]) -> None:
        for op in ops:
            self._do(change_from_call(op.method, tuple(op.args)))


def engine_refusal(change: Change, message: str) -> IPVSError:
    """An IPVSError carrying the engine's own message (e.g. "-g is not possible with the proxy engine")."""
    e = IPVSError(change.op, errno.EINVAL, message)
    e.message = message
    e.args = (message,)
    return e


def changes_from_snapshot(snap: Snapshot) -> list[Change]:
    """The changes that rebuild `snap`'s rules on an empty table (list order kept)."""
    out: list[Change] = []
    for s in snap.services:
        key = s.key()
        out.append(Change("add_service", key=key, svc=s.config()))
        out.extend(Change("add_dest", key=key, dest=dv.config()) for dv in reversed(s.dests))
    out.append(Change("set_timeouts", timeouts=snap.timeouts))
    out.extend(Change("start_daemon", daemon=d) for d in snap.daemons)
    return out


def diff_changes(live: Snapshot, new: Snapshot) -> list[Change]:
    """The changes that turn `live`'s rules into `new`'s, touching only what differs (a reload keeps
    the connections and counters of everything it leaves alone). Sync daemons are not part of it."""
    out: list[Change] = []
    live_svcs = {s.key(): s for s in live.services}
    new_keys = {s.key() for s in new.services}
    out.extend(Change("del_service", key=k) for k in live_svcs if k not in new_keys)
    for s in new.services:
        key = s.key()
        cur = live_svcs.get(key)
        if cur is None:
            out.append(Change("add_service", key=key, svc=s.config()))
            out.extend(Change("add_dest", key=key, dest=dv.config()) for dv in reversed(s.dests))
            continue
        if cur.config() != s.config():
            out.append(Change("edit_service", key=key, svc=s.config()))
        cur_dests = {(dv.addr, dv.port): dv.config() for dv in cur.dests}
        new_dests = {(dv.addr, dv.port) for dv in s.dests}
        out.extend(
            Change("del_dest", key=key, addr=cfg.addr, port=cfg.port)
            for k, cfg in cur_dests.items()
            if k not in new_dests
        )
        for dv in reversed(s.dests):
            cfg = dv.config()
            old = cur_dests.get((dv.addr, dv.port))
            if old is None:
                out.append(Change("add_dest", key=key, dest=cfg))
            elif old != cfg:
                out.append(Change("edit_dest", key=key, dest=cfg))
    if tuple(live.timeouts) != tuple(new.timeouts):
        out.append(Change("set_timeouts", timeouts=new.timeouts))
    return out
