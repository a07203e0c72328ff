"""What ipvsadm talks to: the kernel for ipvsadm, a Director (in-process) or pylvsd (over its API).

Every method raises pylvs.core.errors.IPVSError when the operation is refused, exactly as the kernel
would; nothing is changed then.

`apply_batch` is our addition for `-R`: the whole rules file is one transaction. A backend either
applies every operation or none; when one is refused it raises BatchError naming the operation's
index, and the rule set is left as it was (real ipvsadm stops half-way instead).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from pylvs.core.director import Director, take_snapshot
from pylvs.core.errors import IPVSError, Op
from pylvs.core.snapshot import ConnView, DaemonView, Snapshot
from pylvs.core.types import (
    DestConfig,
    Fwd,
    IPAddr,
    Proto,
    ServiceConfig,
    ServiceKey,
    SvcFlags,
    TunFlags,
    TunType,
)


class Backend(Protocol):
    def add_service(self, key: ServiceKey, cfg: ServiceConfig) -> None: ...
    def edit_service(self, key: ServiceKey, cfg: ServiceConfig) -> None: ...
    def del_service(self, key: ServiceKey) -> None: ...
    def flush(self) -> None: ...
    def add_dest(self, key: ServiceKey, cfg: DestConfig) -> None: ...
    def edit_dest(self, key: ServiceKey, cfg: DestConfig) -> None: ...
    def del_dest(self, key: ServiceKey, addr: IPAddr, port: int) -> None: ...
    def zero(self, key: ServiceKey | None) -> None: ...
    def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None: ...
    def start_daemon(self, daemon: DaemonView) -> None: ...
    def stop_daemon(self, state: str, syncid: int) -> None: ...
    def snapshot(self) -> Snapshot: ...
    def connections(self) -> list[ConnView]: ...
    def apply_batch(self, ops: Sequence[BatchOp]) -> None: ...


# -- batches ----------------------------------------------------------------------------------

BATCH_METHODS = (
    "add_service",
    "edit_service",
    "del_service",
    "flush",
    "add_dest",
    "edit_dest",
    "del_dest",
    "zero",
    "set_timeouts",
    "start_daemon",
    "stop_daemon",
)


@dataclass(frozen=True, slots=True)
class BatchOp:
    """One Backend call of a batch: the method's name and its positional arguments."""

    method: str
    args: tuple[Any, ...] = ()


class BatchError(IPVSError):
    """Operation number `index` (0-based) of a batch was refused; nothing of the batch was applied."""

    def __init__(self, index: int, error: IPVSError) -> None:
        super().__init__(error.op, error.errno, error.detail)
        self.index = index


def apply_op(target: Any, op: BatchOp) -> None:
    """Call op on anything with the Backend's (or Director's) control methods."""
    if op.method not in BATCH_METHODS:
        raise ValueError(f"unknown batch method {op.method!r}")
    getattr(target, op.method)(*op.args)


# JSON form of a batch, for backends that send it over a wire (pylvsd's API).
def _key_json(key: ServiceKey | None) -> dict[str, Any] | None:
    if key is None:
        return None
    return {
        "af": key.af,
        "protocol": int(key.protocol),
        "addr": None if key.addr is None else str(key.addr),
        "port": key.port,
        "fwmark": key.fwmark,
    }


def _key_from(d: dict[str, Any] | None) -> ServiceKey | None:
    if d is None:
        return None
    addr = None if d["addr"] is None else ipaddress.ip_address(d["addr"])
    return ServiceKey(int(d["af"]), Proto(int(d["protocol"])), addr, int(d["port"]), int(d["fwmark"]))


def _svc_from(d: dict[str, Any]) -> ServiceConfig:
    return ServiceConfig(
        str(d["scheduler"]),
        SvcFlags(int(d["flags"])),
        int(d["timeout"]),
        int(d["netmask"]),
        str(d["pe_name"]),
    )


