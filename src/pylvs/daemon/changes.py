"""One accepted-or-refused rule change, as the API carries it and as the daemon applies it.

Single endpoints (POST /services, ...) and the batch endpoint build the same Change values, so a
change means the same thing whichever way it arrives, and the event log can describe it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pylvs.core.errors import Op
from pylvs.core.snapshot import DaemonView
from pylvs.core.types import DestConfig, Fwd, IPAddr, ServiceConfig, ServiceKey, TunFlags, TunType
from pylvs.daemon import codec
from pylvs.daemon.codec import BadRequest
from pylvs.daemon.rules import Rules

KINDS: dict[str, Op] = {
    "add_service": Op.ADD_SERVICE,
    "edit_service": Op.EDIT_SERVICE,
    "del_service": Op.DEL_SERVICE,
    "flush": Op.FLUSH,
    "add_dest": Op.ADD_DEST,
    "edit_dest": Op.EDIT_DEST,
    "del_dest": Op.DEL_DEST,
    "zero": Op.ZERO,
    "set_timeouts": Op.SET_TIMEOUT,
    "start_daemon": Op.START_DAEMON,
    "stop_daemon": Op.STOP_DAEMON,
}


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    key: ServiceKey | None = None
    svc: ServiceConfig | None = None
    dest: DestConfig | None = None
    addr: IPAddr | None = None
    port: int = 0
    timeouts: tuple[int, int, int] = (0, 0, 0)
    daemon: DaemonView | None = None
    state: str = ""
    syncid: int = 0

    @property
    def op(self) -> Op:
        return KINDS[self.kind]

    def apply(self, rules: Rules) -> None:
        """Apply to `rules`; raises IPVSError (nothing changed) when the core refuses."""
        d = rules.director
        k = self.kind
        if k == "add_dest":
            assert self.key is not None and self.dest is not None
            d.add_dest(self.key, self.dest)
        elif k == "add_service":
            assert self.key is not None and self.svc is not None
            d.add_service(self.key, self.svc)
        elif k == "edit_service":
            assert self.key is not None and self.svc is not None
            d.edit_service(self.key, self.svc)
        elif k == "del_service":
            assert self.key is not None
            d.del_service(self.key)
        elif k == "flush":
            d.flush()
        elif k == "edit_dest":
            assert self.key is not None and self.dest is not None
            d.edit_dest(self.key, self.dest)
        elif k == "del_dest":
            assert self.key is not None and self.addr is not None
            d.del_dest(self.key, self.addr, self.port)
        elif k == "zero":
            d.zero(self.key)
        elif k == "set_timeouts":
            d.set_timeouts(*self.timeouts)
        elif k == "start_daemon":
            assert self.daemon is not None
            rules.start_daemon(self.daemon)
        elif k == "stop_daemon":
            rules.stop_daemon(self.state, self.syncid)

    @property
    def changes_rules(self) -> bool:
        """False for changes that leave the saved rules alone (zeroing counters)."""
        return self.kind != "zero"

    def describe(self) -> str:
        """One line for the event log."""
        parts: list[str] = []
        if self.key is not None:
            parts.append(codec.service_id(self.key))
        if self.svc is not None:
            parts.append(f"scheduler={self.svc.scheduler}")
            if self.svc.persistent:
                parts.append(f"persistent={self.svc.timeout}")
        if self.dest is not None:
            c = self.dest
            parts.append(f"{codec.hostport(c.addr, c.port)} {c.fwd.label} weight={c.weight}")
        if self.addr is not None:
            parts.append(codec.hostport(self.addr, self.port))
        if self.kind == "set_timeouts":
            parts.append("tcp={} tcpfin={} udp={}".format(*self.timeouts))
        if self.daemon is not None:
            parts.append(f"{self.daemon.state} mcast={self.daemon.mcast_ifn} syncid={self.daemon.syncid}")
        if self.kind == "stop_daemon":
            parts.append(self.state)
        return " ".join(parts) or self.kind

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.kind}
        if self.key is not None:
            out["service"] = codec.key_to_json(self.key)
        elif self.kind == "zero":
            out["service"] = None
        if self.svc is not None:
            out["config"] = codec.service_config_to_json(self.svc)
        if self.dest is not None:
            out["dest"] = codec.dest_config_to_json(self.dest)
        if self.addr is not None:
            out["addr"] = str(self.addr)
            out["port"] = self.port
        if self.kind == "set_timeouts":
            out["tcp"], out["tcpfin"], out["udp"] = self.timeouts
        if self.daemon is not None:
            out["daemon"] = daemon_to_json(self.daemon)
        if self.kind == "stop_daemon":
            out["state"] = self.state
            out["syncid"] = self.syncid
        return out


def daemon_to_json(d: DaemonView) -> dict[str, Any]:
    return {
        "state": d.state,
        "mcast_ifn": d.mcast_ifn,
        "syncid": d.syncid,
        "maxlen": d.maxlen,
        "group": d.group,
        "port": d.port,
        "ttl": d.ttl,
    }


_DAEMON_FIELDS = frozenset({"state", "mcast_ifn", "syncid", "maxlen", "group", "port", "ttl"})


def parse_daemon(v: Any) -> DaemonView:
    op = Op.START_DAEMON
    d = codec._obj(v, "daemon", op)
    codec._only(d, _DAEMON_FIELDS, "daemon", op)
    state = codec._str(d, "state", op, 16)
    if state not in ("master", "backup"):
        raise BadRequest("state must be master or backup", op)
    return DaemonView(
        state=state,
        mcast_ifn=codec._str(d, "mcast_ifn", op, codec.IFNAME_MAX, "eth0"),
        syncid=codec._int(d, "syncid", op, 0, 255, 0),
        maxlen=codec._int(d, "maxlen", op, 0, 65535, 0),
        group=codec._str(d, "group", op, 64, ""),
        port=codec._int(d, "port", op, 0, 65535, 0),
        ttl=codec._int(d, "ttl", op, 0, 255, 0),
    )


_OP_FIELDS: dict[str, frozenset[str]] = {
    "add_service": frozenset({"op", "service", "config"}),
    "edit_service": frozenset({"op", "service", "config"}),
    "del_service": frozenset({"op", "service"}),
    "flush": frozenset({"op"}),
    "add_dest": frozenset({"op", "service", "dest"}),
    "edit_dest": frozenset({"op", "service", "dest"}),
    "del_dest": frozenset({"op", "service", "addr", "port"}),
    "zero": frozenset({"op", "service"}),
    "set_timeouts": frozenset({"op", "tcp", "tcpfin", "udp"}),
    "start_daemon": frozenset({"op", "daemon"}),
    "stop_daemon": frozenset({"op", "state", "syncid"}),
}


def parse_change(v: Any) -> Change:
    """A Change from its JSON form ({"op": kind, ...}); BadRequest when malformed."""
    d = codec._obj(v, "change", None)
    kind = d.get("op")
    if not isinstance(kind, str) or kind not in KINDS:
        raise BadRequest(f"op must be one of {', '.join(KINDS)}")
    op = KINDS[kind]
    codec._only(d, _OP_FIELDS[kind], kind, op)
    if kind in ("add_service", "edit_service"):
        key = codec.parse_key(d.get("service"), op)
        return Change(kind, key=key, svc=codec.parse_service_config(d.get("config", {}), op, key.af))
    if kind == "del_service":
        return Change(kind, key=codec.parse_key(d.get("service"), op))
    if kind == "flush":
        return Change(kind)
    if kind in ("add_dest", "edit_dest"):
        key = codec.parse_key(d.get("service"), op)
        return Change(kind, key=key, dest=codec.parse_dest_config(d.get("dest"), op))
    if kind == "del_dest":
        key = codec.parse_key(d.get("service"), op)
        return Change(
            kind, key=key, addr=codec.parse_ip(d.get("addr"), op), port=codec._int(d, "port", op, 0, 65535)
        )
    if kind == "zero":
        sv = d.get("service")
        return Change(kind, key=None if sv is None else codec.parse_key(sv, op))
    if kind == "set_timeouts":
        t = tuple(codec._int(d, n, op, 0, 2**31 - 1) for n in ("tcp", "tcpfin", "udp"))
        return Change(kind, timeouts=(t[0], t[1], t[2]))
    if kind == "start_daemon":
        return Change(kind, daemon=parse_daemon(d.get("daemon")))
    # stop_daemon
    state = codec._str(d, "state", op, 16)
    if state not in ("master", "backup"):
        raise BadRequest("state must be master or backup", op)
    return Change(kind, state=state, syncid=codec._int(d, "syncid", op, 0, 255, 0))


def rule_change(
    kind: str, key: ServiceKey | None, svc: ServiceConfig | None, dest: DestConfig | None
) -> Change:
    """Change(kind, key=key, svc=svc, dest=dest) without the frozen dataclass's __init__, which costs
    more than the core's own add_dest when a restore makes 100,000 of them. The same object."""
    c: Change = _new(Change)
    _c_kind(c, kind)
    _c_key(c, key)
    _c_svc(c, svc)
    _c_dest(c, dest)
    _c_addr(c, None)
    _c_port(c, 0)
    _c_timeouts(c, (0, 0, 0))
    _c_daemon(c, None)
    _c_state(c, "")
    _c_syncid(c, 0)
    return c


