"""JSON <-> core values for the control API, with strict validation.

Everything that comes off the wire passes through here first, so the core only ever sees well-typed,
in-range values. A malformed request raises BadRequest (a 400 with ipvsadm's EINVAL text); the core's
own refusals stay IPVSError with the kernel's errno.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import asdict
from typing import Any
from urllib.parse import quote, unquote

from pylvs.core.errors import Op, ipvs_strerror
from pylvs.core.snapshot import DaemonView, DestView, ServiceView, Snapshot
from pylvs.core.types import (
    AF_INET,
    AF_INET6,
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

U32 = 0xFFFFFFFF
SCHED_NAME_MAX = 15  # IP_VS_SCHEDNAME_MAXLEN - 1
PE_NAME_MAX = 31  # IP_VS_PENAME_MAXLEN - 1
IFNAME_MAX = 15

_PROTO_NAMES = {"tcp": Proto.TCP, "udp": Proto.UDP, "sctp": Proto.SCTP}
_FWD_NAMES = {
    "masq": Fwd.MASQ,
    "local": Fwd.LOCALNODE,
    "tunnel": Fwd.TUNNEL,
    "route": Fwd.DROUTE,
    "bypass": Fwd.BYPASS,
    "fullnat": Fwd.FULLNAT,
}


class BadRequest(Exception):
    """A request the API cannot even hand to the core: wrong shape, type or range."""

    def __init__(self, detail: str, op: Op | None = None, err: int = errno.EINVAL, status: int = 400) -> None:
        self.detail = detail
        self.op = op
        self.errno = err
        self.status = status
        self.message = ipvs_strerror(op or Op.ADD_SERVICE, err)
        super().__init__(detail)


# -- field helpers ----------------------------------------------------------------------------------
def _obj(v: Any, what: str, op: Op | None) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise BadRequest(f"{what} must be a JSON object", op)
    return v


def _int(d: dict[str, Any], name: str, op: Op | None, lo: int, hi: int, default: int | None = None) -> int:
    if name not in d or d[name] is None:
        if default is None:
            raise BadRequest(f"missing field {name!r}", op)
        return default
    v = d[name]
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"field {name!r} must be an integer", op)
    if not lo <= v <= hi:
        raise BadRequest(f"field {name!r} out of range [{lo}, {hi}]", op)
    return v


def _str(d: dict[str, Any], name: str, op: Op | None, maxlen: int, default: str | None = None) -> str:
    if name not in d or d[name] is None:
        if default is None:
            raise BadRequest(f"missing field {name!r}", op)
        return default
    v = d[name]
    if not isinstance(v, str):
        raise BadRequest(f"field {name!r} must be a string", op)
    if len(v) > maxlen or "\x00" in v:
        raise BadRequest(f"field {name!r} too long or not text", op)
    return v


def _only(d: dict[str, Any], allowed: frozenset[str], what: str, op: Op | None) -> None:
    extra = set(d) - allowed
    if extra:
        raise BadRequest(f"unknown field(s) in {what}: {', '.join(sorted(map(str, extra)))}", op)


def parse_ip(v: Any, op: Op | None, what: str = "addr") -> IPAddr:
    if not isinstance(v, str) or len(v) > 64:
        raise BadRequest(f"{what} must be an IP address string", op)
    try:
        # inet_pton accepts exactly the dotted quad, and is 5x faster than ipaddress's parser
        return ipaddress.IPv4Address(int.from_bytes(socket.inet_pton(socket.AF_INET, v), "big"))
    except OSError:
        pass
    try:
        return ipaddress.ip_address(v)
    except ValueError:
        raise BadRequest(f"{what} {v!r} is not an IP address", op) from None


# -- services ---------------------------------------------------------------------------------------
_KEY_FIELDS = frozenset({"af", "protocol", "addr", "port", "fwmark"})


def parse_key(v: Any, op: Op | None) -> ServiceKey:
    d = _obj(v, "service", op)
    _only(d, _KEY_FIELDS, "service", op)
    fwmark = _int(d, "fwmark", op, 0, U32, 0)
    if fwmark:
        af = _int(d, "af", op, 0, 255, AF_INET)
        if af not in (AF_INET, AF_INET6):
            raise BadRequest("af must be 2 (IPv4) or 10 (IPv6)", op, errno.EAFNOSUPPORT)
        return ServiceKey.for_fwmark(fwmark, af)
    proto_v = d.get("protocol")
    if isinstance(proto_v, str) and proto_v.lower() in _PROTO_NAMES:
        proto = _PROTO_NAMES[proto_v.lower()]
    elif isinstance(proto_v, int) and not isinstance(proto_v, bool) and proto_v in (6, 17, 132):
        proto = Proto(proto_v)
    else:
        raise BadRequest("protocol must be tcp, udp or sctp (or 6, 17, 132)", op)
    addr = parse_ip(d.get("addr"), op)
    port = _int(d, "port", op, 0, 65535)
    key = ServiceKey.for_addr(proto, addr, port)
    if "af" in d and d["af"] is not None and d["af"] != key.af:
        raise BadRequest("af does not match the address", op, errno.EAFNOSUPPORT)
    return key


def key_to_json(key: ServiceKey) -> dict[str, Any]:
    if key.fwmark:
        return {"af": key.af, "fwmark": key.fwmark}
    return {"af": key.af, "protocol": key.protocol.label.lower(), "addr": str(key.addr), "port": key.port}


_SCFG_FIELDS = frozenset({"scheduler", "flags", "timeout", "netmask", "pe_name"})


def parse_service_config(v: Any, op: Op | None, af: int = AF_INET) -> ServiceConfig:
    d = _obj(v, "config", op)
    _only(d, _SCFG_FIELDS, "config", op)
    sched = _str(d, "scheduler", op, SCHED_NAME_MAX, "wlc")
    flags = _int(d, "flags", op, 0, U32, 0)
    timeout = _int(d, "timeout", op, 0, U32, 0)
    netmask = _int(d, "netmask", op, 0, U32, U32 if af == AF_INET else 128)
    pe = _str(d, "pe_name", op, PE_NAME_MAX, "")
    return ServiceConfig(sched, SvcFlags(flags), timeout, netmask, pe)


def service_config_to_json(cfg: ServiceConfig) -> dict[str, Any]:
    return {
        "scheduler": cfg.scheduler,
        "flags": int(cfg.flags),
        "timeout": cfg.timeout,
        "netmask": cfg.netmask,
        "pe_name": cfg.pe_name,
    }


# -- real servers -----------------------------------------------------------------------------------
_DCFG_FIELDS = frozenset(
    {"addr", "port", "fwd", "weight", "u_threshold", "l_threshold", "tun_type", "tun_port", "tun_flags"}
)


def _fwd(d: dict[str, Any], op: Op | None) -> Fwd:
    v = d.get("fwd", int(Fwd.DROUTE))
    if isinstance(v, str) and v.lower() in _FWD_NAMES:
        return _FWD_NAMES[v.lower()]
    if isinstance(v, int) and not isinstance(v, bool) and v in {int(f) for f in Fwd}:
        return Fwd(v)
    raise BadRequest("fwd must be one of masq, local, tunnel, route, bypass, fullnat (or their numbers)", op)


def parse_dest_config(v: Any, op: Op | None) -> DestConfig:
    d = _obj(v, "dest", op)
    _only(d, _DCFG_FIELDS, "dest", op)
    return DestConfig(
        addr=parse_ip(d.get("addr"), op),
        port=_int(d, "port", op, 0, 65535),
        fwd=_fwd(d, op),
        # ipvsadm sends a C int: out-of-int range never reaches the kernel; negative is the core's ERANGE.
        weight=_int(d, "weight", op, -(2**31), 2**31 - 1, 1),
        u_threshold=_int(d, "u_threshold", op, 0, U32, 0),
        l_threshold=_int(d, "l_threshold", op, 0, U32, 0),
        tun_type=TunType(_int(d, "tun_type", op, 0, 2, 0)),
        tun_port=_int(d, "tun_port", op, 0, 65535, 0),
        tun_flags=TunFlags(_int(d, "tun_flags", op, 0, 3, 0)),
    )


def dest_config_to_json(cfg: DestConfig) -> dict[str, Any]:
    return {
        "addr": str(cfg.addr),
        "port": cfg.port,
        "fwd": int(cfg.fwd),
        "weight": cfg.weight,
        "u_threshold": cfg.u_threshold,
        "l_threshold": cfg.l_threshold,
        "tun_type": int(cfg.tun_type),
        "tun_port": cfg.tun_port,
        "tun_flags": int(cfg.tun_flags),
    }


# -- path ids: "tcp:10.0.0.1:80", "udp:[::1]:53", "fwm:66", "fwm6:66"; dests "10.0.0.1:80", "[::1]:80"
def _split_hostport(s: str, op: Op | None) -> tuple[IPAddr, int]:
    if s.startswith("["):
        host, sep, port_s = s[1:].partition("]:")
    else:
        host, sep, port_s = s.rpartition(":")
    if not sep or not port_s.isdigit() or len(port_s) > 5:
        raise BadRequest(f"bad address:port {s!r}", op)
    port = int(port_s)
    if port > 65535:
        raise BadRequest(f"bad port in {s!r}", op)
    return parse_ip(host, op), port


def parse_service_id(sid: str, op: Op | None) -> ServiceKey:
    sid = unquote(sid)
    kind, _, rest = sid.partition(":")
    kind = kind.lower()
    if kind in ("fwm", "fwm6"):
        if not rest.isdigit() or len(rest) > 10 or not 0 < int(rest) <= U32:
            raise BadRequest(f"bad fwmark in {sid!r}", op)
        return ServiceKey.for_fwmark(int(rest), AF_INET6 if kind == "fwm6" else AF_INET)
    if kind not in _PROTO_NAMES:
        raise BadRequest(
            f"bad service id {sid!r} (tcp:ADDR:PORT, udp:..., sctp:..., fwm:MARK, fwm6:MARK)", op
        )
    addr, port = _split_hostport(rest, op)
    return ServiceKey.for_addr(_PROTO_NAMES[kind], addr, port)


def hostport(addr: IPAddr | str, port: int) -> str:
    a = str(addr)
    return f"[{a}]:{port}" if ":" in a else f"{a}:{port}"


def service_id(key: ServiceKey) -> str:
    if key.fwmark:
        return f"fwm{'6' if key.af == AF_INET6 else ''}:{key.fwmark}"
    assert key.addr is not None
    return f"{key.protocol.label.lower()}:{hostport(key.addr, key.port)}"


def parse_dest_id(did: str, op: Op | None) -> tuple[IPAddr, int]:
    return _split_hostport(unquote(did), op)


def quote_id(s: str) -> str:
    return quote(s, safe=":")


# -- snapshots: the same JSON as Snapshot.to_json(), built without dataclasses.asdict (10x faster) ---
def dest_view_to_json(d: DestView) -> dict[str, Any]:
    return {
        "addr": d.addr,
        "port": d.port,
        "fwd": d.fwd,
        "weight": d.weight,
        "u_threshold": d.u_threshold,
        "l_threshold": d.l_threshold,
        "activeconns": d.activeconns,
        "inactconns": d.inactconns,
        "persistconns": d.persistconns,
        "tun_type": d.tun_type,
        "tun_port": d.tun_port,
        "tun_flags": d.tun_flags,
        "stats": d.stats,
        "rates": d.rates,
        "health": d.health,
    }


def service_view_to_json(s: ServiceView) -> dict[str, Any]:
    return {
        "af": s.af,
        "protocol": s.protocol,
        "addr": s.addr,
        "port": s.port,
        "fwmark": s.fwmark,
        "scheduler": s.scheduler,
        "flags": s.flags,
        "timeout": s.timeout,
        "netmask": s.netmask,
        "pe_name": s.pe_name,
        "dests": [dest_view_to_json(d) for d in s.dests],
        "stats": s.stats,
        "rates": s.rates,
    }


def snapshot_to_json(snap: Snapshot) -> dict[str, Any]:
    return {
        "services": [service_view_to_json(s) for s in snap.services],
        "stats": snap.stats,
        "rates": snap.rates,
        "timeouts": snap.timeouts,
        "conn_tab_size": snap.conn_tab_size,
        "daemons": [asdict(d) for d in snap.daemons],
    }


def _t5(v: Any) -> tuple[int, int, int, int, int]:
    return (v[0], v[1], v[2], v[3], v[4])


def _snapshot(services: list[ServiceView], data: dict[str, Any]) -> Snapshot:
    """The Snapshot of `services` and the document's top-level fields (the same in both forms)."""
    t = data["timeouts"]
    return Snapshot(
        services=tuple(services),
        stats=_t5(data["stats"]),
        rates=_t5(data["rates"]),
        timeouts=(t[0], t[1], t[2]),
        conn_tab_size=int(data["conn_tab_size"]),
        daemons=tuple(DaemonView(**d) for d in data.get("daemons", ())),
    )