def _dest_from(d: dict[str, Any]) -> DestConfig:
    return DestConfig(
        ipaddress.ip_address(d["addr"]),
        int(d["port"]),
        Fwd(int(d["fwd"])),
        int(d["weight"]),
        int(d["u_threshold"]),
        int(d["l_threshold"]),
        TunType(int(d["tun_type"])),
        int(d["tun_port"]),
        TunFlags(int(d["tun_flags"])),
    )


def batch_op_to_json(op: BatchOp) -> dict[str, Any]:
    """{"method": name, ...named arguments...}: plain JSON types only."""
    # The service and real-server objects are the ones pylvsd's API already speaks; imported here so
    # that ipvsadm's start-up does not load the daemon's codec.
    from pylvs.daemon.codec import dest_config_to_json, service_config_to_json

    m, a = op.method, op.args
    if m in ("add_service", "edit_service"):
        return {"method": m, "key": _key_json(a[0]), "service": service_config_to_json(a[1])}
    if m in ("add_dest", "edit_dest"):
        return {"method": m, "key": _key_json(a[0]), "dest": dest_config_to_json(a[1])}
    if m == "del_service":
        return {"method": m, "key": _key_json(a[0])}
    if m == "zero":
        return {"method": m, "key": _key_json(a[0])}
    if m == "del_dest":
        return {"method": m, "key": _key_json(a[0]), "addr": str(a[1]), "port": a[2]}
    if m == "flush":
        return {"method": m}
    if m == "set_timeouts":
        return {"method": m, "tcp": a[0], "tcpfin": a[1], "udp": a[2]}
    if m == "start_daemon":
        return {"method": m, "daemon": asdict(a[0])}
    if m == "stop_daemon":
        return {"method": m, "state": a[0], "syncid": a[1]}
    raise ValueError(f"unknown batch method {m!r}")


def batch_op_from_json(d: dict[str, Any]) -> BatchOp:
    """Inverse of batch_op_to_json; raises KeyError/ValueError/TypeError on a malformed object."""
    m = d["method"]
    if m in ("add_service", "edit_service"):
        return BatchOp(m, (_key_from(d["key"]), _svc_from(d["service"])))
    if m in ("add_dest", "edit_dest"):
        return BatchOp(m, (_key_from(d["key"]), _dest_from(d["dest"])))
    if m == "del_service":
        return BatchOp(m, (_key_from(d["key"]),))
    if m == "zero":
        return BatchOp(m, (_key_from(d.get("key")),))
    if m == "del_dest":
        return BatchOp(m, (_key_from(d["key"]), ipaddress.ip_address(d["addr"]), int(d["port"])))
    if m == "flush":
        return BatchOp(m)
    if m == "set_timeouts":
        return BatchOp(m, (int(d["tcp"]), int(d["tcpfin"]), int(d["udp"])))
    if m == "start_daemon":
        return BatchOp(m, (DaemonView(**d["daemon"]),))
    if m == "stop_daemon":
        return BatchOp(m, (str(d["state"]), int(d["syncid"])))
    raise ValueError(f"unknown batch method {m!r}")


# -- the in-process backend -------------------------------------------------------------------

DEFAULT_MCAST_GROUP4 = "224.0.0.81"
DEFAULT_MCAST_PORT = 8848
DEFAULT_MCAST_TTL = 1
ETH_MTU = 1500


def _system_interfaces() -> set[str]:
    try:
        return {name for _, name in socket.if_nameindex()}
    except OSError:
        return set()


def director_from_snapshot(snap: Snapshot) -> Director:
    """A Director holding the same rules (same service and list order) and timeouts as `snap`."""
    d = Director()
    for svc in snap.services:
        key = svc.key()
        d.add_service(key, svc.config())
        for dest in reversed(svc.dests):  # oldest first: each add goes to the front
            d.add_dest(key, dest.config())
    d.set_timeouts(*snap.timeouts)
    return d


