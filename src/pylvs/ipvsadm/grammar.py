"""ipvsadm's command line: argv -> Command, with ipvsadm 1.31's checks, messages and exit codes.

Spec: ipvs-semantics.md Part B (B1-B5). The checks run in ipvsadm's order, so the first error a
command line has is the one reported: option parsing (left to right), `--set` values, leftover
words, scheduler flags, the command/option table, then the per-command rules.

Our one extension: `--fullnat` (forwarding method FULLNAT), a fourth "forwarding-method" option.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from pylvs.core.snapshot import DaemonView
from pylvs.core.types import (
    AF_INET,
    AF_INET6,
    SCHED_FLAG_MASK,
    DestConfig,
    Fwd,
    Proto,
    ServiceConfig,
    ServiceKey,
    SvcFlags,
    TunFlags,
    TunType,
    make_dest_config,
)
from pylvs.ipvsadm.cnum import atoi, inet_aton, inet_pton4, inet_pton6, string_to_number, strtol_full
from pylvs.ipvsadm.names import NameResolver
from pylvs.ipvsadm.popt import ArgKind, OptSpec, OptTable, PoptError, Scanner

MAX_TIMEOUT = 86400 * 31
DEFAULT_PERSIST_TIMEOUT = 360
SCHEDNAME_MAX = 15  # IP_VS_SCHEDNAME_MAXLEN - 1
PENAME_MAX = 16
IFNAME_MAX = 15
SCHED_FLAGS_ARG_MAX = 127
WEIGHT_MAX = 2147483647  # the Debian binary's range (upstream: 65535)
INT_MAX = 2147483647
DEF_SCHED = "wlc"
DEF_MCAST_IFN = "eth0"

# Option names in ipvsadm's table order: the order in which the command/option table is checked.
OPTNAMES = (
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
)

# Per command: '+' required, 'x' illegal, '1' at most one of these, ' ' optional (same order).
_TABLE = {
    "add-service": "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
    "edit-service": "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
    "delete-service": "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "flush": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "list": " 11xxxxxxxxx11       xxxxxxx xxxxx",
    "add-server": "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
    "delete-server": "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "edit-server": "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
    "set": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "start-daemon": "xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",
    "stop-daemon": "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",
    "restore": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "save": " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "zero": "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
}

_TUN_NAMES = ("ipip", "gue", "gre")
# tun-port, tun-nocsum, tun-csum, tun-remcsum per tunnel type
_TUN_OPTS = ("tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
_TUN_TABLE = {0: "xxxx", 1: "+111", 2: "x11x"}

_COMMAND_TAGS = {
    "A": "add-service",
    "E": "edit-service",
    "D": "delete-service",
    "C": "flush",
    "L": "list",
    "l": "list",
    "Z": "zero",
    "a": "add-server",
    "e": "edit-server",
    "d": "delete-server",
    "set": "set",
    "R": "restore",
    "S": "save",
    "start-daemon": "start-daemon",
    "stop-daemon": "stop-daemon",
}

_N, _R, _O = ArgKind.NONE, ArgKind.REQUIRED, ArgKind.OPTIONAL
OPTION_TABLE: list[OptSpec] = [
    OptSpec("add-service", "A", _N, "A"),
    OptSpec("edit-service", "E", _N, "E"),
    OptSpec("delete-service", "D", _N, "D"),
    OptSpec("clear", "C", _N, "C"),
    OptSpec("list", "L", _N, "L"),
    OptSpec(None, "l", _N, "l"),
    OptSpec("zero", "Z", _N, "Z"),
    OptSpec("add-server", "a", _N, "a"),
    OptSpec("edit-server", "e", _N, "e"),
    OptSpec("delete-server", "d", _N, "d"),
    OptSpec("set", None, _N, "set"),
    OptSpec("help", "h", _N, "h"),
    OptSpec("version", "v", _N, "v"),
    OptSpec("restore", "R", _N, "R"),
    OptSpec("save", "S", _N, "S"),
    OptSpec("start-daemon", None, _R, "start-daemon"),
    OptSpec("stop-daemon", None, _R, "stop-daemon"),
    OptSpec("tcp-service", "t", _R, "t"),
    OptSpec("udp-service", "u", _R, "u"),
    OptSpec("sctp-service", None, _R, "sctp-service"),
    OptSpec("fwmark-service", "f", _R, "f"),
    OptSpec("scheduler", "s", _R, "s"),
    OptSpec("persistent", "p", _O, "p"),
    OptSpec("netmask", "M", _R, "M"),
    OptSpec("real-server", "r", _R, "r"),
    OptSpec("masquerading", "m", _N, "m"),
    OptSpec("ipip", "i", _N, "i"),
    OptSpec("gatewaying", "g", _N, "g"),
    OptSpec("fullnat", None, _N, "fullnat"),
    OptSpec("weight", "w", _R, "w"),
    OptSpec("u-threshold", "x", _R, "x"),
    OptSpec("l-threshold", "y", _R, "y"),
    OptSpec("numeric", "n", _N, "n"),
    OptSpec("connection", "c", _N, "c"),
    OptSpec("mcast-interface", None, _R, "mcast-interface"),
    OptSpec("syncid", None, _R, "syncid"),
    OptSpec("timeout", None, _N, "timeout"),
    OptSpec("daemon", None, _N, "daemon"),
    OptSpec("stats", None, _N, "stats"),
    OptSpec("rate", None, _N, "rate"),
    OptSpec("thresholds", None, _N, "thresholds"),
    OptSpec("persistent-conn", None, _N, "persistent-conn"),
    OptSpec("nosort", None, _N, "nosort"),
    OptSpec("sort", None, _N, "sort"),
    OptSpec("exact", "X", _N, "X"),
    OptSpec("ipv6", "6", _N, "6"),
    OptSpec("ops", "o", _N, "o"),
    OptSpec("pe", None, _R, "pe"),
    OptSpec("sched-flags", "b", _R, "b"),
    OptSpec("mcast-group", None, _R, "mcast-group"),
    OptSpec("mcast-port", None, _R, "mcast-port"),
    OptSpec("mcast-ttl", None, _R, "mcast-ttl"),
    OptSpec("sync-maxlen", None, _R, "sync-maxlen"),
    OptSpec("tun-info", None, _N, "tun-info"),
    OptSpec("tun-type", None, _R, "tun-type"),
    OptSpec("tun-port", None, _R, "tun-port"),
    OptSpec("tun-nocsum", None, _N, "tun-nocsum"),
    OptSpec("tun-csum", None, _N, "tun-csum"),
    OptSpec("tun-remcsum", None, _N, "tun-remcsum"),
]

_OPTS = OptTable(OPTION_TABLE)

# Options that only set a format flag (tag -> option name).
_FLAG_OPTS = {
    "c": "connection",
    "n": "numeric",
    "timeout": "timeout",
    "daemon": "daemon",
    "stats": "stats",
    "rate": "rate",
    "thresholds": "thresholds",
    "persistent-conn": "persistent-conn",
    "nosort": "nosort",
    "X": "exact",
    "tun-info": "tun-info",
    "o": "ops",
    "tun-nocsum": "tun-nocsum",
    "tun-csum": "tun-csum",
    "tun-remcsum": "tun-remcsum",
}

_FWD_TAGS = {"m": Fwd.MASQ, "i": Fwd.TUNNEL, "g": Fwd.DROUTE, "fullnat": Fwd.FULLNAT}
_PROTO_TAGS = {"t": Proto.TCP, "u": Proto.UDP, "sctp-service": Proto.SCTP}


class UsageError(Exception):
    """A command line ipvsadm rejects before talking to the kernel.

    kind: "fail" (a validation message, exit 2, ends a restore), "popt" (an option-scanner error,
    exit 255; a restore goes on with the next line) or "tryhelp" (exit 255, ends a restore).
    """

    def __init__(self, message: str, exit_code: int, kind: str = "fail") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.kind = kind


def _fail(msg: str) -> UsageError:
    return UsageError(msg, 2, "fail")


def tryhelp_text(prog: str) -> str:
    return f"Try `{prog} -h' or '{prog} --help' for more information."


@dataclass(frozen=True, slots=True)
class Format:
    numeric: bool = False
    stats: bool = False
    rate: bool = False
    thresholds: bool = False
    persistent_conn: bool = False
    nosort: bool = False
    exact: bool = False
    tun_info: bool = False


@dataclass(frozen=True)
class Command:
    """What one ipvsadm command line asks for (cmd is one of ipvsadm's command names, or
    "help" / "version")."""

    cmd: str
    options: frozenset[str] = frozenset()
    key: ServiceKey | None = None
    service: ServiceConfig = field(default_factory=ServiceConfig)
    dest: DestConfig | None = None
    fmt: Format = field(default_factory=Format)
    timeouts: tuple[int, int, int] = (0, 0, 0)
    daemon: DaemonView | None = None


# -- parsing helpers ------------------------------------------------------------------------------


@dataclass
class _Svc:
    """ipvsadm's ipvs_service_t while parsing (af 0 until an address or fwmark is given)."""

    af: int = 0
    protocol: int = 0
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    port: int = 0
    fwmark: int = 0
    netmask: int = 0xFFFFFFFF


