"""Control operations on the rule set (ip_vs_ctl.c): services and real servers, with the kernel's
checks, error numbers, list order, scheduler hooks and the trash of deleted servers."""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterator
from ipaddress import IPv4Address

from pylvs.core.errors import IPVSError, Op
from pylvs.core.sched import get_scheduler
from pylvs.core.service import RealServer, VirtualService, addr_int, touch
from pylvs.core.stats import Stats
from pylvs.core.types import (
    AF_INET,
    AF_INET6,
    INT_MAX,
    DestConfig,
    IPAddr,
    ServiceConfig,
    ServiceKey,
    TunType,
)

KNOWN_PE = ("sip",)
TRASH_TTL = 120.0  # a deleted server with nothing pointing at it is freed after this long


def _dest_addr_ok(addr: IPAddr) -> bool:
    """The kernel wants a unicast (or local) address for a new real server."""
    if isinstance(addr, ipaddress.IPv4Address):
        # not multicast (224.0.0.0/4), not 0.0.0.0, not 255.255.255.255: on the int, which is
        # much cheaper than the ipaddress properties
        ip = addr_int(addr)
        return not (ip >> 28 == 0xE or ip == 0 or ip == 0xFFFFFFFF)
    # An IPv4-mapped address (::ffff:a.b.c.d) is not of the kernel's unicast type either.
    return not (
        addr.is_multicast or addr.is_unspecified or addr.is_link_local or addr.ipv4_mapped is not None
    )