class LocalBackend:
    """Backend over an in-process Director (pylvsd, `pylvs simulate`, the tests).

    Sync daemons are kept here: the Director has no use for them, only listings do.
    """

    def __init__(
        self,
        director: Director,
        clock: Callable[[], float],
        interfaces: Callable[[], set[str]] | None = None,
    ) -> None:
        self.director = director
        self.clock = clock
        self.interfaces = interfaces or _system_interfaces
        self.daemons: list[DaemonView] = []

    # -- rules --------------------------------------------------------------------------------
    def add_service(self, key: ServiceKey, cfg: ServiceConfig) -> None:
        self.director.add_service(key, cfg)

    def edit_service(self, key: ServiceKey, cfg: ServiceConfig) -> None:
        self.director.edit_service(key, cfg)

    def del_service(self, key: ServiceKey) -> None:
        self.director.del_service(key)

    def flush(self) -> None:
        self.director.flush()

    def add_dest(self, key: ServiceKey, cfg: DestConfig) -> None:
        self.director.add_dest(key, cfg)

    def edit_dest(self, key: ServiceKey, cfg: DestConfig) -> None:
        self.director.edit_dest(key, cfg)

    def del_dest(self, key: ServiceKey, addr: IPAddr, port: int) -> None:
        self.director.del_dest(key, addr, port)

    def zero(self, key: ServiceKey | None) -> None:
        self.director.zero(key)

    def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        self.director.set_timeouts(tcp, tcpfin, udp)

    # -- sync daemons (the kernel's checks and defaults) -----------------------------------------
    def start_daemon(self, daemon: DaemonView) -> None:
        if daemon.state not in ("master", "backup"):
            raise IPVSError(Op.START_DAEMON, errno.EINVAL)
        if any(d.state == daemon.state for d in self.daemons):
            raise IPVSError(Op.START_DAEMON, errno.EEXIST)
        if daemon.mcast_ifn not in self.interfaces():
            raise IPVSError(Op.START_DAEMON, errno.ENODEV)
        v6 = ":" in daemon.group
        group = daemon.group or DEFAULT_MCAST_GROUP4
        overhead = 48 if v6 else 28  # IP + UDP headers
        maxlen = daemon.maxlen or ETH_MTU - overhead
        started = replace(
            daemon,
            group=group,
            maxlen=min(maxlen, ETH_MTU - overhead),
            port=daemon.port or DEFAULT_MCAST_PORT,
            ttl=daemon.ttl or DEFAULT_MCAST_TTL,
        )
        self.daemons.append(started)
        self.daemons.sort(key=lambda d: d.state != "master")

    def stop_daemon(self, state: str, syncid: int) -> None:
        for i, d in enumerate(self.daemons):
            if d.state == state:
                del self.daemons[i]
                return
        raise IPVSError(Op.STOP_DAEMON, errno.ESRCH)

    # -- reading ------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return replace(take_snapshot(self.director), daemons=tuple(self.daemons))

    def connections(self) -> list[ConnView]:
        view = getattr(self.director, "connections_view", None)
        if view is None:
            return []
        return list(view(self.clock()))

    # -- transactions -------------------------------------------------------------------------
    def apply_batch(self, ops: Sequence[BatchOp]) -> None:
        """Check the whole batch on a throw-away copy of the rules, then apply it for real.

        Into an empty table (a restore at start-up) the batch is applied directly: undoing it on
        failure is just emptying the table again, and it halves the work for big files.
        """
        if not len(self.director.services):
            self._apply_to_empty(ops)
            return
        scratch = LocalBackend(director_from_snapshot(self.snapshot()), self.clock, self.interfaces)
        scratch.daemons = list(self.daemons)
        for i, op in enumerate(ops):
            try:
                apply_op(scratch, op)
            except IPVSError as e:
                raise BatchError(i, e) from e
        for op in ops:
            apply_op(self, op)

    def _apply_to_empty(self, ops: Sequence[BatchOp]) -> None:
        timeouts = self.director.timeouts
        daemons = list(self.daemons)
        for i, op in enumerate(ops):
            try:
                apply_op(self, op)
            except IPVSError as e:
                self.director.flush()
                self.director.timeouts = timeouts
                self.daemons = daemons
                raise BatchError(i, e) from e