def _str_is_digit(s: str) -> bool:
    return all("0" <= c <= "9" for c in s)


def parse_service(buf: str, svc: _Svc, names: NameResolver) -> int:
    """ipvsadm's parse_service(): 0 = error, 1 = address, 3 = address and port. Updates svc."""
    if _str_is_digit(buf):
        return 0
    portp: str | None = None
    if buf.startswith("["):
        inner, sep, after = buf[1:].partition("]")
        if not sep or not after.startswith(":"):
            return 0
        buf = inner
        portp = after[1:]
    a6 = inet_pton6(buf)
    if a6 is not None:
        svc.addr = a6
        svc.af = AF_INET6
        svc.netmask = 128
    else:
        # An address in brackets loses its port here, as in ipvsadm ([1.2.3.4]:80 has no ':').
        head, sep, tail = buf.rpartition(":")
        if sep:
            buf, portp = head, tail
        else:
            portp = None
        a4 = inet_aton(buf)
        if a4 is None:
            a4 = names.host_to_ipv4(buf)
        if a4 is None:
            return 0
        svc.addr = a4
        svc.af = AF_INET
    if portp is None:
        return 1
    port = string_to_number(portp, 0, 65535)
    if port is None:
        port = names.service_to_port(portp, svc.protocol)
    if port is None:
        return 0
    svc.port = port
    return 3


