"""Value objects shared by the core, the ipvsadm front end and the engines.

These mirror the structures user space hands the kernel (ip_vs_service_user / ip_vs_dest_user):
what a rule *is*, apart from the live objects (VirtualService, RealServer) that carry state.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field, fields
from enum import IntEnum, IntFlag

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

AF_INET = socket.AF_INET.value  # 2
AF_INET6 = socket.AF_INET6.value  # 10


class Proto(IntEnum):
    """IP protocol numbers of the services IPVS balances."""

    IP = 0  # fwmark templates
    TCP = 6
    UDP = 17
    SCTP = 132

    @property
    def label(self) -> str:
        return {0: "IP", 6: "TCP", 17: "UDP", 132: "SCTP"}[int(self)]


class SvcFlags(IntFlag):
    """Service flags (IP_VS_SVC_F_*)."""

    NONE = 0
    PERSISTENT = 0x01
    HASHED = 0x02
    ONEPACKET = 0x04
    SCHED1 = 0x08  # sh-fallback / mh-fallback / flag-1
    SCHED2 = 0x10  # sh-port / mh-port / flag-2
    SCHED3 = 0x20  # flag-3


SCHED_FLAG_MASK = SvcFlags.SCHED1 | SvcFlags.SCHED2 | SvcFlags.SCHED3


class Fwd(IntEnum):
    """Forwarding methods (IP_VS_CONN_F_FWD_MASK values); FULLNAT is our extension."""

    MASQ = 0
    LOCALNODE = 1
    TUNNEL = 2
    DROUTE = 3
    BYPASS = 4
    FULLNAT = 7  # not in the kernel; chosen outside the kernel's range

    @property
    def label(self) -> str:
        return _FWD_LABEL[self]


_FWD_LABEL = {
    Fwd.MASQ: "Masq",
    Fwd.LOCALNODE: "Local",
    Fwd.TUNNEL: "Tunnel",
    Fwd.DROUTE: "Route",
    Fwd.BYPASS: "Bypass",
    Fwd.FULLNAT: "FullNat",
}


class TunType(IntEnum):
    IPIP = 0
    GUE = 1
    GRE = 2


class TunFlags(IntFlag):
    NOCSUM = 0
    CSUM = 1
    REMCSUM = 2


DEFAULT_PERSIST_TIMEOUT = 360
MAX_WEIGHT = 2147483647
INT_MAX = 2147483647


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """Identity of a virtual service: (af, protocol, addr, port) or (af, fwmark)."""

    af: int
    protocol: Proto
    addr: IPAddr | None
    port: int
    fwmark: int = 0

    @staticmethod
    def for_addr(protocol: Proto, addr: IPAddr, port: int) -> ServiceKey:
        af = AF_INET if addr.version == 4 else AF_INET6
        return ServiceKey(af, protocol, addr, port, 0)

    @staticmethod
    def for_fwmark(fwmark: int, af: int = AF_INET) -> ServiceKey:
        # The kernel stores TCP as the protocol of a fwmark service; it is ignored.
        return ServiceKey(af, Proto.TCP, None, 0, fwmark)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Everything -A / -E sends: the kernel replaces all of it on an edit."""

    scheduler: str = "wlc"
    flags: SvcFlags = SvcFlags.NONE
    timeout: int = 0  # persistence timeout, seconds (0 when not persistent)
    netmask: int = 0xFFFFFFFF  # IPv4: a 32-bit mask; IPv6: a prefix length 1..128
    pe_name: str = ""

    @property
    def persistent(self) -> bool:
        return bool(self.flags & SvcFlags.PERSISTENT)


@dataclass(frozen=True, slots=True)
class DestConfig:
    """Everything -a / -e sends for one real server."""

    addr: IPAddr
    port: int
    fwd: Fwd = Fwd.DROUTE
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: TunType = TunType.IPIP
    tun_port: int = 0
    tun_flags: TunFlags = TunFlags.NOCSUM

    @property
    def af(self) -> int:
        return AF_INET if self.addr.version == 4 else AF_INET6


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The three timeouts `--set tcp tcpfin udp` changes (seconds)."""

    tcp: int = 900
    tcpfin: int = 120
    udp: int = 300


@dataclass(frozen=True, slots=True)
class Packet:
    """What the core needs to know about one packet; engines fill it from frames or sockets."""

    protocol: Proto
    saddr: IPAddr
    sport: int
    daddr: IPAddr
    dport: int
    fwmark: int = 0
    length: int = 0  # IP packet length in bytes, for the byte counters
    tcp_flags: int = 0  # TCP header flags byte (FIN 0x01 SYN 0x02 RST 0x04 ACK 0x10)
    sctp_chunk: int = -1  # type of the first SCTP chunk (and see sctp_abort_next)
    sctp_abort_next: bool = False
    payload: bytes = field(default=b"", repr=False)  # only the SIP persistence engine looks at it

    @property
    def af(self) -> int:
        return AF_INET if self.saddr.version == 4 else AF_INET6


TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10


def make_dest_config(addr: IPAddr, port: int, fwd: Fwd, weight: int) -> DestConfig:
    """DestConfig(addr, port, fwd, weight) with the other fields at their defaults, built without the
    frozen dataclass's __init__ (a parsed 100,000-server restore spends its time there otherwise).
    For values already checked by the caller; the same object as the constructor's."""
    c: DestConfig = object.__new__(DestConfig)
    _dc_addr(c, addr)
    _dc_port(c, port)
    _dc_fwd(c, fwd)
    _dc_weight(c, weight)
    _dc_u(c, 0)
    _dc_l(c, 0)
    _dc_tun_type(c, TunType.IPIP)
    _dc_tun_port(c, 0)
    _dc_tun_flags(c, TunFlags.NOCSUM)
    return c


# DestConfig's slot setters in field order (frozen blocks setattr, not the slot descriptors).
_dc_addr, _dc_port, _dc_fwd, _dc_weight, _dc_u, _dc_l, _dc_tun_type, _dc_tun_port, _dc_tun_flags = (
    DestConfig.__dict__[f.name].__set__ for f in fields(DestConfig)
)