_new = object.__new__
_c_kind, _c_key, _c_svc, _c_dest, _c_addr, _c_port, _c_timeouts, _c_daemon, _c_state, _c_syncid = (
    Change.__dict__[f.name].__set__ for f in fields(Change)
)


def change_from_call(method: str, args: tuple[Any, ...]) -> Change:
    """The Change a Backend call `method(*args)` makes (ipvsadm's BatchOp carries exactly that)."""
    if method in ("add_service", "edit_service"):
        return Change(method, key=args[0], svc=args[1])
    if method == "del_service":
        return Change(method, key=args[0])
    if method == "flush":
        return Change(method)
    if method in ("add_dest", "edit_dest"):
        return Change(method, key=args[0], dest=args[1])
    if method == "del_dest":
        return Change(method, key=args[0], addr=args[1], port=args[2])
    if method == "zero":
        return Change(method, key=args[0] if args else None)
    if method == "set_timeouts":
        return Change(method, timeouts=(args[0], args[1], args[2]))
    if method == "start_daemon":
        return Change(method, daemon=args[0])
    if method == "stop_daemon":
        return Change(method, state=args[0], syncid=args[1] if len(args) > 1 else 0)
    raise ValueError(f"unknown change {method!r}")


# -- compact form, for big batches (pylvsadm -R): positional arrays, parsed on a fast path ------------
#   ["S", service_id, scheduler, flags, timeout, netmask, pe_name]                     add_service
#   ["D", service_id, addr, port, fwd, weight, u_thr, l_thr, tun_type, tun_port, tun_flags]  add_dest
# Every other change travels in the object form.
_FWD_BY_INT = {int(f): f for f in Fwd}
_TUN_TYPE_BY_INT = {int(t): t for t in TunType}
_TUN_FLAGS_BY_INT = {v: TunFlags(v) for v in range(4)}
_DEST_RANGES = (
    (0, 65535),  # port
    (0, 7),  # fwd (then checked against the enum)
    (-(2**31), 2**31 - 1),  # weight
    (0, codec.U32),  # u_threshold
    (0, codec.U32),  # l_threshold
    (0, 2),  # tun_type
    (0, 65535),  # tun_port
    (0, 3),  # tun_flags
)