def _parse_timeout(buf: str | None, lo: int, hi: int) -> int:
    if buf is None:
        return DEFAULT_PERSIST_TIMEOUT
    v = string_to_number(buf, lo, hi)
    if v is None:
        raise _fail(f"invalid timeout value `{buf}' specified")
    return v


def _parse_fwmark(buf: str) -> int:
    v = strtol_full(buf)
    if v is None or not 1 <= v <= 0xFFFFFFFF:
        raise _fail(f"invalid fwmark value `{buf}' specified")
    return v


def _parse_sched_flags(sched: str, arg: str) -> SvcFlags:
    sched = sched or DEF_SCHED
    flags = SvcFlags.NONE
    words = [w for w in arg.split(",") if w]
    if not words:
        raise _fail("invalid scheduler flag `'")  # ipvsadm crashes here; we refuse the flags
    for flag in words:
        if flag in ("flag-1", "flag-2", "flag-3"):
            flags |= {"flag-1": SvcFlags.SCHED1, "flag-2": SvcFlags.SCHED2, "flag-3": SvcFlags.SCHED3}[flag]
        elif flag in ("sh-fallback", "sh-port", "mh-fallback", "mh-port"):
            flags |= SvcFlags.SCHED1 if flag.endswith("fallback") else SvcFlags.SCHED2
            if sched != flag[:2]:
                raise _fail(f"incompatible scheduler flag `{flag}'")
        else:
            raise _fail(f"invalid scheduler flag `{flag}'")
    return flags


_ALLOWED = {
    c: frozenset(n for n, m in zip(OPTNAMES, row, strict=True) if m != "x") for c, row in _TABLE.items()
}
_REQUIRED = {
    c: frozenset(n for n, m in zip(OPTNAMES, row, strict=True) if m == "+") for c, row in _TABLE.items()
}
_ONE_OF = {
    c: frozenset(n for n, m in zip(OPTNAMES, row, strict=True) if m == "1") for c, row in _TABLE.items()
}


