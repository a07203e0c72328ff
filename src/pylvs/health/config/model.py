"""What a keepalived.conf says, as plain objects (before it is turned into IPVS rules).

Options that keepalived lets a virtual server, a real server and a checker each set (delay_loop,
connect_timeout, retry, ...) are kept as given (None = not set here); resolve.py works out the
effective value: the checker's own, else its real server's, else its virtual server's, else the
checker kind's default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pylvs.core.types import Fwd, IPAddr, Proto, TunFlags, TunType
from pylvs.health.config.errors import Where


@dataclass(slots=True)
class Timing:
    """Checker timing options that inherit virtual server -> real server -> checker."""

    delay_loop: float | None = None
    connect_timeout: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    warmup: float | None = None
    alpha: bool | None = None
    inhibit_on_failure: bool | None = None
    virtualhost: str | None = None


@dataclass(slots=True)
class Method:
    """An lb_kind / lvs_method: the forwarding method and, for tunnels, the tunnel's settings."""

    fwd: Fwd = Fwd.MASQ
    tun_type: TunType = TunType.IPIP
    tun_port: int = 0
    tun_flags: TunFlags = TunFlags.NOCSUM


@dataclass(slots=True)
class UrlCheck:
    path: str = "/"
    digest: str | None = None  # lower-case hex MD5 of the body
    status_codes: tuple[tuple[int, int], ...] = ()  # inclusive ranges; () = 200-299
    virtualhost: str | None = None
    where: Where | None = None

    def status_ok(self, code: int) -> bool:
        ranges = self.status_codes or ((200, 299),)
        return any(lo <= code <= hi for lo, hi in ranges)


@dataclass(slots=True)
class CheckerConf:
    kind: str  # TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, DNS_CHECK
    where: Where
    timing: Timing = field(default_factory=Timing)
    connect_ip: IPAddr | None = None
    connect_port: int | None = None
    bindto: IPAddr | None = None
    bind_port: int | None = None
    # HTTP_GET / SSL_GET
    urls: list[UrlCheck] = field(default_factory=list)
    http_protocol: str = "1.0"
    enable_sni: bool = False
    sni_name: str | None = None
    # MISC_CHECK
    misc_path: str | None = None
    misc_timeout: float | None = None
    misc_dynamic: bool = False
    # DNS_CHECK
    dns_type: str = "SOA"
    dns_name: str = "."


@dataclass(slots=True)
class RealServerConf:
    addr: IPAddr
    port: int
    where: Where
    weight: int = 1
    method: Method | None = None  # None: the virtual server's
    u_threshold: int = 0
    l_threshold: int = 0
    notify_up: str | None = None
    notify_down: str | None = None
    timing: Timing = field(default_factory=Timing)
    checkers: list[CheckerConf] = field(default_factory=list)


@dataclass(slots=True)
class GroupEntry:
    """One line of a virtual_server_group: an address range and port, or a fwmark."""

    first: IPAddr | None
    last: IPAddr | None
    port: int
    fwmark: int = 0
    family: int = 0  # AF_INET / AF_INET6 for a fwmark entry when given
    where: Where | None = None


@dataclass(slots=True)
class VirtualServerGroup:
    name: str
    where: Where
    entries: list[GroupEntry] = field(default_factory=list)


@dataclass(slots=True)
class VirtualServerConf:
    where: Where
    addr: IPAddr | None = None  # by address
    port: int = 0
    fwmark: int = 0  # by fwmark
    group: str | None = None  # by virtual_server_group
    protocol: Proto | None = None  # None: keepalived's default (UDP, as 2.2.7 does)
    scheduler: str | None = None
    method: Method | None = None
    persistence_timeout: int | None = None
    granularity: int | None = None  # persistence netmask as a prefix length (both families)
    persistence_engine: str = ""
    sched_flags: set[str] = field(default_factory=set)  # flag-1.. / sh-port / ops ...
    ha_suspend: bool = False
    omega: bool = False
    quorum: int = 1
    hysteresis: int = 0
    quorum_up: str | None = None
    quorum_down: str | None = None
    sorry_server: tuple[IPAddr, int] | None = None
    sorry_server_inhibit: bool = False
    sorry_method: Method | None = None
    ip_family: int = 0
    timing: Timing = field(default_factory=Timing)
    real_servers: list[RealServerConf] = field(default_factory=list)

    def label(self) -> str:
        if self.group is not None:
            return f"group {self.group}"
        if self.fwmark:
            return f"fwmark {self.fwmark}"
        a = f"[{self.addr}]" if self.addr is not None and self.addr.version == 6 else str(self.addr)
        return f"{a}:{self.port}"


@dataclass(slots=True)
class GlobalDefs:
    router_id: str | None = None
    lvs_flush: bool = False
    lvs_timeouts: tuple[int, int, int] | None = None  # tcp, tcpfin, udp (0 = leave as is)
    script_user: str | None = None
    values: dict[str, list[str]] = field(default_factory=dict)  # everything else, as written


@dataclass(slots=True)
class KeepalivedConfig:
    path: str
    global_defs: GlobalDefs = field(default_factory=GlobalDefs)
    groups: dict[str, VirtualServerGroup] = field(default_factory=dict)
    virtual_servers: list[VirtualServerConf] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