def change_to_compact(c: Change) -> list[Any] | dict[str, Any]:
    if c.kind == "add_dest" and c.key is not None and c.dest is not None:
        d = c.dest
        return [
            "D",
            codec.service_id(c.key),
            str(d.addr),
            d.port,
            int(d.fwd),
            d.weight,
            d.u_threshold,
            d.l_threshold,
            int(d.tun_type),
            d.tun_port,
            int(d.tun_flags),
        ]
    if c.kind == "add_service" and c.key is not None and c.svc is not None:
        s = c.svc
        return ["S", codec.service_id(c.key), s.scheduler, int(s.flags), s.timeout, s.netmask, s.pe_name]
    return c.to_json()


class ChangeParser:
    """Parses changes in either form; remembers service ids, which repeat in a batch."""

    def __init__(self) -> None:
        self._keys: dict[str, ServiceKey] = {}

    def _key(self, sid: Any, op: Op) -> ServiceKey:
        if not isinstance(sid, str) or len(sid) > 80:
            raise BadRequest("service id must be a string", op)
        key = self._keys.get(sid)
        if key is None:
            key = codec.parse_service_id(sid, op)
            self._keys[sid] = key
        return key

    def parse(self, v: Any) -> Change:
        if not isinstance(v, list):
            return parse_change(v)
        tag = v[0] if v else None
        if tag == "D" and len(v) == 11:
            op = Op.ADD_DEST
            key = self._key(v[1], op)
            nums = v[3:]
            for n, (lo, hi) in zip(nums, _DEST_RANGES, strict=True):
                if type(n) is not int or not lo <= n <= hi:
                    raise BadRequest("compact add_dest: a number is missing or out of range", op)
            fwd = _FWD_BY_INT.get(nums[1])
            if fwd is None:
                raise BadRequest("compact add_dest: bad forwarding method", op)
            dest = DestConfig(
                codec.parse_ip(v[2], op),
                nums[0],
                fwd,
                nums[2],
                nums[3],
                nums[4],
                _TUN_TYPE_BY_INT[nums[5]],
                nums[6],
                _TUN_FLAGS_BY_INT[nums[7]],
            )
            return Change("add_dest", key=key, dest=dest)
        if tag == "S" and len(v) == 7:
            op = Op.ADD_SERVICE
            key = self._key(v[1], op)
            cfg = codec.parse_service_config(
                {"scheduler": v[2], "flags": v[3], "timeout": v[4], "netmask": v[5], "pe_name": v[6]},
                op,
                key.af,
            )
            return Change("add_service", key=key, svc=cfg)
        raise BadRequest('a compact change is ["S", ...7 items] or ["D", ...11 items]')