def _check_table(cmd: str, options: set[str]) -> None:
    if options <= _ALLOWED[cmd] and _REQUIRED[cmd] <= options and len(options & _ONE_OF[cmd]) <= 1:
        return  # the common case; the loop below finds the first violation in ipvsadm's order
    row = _TABLE[cmd]
    last = ""
    count = 0
    for j, name in enumerate(OPTNAMES):
        mark = row[j]
        if name not in options:
            if mark == "+":
                raise _fail(f"You need to supply the '{name}' option for the '{cmd}' command")
        else:
            if mark == "x":
                raise _fail(f"Illegal '{name}' option with the '{cmd}' command")
            if mark == "1":
                count += 1
                if count == 1:
                    last = name
                    continue
                raise _fail(f"The option '{name}' conflicts with the '{last}' option in the '{cmd}' command")


def _check_tunnel(tun_type: int, options: set[str]) -> None:
    row = _TUN_TABLE[tun_type]
    tname = _TUN_NAMES[tun_type]
    last = ""
    count = 0
    for j, name in enumerate(_TUN_OPTS):
        mark = row[j]
        if name not in options:
            if mark == "+":
                raise _fail(f"You need to supply the '{name}' option for the '{tname}' tunnel type")
        else:
            if mark == "x":
                raise _fail(f"Illegal '{name}' option with the '{tname}' tunnel type")
            if mark == "1":
                count += 1
                if count == 1:
                    last = name
                    continue
                raise _fail(
                    f"The option '{name}' conflicts with the '{last}' option in the '{tname}' tunnel type"
                )


def _is_ipv4_multicast(a: ipaddress.IPv4Address) -> bool:
    return (int(a) >> 28) == 0xE


# -- the parser -----------------------------------------------------------------------------------


