"""Virtual services and their real servers (ip_vs_service / ip_vs_dest), with the kernel's rules
for list order, thresholds and the OVERLOAD flag."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.core.stats import Stats
from pylvs.core.types import (
    AF_INET,
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

if TYPE_CHECKING:
    from pylvs.core.sched.base import Scheduler


class RealServer:
    """A destination: one real server of one virtual service, with its live counters."""

    __slots__ = (
        "activeconns",
        "addr",
        "af",
        "available",
        "fwd",
        "l_threshold",
        "last_weight",
        "overload",
        "persistconns",
        "port",
        "seq",
        "service",
        "stats",
        "total",
        "trashed_at",
        "tun_flags",
        "tun_port",
        "tun_type",
        "u_threshold",
        "weight",
    )

    def __init__(self, cfg: DestConfig, service: VirtualService, seq: int) -> None:
        self.af = cfg.af
        self.addr: IPAddr = cfg.addr
        self.port = cfg.port
        self.service = service
        self.seq = seq  # creation order: a higher seq is nearer the front of the list
        self.fwd = cfg.fwd
        self.weight = cfg.weight
        self.last_weight = cfg.weight  # set on add even when 0 (mh reads it)
        self.u_threshold = cfg.u_threshold
        self.l_threshold = cfg.l_threshold
        self.tun_type = cfg.tun_type
        self.tun_port = cfg.tun_port
        self.tun_flags = cfg.tun_flags
        self.activeconns = 0
        self.total = 0  # normal (non-template) connections bound to this server
        self.persistconns = 0  # persistence templates bound to this server
        self.available = True
        self.overload = False
        self.stats = Stats()
        self.trashed_at: float | None = None

    @property
    def inactconns(self) -> int:
        return max(self.total - self.activeconns, 0)

    @property
    def config(self) -> DestConfig:
        return DestConfig(
            addr=self.addr,
            port=self.port,
            fwd=self.fwd,
            weight=self.weight,
            u_threshold=self.u_threshold,
            l_threshold=self.l_threshold,
            tun_type=self.tun_type,
            tun_port=self.tun_port,
            tun_flags=self.tun_flags,
        )

    def apply(self, cfg: DestConfig) -> None:
        """Replace every field, as the kernel does on add (resurrection) and edit."""
        self.fwd = cfg.fwd
        self.weight = cfg.weight
        if cfg.weight:
            self.last_weight = cfg.weight
        self.u_threshold = cfg.u_threshold
        self.l_threshold = cfg.l_threshold
        self.tun_type = cfg.tun_type
        self.tun_port = cfg.tun_port
        self.tun_flags = cfg.tun_flags
        self.update_overload_on_edit()

    # -- thresholds (spec §A5) --------------------------------------------------------------
    def l_eff(self) -> int:
        u = self.u_threshold
        return self.l_threshold if self.l_threshold else u - u // 4

    def update_overload_on_edit(self) -> None:
        u = self.u_threshold
        if u == 0:
            self.overload = False
        elif self.total >= u:
            self.overload = True
        elif self.total >= self.l_eff():
            pass
        else:
            self.overload = False

    def bind_conn(self) -> None:
        """A normal connection was bound to this server."""
        self.total += 1
        if self.u_threshold and self.total == self.u_threshold:
            self.overload = True

    def unbind_conn(self, was_active: bool) -> None:
        """A normal connection was released."""
        before = self.total
        self.total -= 1
        if was_active:
            self.activeconns -= 1
        if before == self.l_eff():
            if self.u_threshold == 0:
                self.overload = False
            elif self.total >= self.u_threshold:
                self.overload = True
            else:
                self.overload = False

    @property
    def tun_info(self) -> tuple[TunType, int, TunFlags]:
        return (self.tun_type, self.tun_port, self.tun_flags)

    def __repr__(self) -> str:
        return f"<RealServer {self.addr}:{self.port} w={self.weight} a={self.activeconns} t={self.total}>"


class VirtualService:
    """A virtual service and its real servers, kept in the kernel's list order (newest first)."""

    def __init__(self, key: ServiceKey, cfg: ServiceConfig, seq: int) -> None:
        self.key = key
        self.seq = seq
        self.scheduler_name = cfg.scheduler
        self.flags = cfg.flags
        self.timeout = cfg.timeout
        self.netmask = cfg.netmask
        self.pe_name = cfg.pe_name
        self.dests: list[RealServer] = []  # index 0 = newest = first in list order
        self.scheduler: Scheduler | None = None
        self.stats = Stats()
        self.sched_data: object = None  # per-service scratch a scheduler may keep

    # -- identity ---------------------------------------------------------------------------
    @property
    def af(self) -> int:
        return self.key.af

    @property
    def protocol(self) -> Proto:
        return self.key.protocol

    @property
    def addr(self) -> IPAddr | None:
        return self.key.addr

    @property
    def port(self) -> int:
        return self.key.port

    @property
    def fwmark(self) -> int:
        return self.key.fwmark

    @property
    def is_ipv4(self) -> bool:
        return self.key.af == AF_INET

    @property
    def config(self) -> ServiceConfig:
        return ServiceConfig(self.scheduler_name, self.flags, self.timeout, self.netmask, self.pe_name)

    @property
    def persistent(self) -> bool:
        return bool(self.flags & SvcFlags.PERSISTENT)

    @property
    def onepacket(self) -> bool:
        return bool(self.flags & SvcFlags.ONEPACKET)

    def find_dest(self, addr: IPAddr, port: int) -> RealServer | None:
        for d in self.dests:
            if d.port == port and d.addr == addr:
                return d
        return None

    def list_after(self, pos: RealServer | None) -> list[RealServer]:
        """Servers strictly after `pos` in list order (all of them when pos is None, the HEAD)."""
        if pos is None:
            return self.dests
        return self.dests[self.dests.index(pos) + 1 :]

    def __repr__(self) -> str:
        return f"<VirtualService {self.key} {self.scheduler_name}>"


def nat_like(fwd: Fwd) -> bool:
    """Forwarding methods whose replies cross the director."""
    return fwd in (Fwd.MASQ, Fwd.FULLNAT)
