"""keepalived.conf for pylvs: load_config(path) -> KeepalivedConfig, or ConfigError(file, line, reason).

cfg = load_config("/etc/keepalived/keepalived.conf")
for w in cfg.warnings: print(w)      # unknown keywords, vrrp_* sections, ... one line each
"""

from __future__ import annotations

import os

from pylvs.core.types import AF_INET, AF_INET6, Fwd
from pylvs.health.config.errors import ConfigError, Where
from pylvs.health.config.keywords import TOP, Walker
from pylvs.health.config.lexer import read_config
from pylvs.health.config.model import (
    CheckerConf,
    GlobalDefs,
    GroupEntry,
    KeepalivedConfig,
    Method,
    RealServerConf,
    Timing,
    UrlCheck,
    VirtualServerConf,
    VirtualServerGroup,
)

__all__ = [
    "CheckerConf",
    "ConfigError",
    "GlobalDefs",
    "GroupEntry",
    "KeepalivedConfig",
    "Method",
    "RealServerConf",
    "Timing",
    "UrlCheck",
    "VirtualServerConf",
    "VirtualServerGroup",
    "Where",
    "load_config",
]


def load_config(path: str, config_id: str | None = None) -> KeepalivedConfig:
    """Read and check a keepalived.conf; raise ConfigError (file, line, reason) when it is refused."""
    stmts, src = read_config(path, config_id)
    cfg = KeepalivedConfig(os.path.abspath(path))
    cfg.files = src.files
    cfg.warnings.extend(src.warnings)
    Walker(cfg).walk(stmts, TOP, cfg, "the top level")
    _check(cfg)
    return cfg


def _families(vs: VirtualServerConf, cfg: KeepalivedConfig) -> set[int]:
    if vs.addr is not None:
        return {AF_INET if vs.addr.version == 4 else AF_INET6}
    if vs.group is not None:
        fams: set[int] = set()
        for e in cfg.groups[vs.group].entries:
            if e.first is not None:
                fams.add(AF_INET if e.first.version == 4 else AF_INET6)
            elif e.family:
                fams.add(e.family)
        return fams
    return {vs.ip_family} if vs.ip_family else set()


def _check(cfg: KeepalivedConfig) -> None:
    """Cross-statement rules keepalived applies, with the same outcome (refuse, or fix and warn)."""
    seen: dict[str, Where] = {}
    for vs in cfg.virtual_servers:
        if vs.group is not None and vs.group not in cfg.groups:
            raise ConfigError(
                vs.where, f"virtual_server group {vs.group}: no virtual_server_group of that name"
            )
        ident = f"{vs.label()} {vs.protocol}"
        if ident in seen:
            raise ConfigError(vs.where, f"virtual_server {vs.label()} is already defined at {seen[ident]}")
        seen[ident] = vs.where
        if vs.port == 0 and vs.addr is not None and vs.persistence_timeout is None:
            raise ConfigError(
                vs.where, f"virtual_server {vs.label()}: a port may be omitted only when persistent"
            )
        fams = _families(vs, cfg)
        method = vs.method or Method()
        for rs in vs.real_servers:
            m = rs.method or method
            rs_fam = AF_INET if rs.addr.version == 4 else AF_INET6
            if m.fwd != Fwd.TUNNEL and fams and rs_fam not in fams:
                raise ConfigError(
                    rs.where,
                    f"real server {rs.addr} is not of the address family of virtual server {vs.label()} "
                    "(only tunnelled real servers may differ)",
                )
            if vs.fwmark and rs.port:
                cfg.warnings.append(f"{rs.where}: fwmark virtual server: real server port {rs.port} cleared")
                rs.port = 0
            elif vs.addr is not None and vs.port and m.fwd in (Fwd.DROUTE, Fwd.TUNNEL) and rs.port != vs.port:
                cfg.warnings.append(
                    f"{rs.where}: real server port {rs.port} differs from virtual server port {vs.port}; "
                    f"{'DR' if m.fwd == Fwd.DROUTE else 'TUN'} cannot change ports, using {vs.port}"
                )
                rs.port = vs.port
        total = sum(rs.weight for rs in vs.real_servers)
        if vs.real_servers and vs.quorum > total:
            cfg.warnings.append(
                f"{vs.where}: quorum {vs.quorum} of virtual server {vs.label()} exceeds the total weight "
                f"{total} of its real servers; using {total}"
            )
            vs.quorum = total
        if vs.fwmark and vs.protocol is not None:
            cfg.warnings.append(f"{vs.where}: fwmark virtual server: 'protocol' is ignored")
