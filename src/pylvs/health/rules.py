"""From a keepalived virtual_server to IPVS rules: which services, and each real server's DestConfig.

A virtual_server by address or fwmark is one service; one using a virtual_server_group is one service
per address in its ranges (and per fwmark), all sharing the same real servers and checkers. Defaults
follow keepalived 2.2.7 as observed in the oracle: protocol UDP, scheduler wlc, forwarding NAT.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

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
)
from pylvs.health.config.model import KeepalivedConfig, Method, RealServerConf, VirtualServerConf

DEFAULT_PROTOCOL = Proto.UDP  # what keepalived 2.2.7 does when `protocol` is missing
DEFAULT_SCHEDULER = "wlc"

_FLAG_BITS = {
    "flag-1": SvcFlags.SCHED1,
    "sh-fallback": SvcFlags.SCHED1,
    "mh-fallback": SvcFlags.SCHED1,
    "flag-2": SvcFlags.SCHED2,
    "sh-port": SvcFlags.SCHED2,
    "mh-port": SvcFlags.SCHED2,
    "flag-3": SvcFlags.SCHED3,
    "ops": SvcFlags.ONEPACKET,
}


@dataclass(frozen=True, slots=True)
class ServiceRule:
    key: ServiceKey
    cfg: ServiceConfig


def _fwmark_family(vs: VirtualServerConf, fam: int) -> int:
    if fam:
        return fam
    if vs.ip_family:
        return vs.ip_family
    for rs in vs.real_servers:
        return AF_INET if rs.addr.version == 4 else AF_INET6
    return AF_INET


def service_config(vs: VirtualServerConf, af: int) -> ServiceConfig:
    flags = SvcFlags.NONE
    for word in vs.sched_flags:
        flags |= _FLAG_BITS[word]
    timeout = 0
    if vs.persistence_timeout is not None:
        flags |= SvcFlags.PERSISTENT
        timeout = vs.persistence_timeout
    if af == AF_INET6:
        netmask = vs.granularity if vs.granularity is not None else 128
    else:
        plen = min(vs.granularity, 32) if vs.granularity is not None else 32
        netmask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
    return ServiceConfig(vs.scheduler or DEFAULT_SCHEDULER, flags, timeout, netmask, vs.persistence_engine)


def services_of(vs: VirtualServerConf, cfg: KeepalivedConfig) -> list[ServiceRule]:
    proto = vs.protocol or DEFAULT_PROTOCOL
    keys: list[ServiceKey] = []
    if vs.fwmark:
        keys.append(ServiceKey.for_fwmark(vs.fwmark, _fwmark_family(vs, 0)))
    elif vs.addr is not None:
        keys.append(ServiceKey.for_addr(proto, vs.addr, vs.port))
    else:
        assert vs.group is not None
        addr_keys: list[ServiceKey] = []
        mark_keys: list[ServiceKey] = []
        for e in cfg.groups[vs.group].entries:
            if e.fwmark:
                mark_keys.append(ServiceKey.for_fwmark(e.fwmark, _fwmark_family(vs, e.family)))
                continue
            assert e.first is not None and e.last is not None
            for n in range(int(e.first), int(e.last) + 1):
                addr_keys.append(ServiceKey.for_addr(proto, ipaddress.ip_address(n), e.port))
        keys = addr_keys + mark_keys
    out: list[ServiceRule] = []
    seen: set[ServiceKey] = set()
    for k in keys:
        if k not in seen:
            seen.add(k)
            out.append(ServiceRule(k, service_config(vs, k.af)))
    return out


def _dest(key: ServiceKey, addr: IPAddr, port: int, method: Method, weight: int) -> DestConfig:
    if method.fwd in (Fwd.DROUTE, Fwd.TUNNEL):
        port = key.port  # these methods cannot change the port: keepalived resets it (0 for fwmarks)
    return DestConfig(
        addr,
        port,
        method.fwd,
        weight,
        tun_type=method.tun_type,
        tun_port=method.tun_port,
        tun_flags=method.tun_flags,
    )


def dest_config(vs: VirtualServerConf, rs: RealServerConf, key: ServiceKey, weight: int) -> DestConfig:
    d = _dest(key, rs.addr, rs.port, rs.method or vs.method or Method(), weight)
    return DestConfig(
        d.addr, d.port, d.fwd, d.weight, rs.u_threshold, rs.l_threshold, d.tun_type, d.tun_port, d.tun_flags
    )


def sorry_config(vs: VirtualServerConf, key: ServiceKey, weight: int = 1) -> DestConfig | None:
    if vs.sorry_server is None:
        return None
    addr, port = vs.sorry_server
    return _dest(key, addr, port, vs.sorry_method or vs.method or Method(), weight)