def parse(argv: list[str], names: NameResolver | None = None) -> Command:
    """Parse a whole command line (argv[0] is the program name). Raises UsageError."""
    names = names or NameResolver()
    prog = argv[0] if argv else "ipvsadm"
    sc = Scanner(list(argv[1:]), _OPTS)

    first = sc.next_opt()
    if first is None or isinstance(first, PoptError):
        raise UsageError(tryhelp_text(prog), 255, "tryhelp")
    tag, optarg = first
    if tag == "h":
        return Command("help")
    if tag == "v":
        return Command("version")
    cmd = _COMMAND_TAGS.get(tag)
    if cmd is None:
        raise UsageError(tryhelp_text(prog), 255, "tryhelp")

    daemon_state = ""
    if cmd in ("start-daemon", "stop-daemon"):
        if optarg in ("master", "backup"):
            daemon_state = optarg
        elif cmd == "start-daemon":
            raise _fail("illegal start-daemon parameter specified")
        else:
            raise _fail("illegal start_daemon specified")

    options: set[str] = set()

    def set_option(name: str) -> None:
        if name in options:
            raise _fail(f"multiple '{name}' options specified")
        options.add(name)

    svc = _Svc()
    sched_name = ""
    svc_flags = SvcFlags.NONE
    persist_timeout = 0
    pe_name = ""
    sched_flags_arg = ""
    d_addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    d_af = 0
    d_port = 0
    fwd = Fwd.DROUTE
    weight = 1
    u_thresh = 0
    l_thresh = 0
    tun_type = 0
    tun_port = 0
    tun_flags = 0
    mcast_ifn = ""
    syncid = 0
    mcast_group = ""
    mcast_port = 0
    mcast_ttl = 0
    sync_maxlen = 0
    fmt: dict[str, bool] = {}

    while True:
        got = sc.next_opt()
        if got is None:
            break
        if isinstance(got, PoptError):
            raise UsageError(got.message, 255, "popt")
        tag, optarg = got
        arg = optarg if optarg is not None else ""
        if tag in _PROTO_TAGS:
            set_option("service-address")
            svc.protocol = int(_PROTO_TAGS[tag])
            if not parse_service(arg, svc, names):
                raise _fail("illegal virtual server address[:port] specified")
        elif tag == "f":
            set_option("service-address")
            svc.af = AF_INET
            svc.protocol = int(Proto.TCP)
            svc.fwmark = _parse_fwmark(arg)
        elif tag == "s":
            set_option("scheduler")
            sched_name = arg[:SCHEDNAME_MAX]
        elif tag == "p":
            set_option("persistent")
            svc_flags |= SvcFlags.PERSISTENT
            persist_timeout = _parse_timeout(optarg, 1, MAX_TIMEOUT)
        elif tag == "M":
            set_option("netmask")
            if svc.af != AF_INET6:
                mask = inet_aton(arg)
                if mask is None:
                    mask = names.host_to_ipv4(arg)
                if mask is None:
                    raise _fail("illegal virtual server persistent mask specified")
                svc.netmask = int(mask)
            else:
                plen = atoi(arg) & 0xFFFFFFFF
                if not 1 <= plen <= 128:
                    raise _fail("illegal ipv6 netmask specified")
                svc.netmask = plen
        elif tag == "r":
            set_option("real-server")
            t = _Svc(svc.af, svc.protocol, svc.addr, svc.port, svc.fwmark, svc.netmask)
            result = parse_service(arg, t, names)
            d_af, d_addr, d_port = t.af, t.addr, t.port
            if not result:
                raise _fail("illegal real server address[:port] specified")
            if result == 1:
                d_port = svc.port
        elif tag in _FWD_TAGS:
            set_option("forwarding-method")
            fwd = _FWD_TAGS[tag]
        elif tag == "w":
            set_option("weight")
            w = string_to_number(arg, 0, WEIGHT_MAX)
            if w is None:
                raise _fail("illegal weight specified")
            weight = w
        elif tag == "x":
            set_option("u-threshold")
            v = string_to_number(arg, 0, INT_MAX)
            if v is None:
                raise _fail("illegal u_threshold specified")
            u_thresh = v
        elif tag == "y":
            set_option("l-threshold")
            v = string_to_number(arg, 0, INT_MAX)
            if v is None:
                raise _fail("illegal l_threshold specified")
            l_thresh = v
        elif tag in _FLAG_OPTS:
            name = _FLAG_OPTS[tag]
            set_option(name)
            if tag == "o":
                svc_flags |= SvcFlags.ONEPACKET
            elif tag == "tun-nocsum":
                tun_flags |= int(TunFlags.NOCSUM)
            elif tag == "tun-csum":
                tun_flags |= int(TunFlags.CSUM)
            elif tag == "tun-remcsum":
                tun_flags |= int(TunFlags.REMCSUM)
            else:
                fmt[name] = True
        elif tag == "mcast-interface":
            set_option("mcast-interface")
            mcast_ifn = arg[:IFNAME_MAX]
        elif tag == "syncid":
            set_option("syncid")
            v = string_to_number(arg, 0, 255)
            if v is None:
                raise _fail("illegal syncid specified")
            syncid = v
        elif tag == "sort":
            pass  # the default; accepted any number of times
        elif tag == "6":
            if svc.fwmark:
                svc.af = AF_INET6
                svc.netmask = 128
            else:
                raise _fail("-6 used before -f\n")
        elif tag == "pe":
            set_option("pe")
            pe_name = arg[:PENAME_MAX]
        elif tag == "b":
            set_option("sched-flags")
            sched_flags_arg = arg[:SCHED_FLAGS_ARG_MAX]
        elif tag == "mcast-group":
            set_option("mcast-group")
            if ":" in arg:
                g6 = inet_pton6(arg)
                if g6 is None or not g6.is_multicast:
                    raise _fail(f"invalid IPv6 mcast-group `{arg}'")
                mcast_group = str(g6)
            else:
                g4 = inet_pton4(arg)
                if g4 is None or not _is_ipv4_multicast(g4):
                    raise _fail(f"invalid IPv4 mcast-group `{arg}'")
                mcast_group = str(g4)
        elif tag == "mcast-port":
            set_option("mcast-port")
            v = string_to_number(arg, 1, 65535)
            if v is None:
                raise _fail("illegal mcast-port specified")
            mcast_port = v
        elif tag == "mcast-ttl":
            set_option("mcast-ttl")
            v = string_to_number(arg, 1, 255)
            if v is None:
                raise _fail("illegal mcast-ttl specified")
            mcast_ttl = v
        elif tag == "sync-maxlen":
            set_option("sync-maxlen")
            v = string_to_number(arg, 1, 65535 - 20 - 8)
            if v is None:
                raise _fail("illegal sync-maxlen specified")
            sync_maxlen = v
        elif tag == "tun-type":
            set_option("tun-type")
            if arg not in _TUN_NAMES:
                raise _fail("illegal tunnel type specified")
            tun_type = _TUN_NAMES.index(arg)
        elif tag == "tun-port":
            set_option("tun-port")
            v = string_to_number(arg, 1, 65535)
            if v is None:
                raise _fail("illegal tunnel port specified")
            tun_port = v
        else:
            # A second command, -h or -v after the command.
            raise _fail(f"invalid option `{sc.args[sc.next - 1]}'")

    timeouts = (0, 0, 0)
    if cmd == "set":
        a1, a2, a3 = sc.get_arg(), sc.get_arg(), sc.get_arg()
        if a1 is None or a2 is None or a3 is None:
            raise _fail("--set option requires 3 timeout values")
        timeouts = (
            _parse_timeout(a1, 0, MAX_TIMEOUT),
            _parse_timeout(a2, 0, MAX_TIMEOUT),
            _parse_timeout(a3, 0, MAX_TIMEOUT),
        )
    extra = sc.get_arg()
    if extra is not None:
        raise _fail(f"unexpected argument {extra}")
    if sched_flags_arg:
        svc_flags = (svc_flags & ~SCHED_FLAG_MASK) | _parse_sched_flags(sched_name, sched_flags_arg)

    _check_table(cmd, options)

    if cmd in ("add-service", "edit-service"):
        if not svc.fwmark and not svc.port and not svc_flags & SvcFlags.PERSISTENT:
            raise _fail("Zero port specified for non-persistent service")
        if svc_flags & SvcFlags.ONEPACKET and not svc.fwmark and svc.protocol != Proto.UDP:
            raise _fail("One-Packet Scheduling is only for UDP virtual services")
        if not sched_name:
            sched_name = DEF_SCHED
    if cmd == "start-daemon" and not mcast_ifn:
        mcast_ifn = DEF_MCAST_IFN

    dest: DestConfig | None = None
    if cmd in ("add-server", "edit-server"):
        if not svc.fwmark and fwd in (Fwd.TUNNEL, Fwd.DROUTE):
            d_port = svc.port
        if d_af != svc.af and fwd != Fwd.TUNNEL:
            raise _fail("Different address family is allowed only for tunneling servers")
        if options & {"tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum"} and fwd != Fwd.TUNNEL:
            raise _fail("Tunnel options conflict with forward method")
        _check_tunnel(tun_type, options)
    if cmd in ("add-server", "edit-server", "delete-server"):
        assert d_addr is not None  # the table requires real-server
        dest = DestConfig(
            d_addr,
            d_port,
            fwd,
            weight,
            u_thresh,
            l_thresh,
            TunType(tun_type),
            tun_port,
            TunFlags(tun_flags),
        )

    if cmd == "list":
        if (options & {"connection", "timeout", "daemon"} and options & {"stats", "rate", "thresholds"}) or (
            options & {"timeout", "daemon"} and "persistent-conn" in options
        ):
            raise _fail("options conflicts in the list command")

    key: ServiceKey | None = None
    if "service-address" in options:
        if svc.fwmark:
            key = ServiceKey.for_fwmark(svc.fwmark, svc.af)
        else:
            assert svc.addr is not None
            key = ServiceKey(svc.af, Proto(svc.protocol), svc.addr, svc.port, 0)

    service = ServiceConfig(
        scheduler=sched_name or DEF_SCHED,
        flags=svc_flags,
        timeout=persist_timeout if svc_flags & SvcFlags.PERSISTENT else 0,
        netmask=svc.netmask,
        pe_name=pe_name,
    )
    daemon: DaemonView | None = None
    if cmd in ("start-daemon", "stop-daemon"):
        daemon = DaemonView(daemon_state, mcast_ifn, syncid, sync_maxlen, mcast_group, mcast_port, mcast_ttl)
    return Command(
        cmd=cmd,
        options=frozenset(options),
        key=key,
        service=service,
        dest=dest,
        fmt=Format(
            numeric=fmt.get("numeric", False),
            stats=fmt.get("stats", False),
            rate=fmt.get("rate", False),
            thresholds=fmt.get("thresholds", False),
            persistent_conn=fmt.get("persistent-conn", False),
            nosort=fmt.get("nosort", False),
            exact=fmt.get("exact", False),
            tun_info=fmt.get("tun-info", False),
        ),
        timeouts=timeouts,
        daemon=daemon,
    )