def snapshot_from_json(data: dict[str, Any]) -> Snapshot:
    """Snapshot.from_json, faster (positional construction); KeyError/TypeError on a bad document."""
    services = []
    for s in data["services"]:
        dests = tuple(
            DestView(
                d["addr"],
                d["port"],
                d["fwd"],
                d["weight"],
                d["u_threshold"],
                d["l_threshold"],
                d["activeconns"],
                d["inactconns"],
                d["persistconns"],
                d.get("tun_type", 0),
                d.get("tun_port", 0),
                d.get("tun_flags", 0),
                _t5(d["stats"]),
                _t5(d["rates"]),
                d.get("health", ""),
            )
            for d in s["dests"]
        )
        services.append(
            ServiceView(
                s["af"],
                s["protocol"],
                s["addr"],
                s["port"],
                s["fwmark"],
                s["scheduler"],
                s["flags"],
                s["timeout"],
                s["netmask"],
                s["pe_name"],
                dests,
                _t5(s["stats"]),
                _t5(s["rates"]),
            )
        )
    return _snapshot(services, data)


# -- compact snapshots (GET /snapshot?compact=1): rows instead of objects, for big listings ----------
def snapshot_to_compact(snap: Snapshot) -> dict[str, Any]:
    return {
        "compact": 1,
        "services": [
            [
                s.af,
                s.protocol,
                s.addr,
                s.port,
                s.fwmark,
                s.scheduler,
                s.flags,
                s.timeout,
                s.netmask,
                s.pe_name,
                s.stats,
                s.rates,
                [
                    [
                        d.addr,
                        d.port,
                        d.fwd,
                        d.weight,
                        d.u_threshold,
                        d.l_threshold,
                        d.activeconns,
                        d.inactconns,
                        d.persistconns,
                        d.tun_type,
                        d.tun_port,
                        d.tun_flags,
                        d.stats,
                        d.rates,
                        d.health,
                    ]
                    for d in s.dests
                ],
            ]
            for s in snap.services
        ],
        "stats": snap.stats,
        "rates": snap.rates,
        "timeouts": snap.timeouts,
        "conn_tab_size": snap.conn_tab_size,
        "daemons": [asdict(d) for d in snap.daemons],
    }


def snapshot_from_compact(data: dict[str, Any]) -> Snapshot:
    services = []
    for s in data["services"]:
        dests = tuple(
            DestView(
                d[0],
                d[1],
                d[2],
                d[3],
                d[4],
                d[5],
                d[6],
                d[7],
                d[8],
                d[9],
                d[10],
                d[11],
                _t5(d[12]),
                _t5(d[13]),
                d[14],
            )
            for d in s[12]
        )
        services.append(
            ServiceView(
                s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], dests, _t5(s[10]), _t5(s[11])
            )
        )
    return _snapshot(services, data)
