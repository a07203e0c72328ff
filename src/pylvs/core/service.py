"""Virtual services and their real servers (ip_vs_service / ip_vs_dest), with the kernel's rules
for list order, thresholds and the OVERLOAD flag."""

from __future__ import annotations

import itertools
import operator
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from pylvs.core.stats import Stats
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

if TYPE_CHECKING:
    from pylvs.core.sched.base import Scheduler

    def addr_int(addr: IPAddr) -> int:
        """int(addr)."""
        ...

else:
    addr_int = operator.attrgetter("_ip")  # int(addr) without a Python-level call


def addr_text(addr: IPAddr) -> str:
    """str(addr); IPv4 formatted from its int (ipaddress's __str__ is several times slower)."""
    if type(addr) is IPv4Address:
        ip = addr_int(addr)
        return f"{ip >> 24}.{ip >> 16 & 255}.{ip >> 8 & 255}.{ip & 255}"
    return str(addr)


_REVISIONS = itertools.count(1)


def touch(svc: VirtualService) -> None:
    """Record that `svc`'s rules changed (see VirtualService.rev)."""
    svc.rev = next(_REVISIONS)


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
        self.af = AF_INET if isinstance(cfg.addr, IPv4Address) else AF_INET6  # cfg.af, cheaper
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
        n = self.total - self.activeconns
        return n if n > 0 else 0

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
        # A new number from one process-wide counter whenever this service's rules (its settings, its
        # servers' settings, the list) change: lets the rules file reuse the text of unchanged services.
        self.rev = next(_REVISIONS)
        self.scheduler: Scheduler | None = None
        self.stats = Stats()
        self.sched_data: object = None  # per-service scratch a scheduler may keep
        # find_dest's index: (port, address) -> server, valid while it describes this very list
        self._ix: dict[tuple[int, object], RealServer] = {}
        self._ix_of: list[RealServer] | None = None
        self._ix_len = -1

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

    # int(flags) first: IntFlag's own & runs in Python, once per new connection
    @property
    def persistent(self) -> bool:
        return bool(int(self.flags) & _PERSISTENT)

    @property
    def onepacket(self) -> bool:
        return bool(int(self.flags) & _ONEPACKET)

    def find_dest(self, addr: IPAddr, port: int) -> RealServer | None:
        dests = self.dests
        if self._ix_of is not dests or self._ix_len != len(dests):
            self._reindex()  # the list changed without us (first use, or changed in place)
        d = self._ix.get(_dest_key(addr, port))
        if d is not None and d.port == port and d.addr == addr:
            return d
        return None

    def _reindex(self) -> None:
        dests = self.dests
        ix: dict[tuple[int, object], RealServer] = {}
        for d in reversed(dests):  # the first match in list order wins, as the scan's did
            ix[_dest_key(d.addr, d.port)] = d
        self._ix = ix
        self._ix_of = dests
        self._ix_len = len(dests)

    def dest_added(self, dest: RealServer) -> None:
        """`dest` was just inserted at the front of the list (keeps find_dest's index current)."""
        if self._ix_of is self.dests and self._ix_len == len(self.dests) - 1:
            self._ix[_dest_key(dest.addr, dest.port)] = dest
            self._ix_len += 1

    def dest_removed(self, dest: RealServer) -> None:
        """`dest` was just removed from the list."""
        self._ix_len = -1  # rebuilt on the next find_dest (deletes are rare)

    def list_after(self, pos: RealServer | None) -> list[RealServer]:
        """Servers strictly after `pos` in list order (all of them when pos is None, the HEAD)."""
        if pos is None:
            return self.dests
        return self.dests[self.dests.index(pos) + 1 :]

    def __repr__(self) -> str:
        return f"<VirtualService {self.key} {self.scheduler_name}>"


_PERSISTENT = int(SvcFlags.PERSISTENT)
_ONEPACKET = int(SvcFlags.ONEPACKET)


def _dest_key(addr: IPAddr, port: int) -> tuple[int, object]:
    """find_dest's index key: IPv4 by its int (IPv4Address hashes in Python), IPv6 as itself."""
    if isinstance(addr, IPv4Address):
        return (port, addr_int(addr))
    return (port, addr)


def nat_like(fwd: Fwd) -> bool:
    """Forwarding methods whose replies cross the director."""
    return fwd in (Fwd.MASQ, Fwd.FULLNAT)