Parser = Callable[[list[str]], Command]

# -- a shortcut for the lines -Sn writes ---------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4PORT = re.compile(rf"({_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}):([0-9]{{1,5}})")
_SVC_OPT = {"-t": Proto.TCP, "-u": Proto.UDP, "--sctp-service": Proto.SCTP}
_FWD_OPT = {"-m": Fwd.MASQ, "-g": Fwd.DROUTE, "-i": Fwd.TUNNEL, "--fullnat": Fwd.FULLNAT}
_ADD_SVC_OPTS = frozenset({"service-address", "scheduler"})
_ADD_DEST_OPTS = frozenset({"service-address", "real-server", "forwarding-method", "weight"})


def _v4port(word: str) -> tuple[ipaddress.IPv4Address, int] | None:
    """`a.b.c.d:port` as _V4PORT reads it: inet_pton takes exactly its dotted quads (decimal octets
    0-255 without leading zeros), and is cheaper than the regular expression."""
    host, sep, port = word.partition(":")
    if not sep or not 0 < len(port) <= 5 or not port.isascii() or not port.isdigit():
        return None
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return None
    p = int(port)
    if p > 65535:
        return None
    return ipaddress.IPv4Address(int.from_bytes(packed, "big")), p


@functools.lru_cache(maxsize=1024)
def _fast_service_key(opt: str, word: str) -> ServiceKey | None:
    """The service of a fast-path line; cached because a saved file names each service on the
    `-A` line and again on every one of its `-a` lines."""
    vip = _v4port(word)
    if vip is None:
        return None
    return ServiceKey(AF_INET, _SVC_OPT[opt], vip[0], vip[1], 0)