class ServiceTable:
    """All virtual services, their real servers, the trash, and the global statistics."""

    def __init__(self) -> None:
        self._svcs: dict[ServiceKey, VirtualService] = {}
        # IPv4 address services again, by plain (protocol, address int, port): the packet path's
        # lookup without building and hashing a ServiceKey (IPv4Address hashes in Python)
        self._v4: dict[tuple[int, int, int], VirtualService] = {}
        self._seq = 0
        self.trash: list[RealServer] = []
        self.tot_stats = Stats()
        self.generation = 0  # bumped on every accepted change: engines and caches watch it
        # Lookup helpers kept up to date on every change (the packet path reads them).
        self.fwm_count = 0
        self.ftp_count = 0
        self.port0_count = 0

    # -- reading ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[VirtualService]:
        """Services in our stable 'hash table' order: address services, then fwmark services."""
        addr_svcs = [s for s in self._svcs.values() if not s.fwmark]
        fwm_svcs = [s for s in self._svcs.values() if s.fwmark]
        return iter(addr_svcs + fwm_svcs)

    def __len__(self) -> int:
        return len(self._svcs)

    @property
    def has_services(self) -> bool:
        return bool(self._svcs)

    def get(self, key: ServiceKey) -> VirtualService | None:
        return self._svcs.get(key)

    def find_v4(self, protocol: int, saddr: IPAddr, daddr: IPAddr, dport: int) -> VirtualService | None:
        """get(ServiceKey(AF_INET, protocol, daddr, dport, 0)) for an IPv4 packet; None may also
        mean "not indexed here" (the caller then does the general lookup)."""
        if type(daddr) is IPv4Address and type(saddr) is IPv4Address:
            return self._v4.get((protocol, addr_int(daddr), dport))
        return None

    @staticmethod
    def _v4_key(key: ServiceKey) -> tuple[int, int, int] | None:
        if key.af == AF_INET and not key.fwmark and type(key.addr) is IPv4Address:
            return (int(key.protocol), addr_int(key.addr), key.port)
        return None

    def require(self, key: ServiceKey, op: Op) -> VirtualService:
        # An IPv4 address service is found by plain ints first: hashing or comparing a ServiceKey
        # runs IPv4Address.__hash__/__eq__ in Python (a 100,000-server restore pays it per line).
        if not key.fwmark and key.af == AF_INET and type(key.addr) is IPv4Address:
            svc = self._v4.get((int(key.protocol), addr_int(key.addr), key.port))
            if svc is not None:
                return svc
        svc = self._svcs.get(key)
        if svc is None:
            raise IPVSError(op, errno.ESRCH)
        return svc

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _changed(self) -> None:
        self.generation += 1

    def _count(self, key: ServiceKey, delta: int) -> None:
        # Kept incrementally: recounting on every change made a 10,000-service restore quadratic.
        if key.fwmark:
            self.fwm_count += delta
        elif key.port == 21:
            self.ftp_count += delta
        elif key.port == 0:
            self.port0_count += delta

    # -- services ---------------------------------------------------------------------------
    @staticmethod
    def _check_service_cfg(key: ServiceKey, cfg: ServiceConfig, op: Op) -> type:
        sched_cls = get_scheduler(cfg.scheduler)
        if sched_cls is None:
            raise IPVSError(op, errno.ENOENT, f"unknown scheduler {cfg.scheduler!r}")
        if cfg.pe_name and cfg.pe_name not in KNOWN_PE:
            raise IPVSError(op, errno.ENOENT, f"unknown persistence engine {cfg.pe_name!r}")
        if key.af == AF_INET6 and not 1 <= cfg.netmask <= 128:
            raise IPVSError(op, errno.EINVAL, "IPv6 prefix length out of range")
        return sched_cls

    def add_service(self, key: ServiceKey, cfg: ServiceConfig) -> VirtualService:
        if key in self._svcs:
            raise IPVSError(Op.ADD_SERVICE, errno.EEXIST)
        sched_cls = self._check_service_cfg(key, cfg, Op.ADD_SERVICE)
        svc = VirtualService(key, cfg, self._next_seq())
        svc.scheduler = sched_cls(svc)
        self._svcs[key] = svc
        v4 = self._v4_key(key)
        if v4 is not None:
            self._v4[v4] = svc
        self._count(key, 1)
        self._changed()
        return svc

    def edit_service(self, key: ServiceKey, cfg: ServiceConfig) -> VirtualService:
        svc = self.require(key, Op.EDIT_SERVICE)
        sched_cls = self._check_service_cfg(key, cfg, Op.EDIT_SERVICE)
        if cfg.scheduler != svc.scheduler_name:
            # ip_vs_edit_service binds the new scheduler first (initialised with the current list)
            # and unbinds the old one only on success: when the new one refuses (mh with more
            # servers than table slots) the service is left exactly as it was
            try:
                new_sched = sched_cls(svc)
            except IPVSError as e:
                raise IPVSError(Op.EDIT_SERVICE, e.errno, e.detail) from None
            if svc.scheduler is not None:
                svc.scheduler.done()
            svc.scheduler_name = cfg.scheduler
            svc.sched_data = None
            svc.scheduler = new_sched
        svc.flags = cfg.flags
        svc.timeout = cfg.timeout
        svc.netmask = cfg.netmask
        svc.pe_name = cfg.pe_name
        touch(svc)
        self._changed()
        return svc

    def del_service(self, key: ServiceKey, now: float = 0.0) -> None:
        svc = self.require(key, Op.DEL_SERVICE)
        self._unlink_service(svc, now)
        self._changed()

    def _unlink_service(self, svc: VirtualService, now: float) -> None:
        for d in list(svc.dests):
            d.available = False
            d.trashed_at = now
            self.trash.append(d)
        svc.dests.clear()
        if svc.scheduler is not None:
            svc.scheduler.done()
        del self._svcs[svc.key]
        v4 = self._v4_key(svc.key)
        if v4 is not None and self._v4.get(v4) is svc:
            del self._v4[v4]
        self._count(svc.key, -1)

    def flush(self, now: float = 0.0) -> None:
        for svc in list(self._svcs.values()):
            self._unlink_service(svc, now)
        self._changed()

    def zero(self, key: ServiceKey | None) -> None:
        if key is None:
            for svc in self._svcs.values():
                self._zero_service(svc)
            self.tot_stats.zero()
        else:
            self._zero_service(self.require(key, Op.ZERO))

    @staticmethod
    def _zero_service(svc: VirtualService) -> None:
        svc.stats.zero()
        for d in svc.dests:
            d.stats.zero()

    # -- real servers -----------------------------------------------------------------------
    @staticmethod
    def _check_dest_cfg(cfg: DestConfig, op: Op) -> None:
        if cfg.weight < 0:
            raise IPVSError(op, errno.ERANGE, "negative weight")
        if cfg.l_threshold > cfg.u_threshold:
            raise IPVSError(op, errno.ERANGE, "lower threshold above upper threshold")
        if cfg.u_threshold > INT_MAX or cfg.weight > INT_MAX:
            raise IPVSError(op, errno.EINVAL, "threshold out of range")
        if cfg.tun_type == TunType.GUE and cfg.tun_port == 0:
            raise IPVSError(op, errno.EINVAL, "GUE tunnel needs a port")

    def add_dest(self, key: ServiceKey, cfg: DestConfig, now: float = 0.0) -> RealServer:
        svc = self.require(key, Op.ADD_DEST)
        self._check_dest_cfg(cfg, Op.ADD_DEST)
        if svc.find_dest(cfg.addr, cfg.port) is not None:
            raise IPVSError(Op.ADD_DEST, errno.EEXIST)
        dest = self._from_trash(svc, cfg) if self.trash else None
        if dest is None:
            if not _dest_addr_ok(cfg.addr):
                raise IPVSError(Op.ADD_DEST, errno.EINVAL, "real server address is not unicast")
            # a new server already holds every field apply() would set (and no connection, so
            # no OVERLOAD): apply() would change nothing
            dest = RealServer(cfg, svc, self._next_seq())
        else:
            dest.service = svc
            dest.seq = self._next_seq()
            dest.available = True
            dest.trashed_at = None
            dest.apply(cfg)
        dest.last_weight = cfg.weight  # an add sets last_weight even when the weight is 0
        svc.dests.insert(0, dest)
        svc.dest_added(dest)
        if svc.scheduler is not None:
            svc.scheduler.add_dest(dest)
        touch(svc)
        self._changed()
        return dest

    def _from_trash(self, svc: VirtualService, cfg: DestConfig) -> RealServer | None:
        for i, d in enumerate(self.trash):
            k = d.service.key
            if (
                d.af == cfg.af
                and d.addr == cfg.addr
                and d.port == cfg.port
                and k.fwmark == svc.key.fwmark
                and k.addr == svc.key.addr
                and k.port == svc.key.port
                and k.protocol == svc.key.protocol
                and k.af == svc.key.af
            ):
                del self.trash[i]
                return d
        return None

    def edit_dest(self, key: ServiceKey, cfg: DestConfig) -> RealServer:
        svc = self.require(key, Op.EDIT_DEST)
        self._check_dest_cfg(cfg, Op.EDIT_DEST)
        dest = svc.find_dest(cfg.addr, cfg.port)
        if dest is None:
            raise IPVSError(Op.EDIT_DEST, errno.ENOENT)
        dest.apply(cfg)
        if svc.scheduler is not None:
            svc.scheduler.upd_dest(dest)
        touch(svc)
        self._changed()
        return dest

    def del_dest(self, key: ServiceKey, addr: IPAddr, port: int, now: float = 0.0) -> RealServer:
        svc = self.require(key, Op.DEL_DEST)
        dest = svc.find_dest(addr, port)
        if dest is None:
            raise IPVSError(Op.DEL_DEST, errno.ENOENT)
        index = svc.dests.index(dest)
        del svc.dests[index]
        svc.dest_removed(dest)
        dest.available = False
        dest.trashed_at = now
        if svc.scheduler is not None:
            svc.scheduler.del_dest(dest, index)
        self.trash.append(dest)
        touch(svc)
        self._changed()
        return dest

    def purge_trash(self, now: float) -> None:
        """Free trashed servers nothing points at any more (the kernel checks every 60 s)."""
        self.trash = [
            d
            for d in self.trash
            if d.total or d.persistconns or d.trashed_at is None or now - d.trashed_at < TRASH_TTL
        ]
