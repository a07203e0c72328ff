"""Effective checker settings: the checker's own, else its real server's, else its virtual server's,
else keepalived's default for that checker kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from pylvs.health.checkers.base import Target
from pylvs.health.config.model import CheckerConf, RealServerConf, VirtualServerConf

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Settings:
    delay_loop: float
    connect_timeout: float
    retry: int
    delay_before_retry: float
    warmup: float  # the first check starts at a random time in [0, warmup]
    alpha: bool
    inhibit_on_failure: bool
    virtualhost: str | None


def _first(default: T, *values: T | None) -> T:
    for v in values:
        if v is not None:
            return v
    return default


def settings(vs: VirtualServerConf, rs: RealServerConf, ck: CheckerConf | None) -> Settings:
    """The settings a checker runs with (ck None: the real server's own, for inhibit_on_failure/alpha)."""
    lv = [t for t in ((ck.timing if ck is not None else None), rs.timing, vs.timing) if t is not None]
    kind = ck.kind if ck is not None else ""
    delay_loop = _first(60.0, *(t.delay_loop for t in lv))
    default_dbr = {"HTTP_GET": 3.0, "SSL_GET": 3.0, "DNS_CHECK": delay_loop}.get(kind, 1.0)
    return Settings(
        delay_loop=delay_loop,
        connect_timeout=_first(5.0, *(t.connect_timeout for t in lv)),
        retry=_first({"DNS_CHECK": 3, "MISC_CHECK": 0}.get(kind, 1), *(t.retry for t in lv)),
        delay_before_retry=_first(default_dbr, *(t.delay_before_retry for t in lv)),
        warmup=_first(delay_loop, *(t.warmup for t in lv)),
        alpha=_first(False, *(t.alpha for t in lv)),
        inhibit_on_failure=_first(False, *(t.inhibit_on_failure for t in lv)),
        virtualhost=_first(None, *(t.virtualhost for t in lv)),
    )


def target(rs: RealServerConf, ck: CheckerConf, s: Settings) -> Target:
    return Target(
        addr=ck.connect_ip or rs.addr,
        port=ck.connect_port if ck.connect_port is not None else rs.port,
        timeout=s.connect_timeout,
        bindto=ck.bindto,
        bind_port=ck.bind_port,
        virtualhost=s.virtualhost,
        delay_loop=s.delay_loop,
    )