_DEFAULT_SERVICE = ServiceConfig()
_DEFAULT_FORMAT = Format()


def _fast_command(
    cmd: str, options: frozenset[str], key: ServiceKey, service: ServiceConfig, dest: DestConfig | None
) -> Command:
    """Command(cmd, options, key, service, dest) with the other fields at their defaults, without the
    frozen dataclass's __init__ (and its Format() per call): parse_fast runs once per restored line."""
    c: Command = object.__new__(Command)
    c.__dict__.update(
        cmd=cmd,
        options=options,
        key=key,
        service=service,
        dest=dest,
        fmt=_DEFAULT_FORMAT,
        timeouts=(0, 0, 0),
        daemon=None,
    )
    return c


def _fast_weight(word: str) -> int | None:
    if word.isascii() and word.isdigit() and len(word) < 10:
        w = int(word)  # plain decimal digits: what string_to_number reads too
        return w if w <= WEIGHT_MAX else None
    return string_to_number(word, 0, WEIGHT_MAX)


FastRule = tuple[ServiceKey, ServiceConfig, DestConfig | None]  # -A (dest None) or -a


def fast_rule(words: list[str]) -> FastRule | None:
    """The two line shapes of `-Sn` for IPv4 (`-A -t A:P -s S`, `-a -t A:P -r A:P -m -w N`), read
    without the general machinery: (service, its config, the server or None for -A), exactly what
    parse() would put in its Command, or None for any other line."""
    n = len(words)
    if n == 5 and words[0] == "-A" and words[3] == "-s" and words[1] in _SVC_OPT:
        key = _fast_service_key(words[1], words[2])
        if key is None or key.port == 0:
            return None
        return key, ServiceConfig(words[4][:SCHEDNAME_MAX]), None
    if n == 8 and words[0] == "-a" and words[3] == "-r" and words[6] == "-w" and words[1] in _SVC_OPT:
        fwd = _FWD_OPT.get(words[5])
        key = _fast_service_key(words[1], words[2])
        rip = _v4port(words[4])
        weight = _fast_weight(words[7])
        if fwd is None or key is None or rip is None or weight is None:
            return None
        port = key.port if fwd in (Fwd.TUNNEL, Fwd.DROUTE) else rip[1]
        return key, _DEFAULT_SERVICE, make_dest_config(rip[0], port, fwd, weight)
    return None


def parse_fast(words: list[str]) -> Command | None:
    """fast_rule() as the Command parse() gives, or None for any other line."""
    rule = fast_rule(words)
    if rule is None:
        return None
    key, service, dest = rule
    if dest is None:
        return _fast_command("add-service", _ADD_SVC_OPTS, key, service, None)
    return _fast_command("add-server", _ADD_DEST_OPTS, key, service, dest)
