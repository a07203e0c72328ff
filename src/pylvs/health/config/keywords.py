"""The keyword tables: for each block, every keyword pylvs knows mapped to the function handling it.

Reading a block is one loop (Walker.walk) over its statements: look the keyword up in the block's
table, call the handler, or warn once with file and line when the keyword is unknown. Adding a
keyword is adding one table entry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from pylvs.core.types import AF_INET, AF_INET6, MAX_WEIGHT, Fwd, Proto, TunFlags, TunType
from pylvs.health.config.errors import ConfigError
from pylvs.health.config.lexer import Stmt
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
from pylvs.health.config.values import (
    arg_bool,
    arg_cmd,
    arg_int,
    arg_str,
    arg_timer,
    need,
    parse_addr,
    parse_port,
)

Handler = Callable[["Walker", Stmt, Any], None]
Table = dict[str, Handler]

CHECKER_KINDS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "DNS_CHECK")
UNSUPPORTED_CHECKERS = ("SMTP_CHECK", "UDP_CHECK", "PING_CHECK", "BFD_CHECK", "FILE_CHECK")
DNS_TYPES = ("A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA")
SCHED_FLAG_WORDS = (
    "flag-1",
    "flag-2",
    "flag-3",
    "sh-port",
    "sh-fallback",
    "mh-port",
    "mh-fallback",
    "ops",
)


class Walker:
    """Walks statement blocks through keyword tables, collecting warnings."""

    def __init__(self, config: KeepalivedConfig) -> None:
        self.config = config

    def warn(self, text: str) -> None:
        self.config.warnings.append(text)

    def walk(self, stmts: list[Stmt], table: Table, target: Any, block: str) -> None:
        for stmt in stmts:
            handler = table.get(stmt.keyword)
            if handler is None:
                self.warn(f"{stmt.where}: unknown keyword '{stmt.keyword}' in {block}; ignored")
                continue
            handler(self, stmt, target)

    def body(self, stmt: Stmt) -> list[Stmt]:
        if stmt.block is None:
            raise ConfigError(stmt.where, f"'{stmt.keyword}' needs a {{ ... }} block")
        return stmt.block


# -- small handler factories ------------------------------------------------------------------


def _ignore(w: Walker, stmt: Stmt, target: Any) -> None:
    """A keyword keepalived knows that changes nothing pylvs does (mail, SNMP, logging...)."""


def _unacted(what: str) -> Handler:
    def handler(w: Walker, stmt: Stmt, target: Any) -> None:
        name = f" {stmt.args[0]}" if stmt.args else ""
        w.warn(f"{stmt.where}: {stmt.keyword}{name}: {what} is not done by pylvs; section ignored")

    return handler


def _extra(w: Walker, stmt: Stmt, max_args: int) -> None:
    if len(stmt.args) > max_args:
        w.warn(f"{stmt.where}: '{stmt.keyword}': extra words ignored: {' '.join(stmt.args[max_args:])}")


def _timing(attr: str, conv: Callable[[Stmt], Any]) -> Handler:
    def handler(w: Walker, stmt: Stmt, target: Any) -> None:
        setattr(target.timing, attr, conv(stmt))
        _extra(w, stmt, 1)

    return handler


def _set(attr: str, conv: Callable[[Stmt], Any], max_args: int = 1) -> Handler:
    def handler(w: Walker, stmt: Stmt, target: Any) -> None:
        setattr(target, attr, conv(stmt))
        _extra(w, stmt, max_args)

    return handler


def _timer(stmt: Stmt) -> float:
    return arg_timer(stmt)


def _retry(stmt: Stmt) -> int:
    return arg_int(stmt, 0, 0, 2**31 - 1)


def _bool(stmt: Stmt) -> bool:
    return arg_bool(stmt)


def _text(stmt: Stmt) -> str:
    return arg_str(stmt)


TIMING: Table = {
    "delay_loop": _timing("delay_loop", lambda s: arg_timer(s, 0, 0.001)),
    "connect_timeout": _timing("connect_timeout", lambda s: arg_timer(s, 0, 0.001)),
    "retry": _timing("retry", _retry),
    "nb_get_retry": _timing("retry", _retry),  # keepalived's older spelling
    "delay_before_retry": _timing("delay_before_retry", _timer),
    "warmup": _timing("warmup", _timer),
    "alpha": _timing("alpha", _bool),
    "inhibit_on_failure": _timing("inhibit_on_failure", _bool),
    "virtualhost": _timing("virtualhost", _text),
}


# -- lb_kind / lvs_method ---------------------------------------------------------------------

_FWD = {"NAT": Fwd.MASQ, "DR": Fwd.DROUTE, "TUN": Fwd.TUNNEL, "FULLNAT": Fwd.FULLNAT}


def parse_method(stmt: Stmt) -> Method:
    need(stmt, 1, "NAT|DR|TUN|FULLNAT")
    kind = stmt.args[0].upper()
    if kind not in _FWD:
        raise ConfigError(
            stmt.where, f"'{stmt.keyword}': unknown method '{stmt.args[0]}' (NAT, DR, TUN or FULLNAT)"
        )
    m = Method(_FWD[kind])
    rest = [a.lower() for a in stmt.args[1:]]
    if rest and m.fwd != Fwd.TUNNEL:
        raise ConfigError(stmt.where, f"'{stmt.keyword} {kind}' takes no options")
    i = 0
    while i < len(rest):
        word = rest[i]
        if word == "type" and i + 1 < len(rest):
            types = {"ipip": TunType.IPIP, "gue": TunType.GUE, "gre": TunType.GRE}
            if rest[i + 1] not in types:
                raise ConfigError(stmt.where, f"unknown tunnel type '{rest[i + 1]}' (ipip, gue or gre)")
            m.tun_type = types[rest[i + 1]]
            i += 2
        elif word == "port" and i + 1 < len(rest):
            m.tun_port = parse_port(stmt, rest[i + 1])
            i += 2
        elif word in ("nocsum", "csum", "remcsum"):
            m.tun_flags = {"nocsum": TunFlags.NOCSUM, "csum": TunFlags.CSUM, "remcsum": TunFlags.REMCSUM}[
                word
            ]
            i += 1
        else:
            raise ConfigError(stmt.where, f"'{stmt.keyword}': unexpected '{word}'")
    if m.tun_type == TunType.GUE and not m.tun_port:
        raise ConfigError(stmt.where, "a GUE tunnel needs 'port NUM'")
    return m


# -- global_defs --------------------------------------------------------------------------------


def _global_value(w: Walker, stmt: Stmt, g: GlobalDefs) -> None:
    g.values[stmt.keyword] = list(stmt.args)


def _router_id(w: Walker, stmt: Stmt, g: GlobalDefs) -> None:
    g.router_id = arg_str(stmt)


def _lvs_flush(w: Walker, stmt: Stmt, g: GlobalDefs) -> None:
    g.lvs_flush = True


def _lvs_timeouts(w: Walker, stmt: Stmt, g: GlobalDefs) -> None:
    vals = {"tcp": 0, "tcpfin": 0, "udp": 0}
    args = stmt.args
    if not args or len(args) % 2:
        raise ConfigError(stmt.where, "'lvs_timeouts' needs [tcp SECS] [tcpfin SECS] [udp SECS]")
    for i in range(0, len(args), 2):
        if args[i] not in vals:
            raise ConfigError(stmt.where, f"'lvs_timeouts': unknown timeout '{args[i]}' (tcp, tcpfin or udp)")
        vals[args[i]] = arg_int(stmt, i + 1, 1, 2678400)
    g.lvs_timeouts = (vals["tcp"], vals["tcpfin"], vals["udp"])


def _script_user(w: Walker, stmt: Stmt, g: GlobalDefs) -> None:
    g.script_user = arg_str(stmt)


def _global_vrrp(w: Walker, stmt: Stmt, g: GlobalDefs) -> None:
    g.values[stmt.keyword] = list(stmt.args)  # VRRP tuning: kept, not acted on (VRRP sections warn)


GLOBAL_DEFS: Table = {
    "router_id": _router_id,
    "lvs_id": _router_id,  # its older name
    "lvs_flush": _lvs_flush,
    "script_user": _script_user,
    "notification_email": _ignore,
    "notification_email_from": _global_value,
    "smtp_server": _global_value,
    "smtp_helo_name": _global_value,
    "smtp_connect_timeout": _global_value,
    "smtp_alert": _global_value,
    "smtp_alert_vrrp": _global_value,
    "smtp_alert_checker": _global_value,
    "checker_log_all_failures": _global_value,
    "no_email_faults": _global_value,
    "enable_script_security": _global_value,
    "max_auto_priority": _global_value,
    "lvs_timeouts": _lvs_timeouts,
    "lvs_sync_daemon": _unacted("the LVS sync daemon setting (use pylvsadm --start-daemon)"),
    "enable_traps": _global_value,
    "dynamic_interfaces": _global_value,
    "default_interface": _global_value,
    "process_names": _global_value,
    "use_pid_dir": _global_value,
    "child_wait_time": _global_value,
    "lvs_flush_onstop": _global_value,
}
for _kw in (
    "vrrp_mcast_group4",
    "vrrp_mcast_group6",
    "vrrp_garp_master_delay",
    "vrrp_garp_master_repeat",
    "vrrp_garp_interval",
    "vrrp_gna_interval",
    "vrrp_strict",
    "vrrp_skip_check_adv_addr",
    "vrrp_version",
    "vrrp_iptables",
    "vrrp_startup_delay",
    "vrrp_no_swap",
    "vrrp_priority",
    "script_security",
):
    GLOBAL_DEFS[_kw] = _global_vrrp


# -- checkers -----------------------------------------------------------------------------------


def _connect_ip(w: Walker, stmt: Stmt, c: CheckerConf) -> None:
    c.connect_ip = parse_addr(stmt, arg_str(stmt))


def _connect_port(w: Walker, stmt: Stmt, c: CheckerConf) -> None:
    c.connect_port = parse_port(stmt, arg_str(stmt))


def _bindto(w: Walker, stmt: Stmt, c: CheckerConf) -> None:
    c.bindto = parse_addr(stmt, arg_str(stmt))


def _bind_port(w: Walker, stmt: Stmt, c: CheckerConf) -> None:
    c.bind_port = parse_port(stmt, arg_str(stmt))


def _status_codes(stmt: Stmt) -> tuple[tuple[int, int], ...]:
    need(stmt, 1, "status codes (e.g. 200 or 200-299)")
    out = []
    for word in stmt.args:
        lo_s, _, hi_s = word.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if hi_s else lo
        except ValueError:
            raise ConfigError(stmt.where, f"'{word}' is not a status code or range") from None
        if not 100 <= lo <= hi <= 999:
            raise ConfigError(stmt.where, f"status code range '{word}' is not within 100-999")
        out.append((lo, hi))
    return tuple(out)


def _digest(stmt: Stmt) -> str:
    d = arg_str(stmt).lower()
    if len(d) != 32 or any(ch not in "0123456789abcdef" for ch in d):
        raise ConfigError(stmt.where, f"digest '{stmt.args[0]}' is not an MD5 in hex (32 hex digits)")
    return d


def _url_unsupported(w: Walker, stmt: Stmt, u: UrlCheck) -> None:
    w.warn(f"{stmt.where}: '{stmt.keyword}' (regular expression matching) is not done by pylvs; ignored")


URL: Table = {
    "path": _set("path", _text),
    "digest": _set("digest", _digest),
    "status_code": _set("status_codes", _status_codes, 64),
    "virtualhost": _set("virtualhost", _text),
    "regex": _url_unsupported,
    "regex_no_match": _url_unsupported,
    "regex_options": _url_unsupported,
    "regex_stack": _url_unsupported,
    "regex_min_offset": _url_unsupported,
    "regex_max_offset": _url_unsupported,
    "tls_compliant": _ignore,
}


def _url(w: Walker, stmt: Stmt, c: CheckerConf) -> None:
    u = UrlCheck(where=stmt.where)
    w.walk(w.body(stmt), URL, u, "url")
    c.urls.append(u)


def _http_protocol(stmt: Stmt) -> str:
    v = arg_str(stmt)
    if v not in ("1.0", "1.0C", "1.1"):
        raise ConfigError(stmt.where, f"http_protocol '{v}' is not one of 1.0, 1.0C, 1.1")
    return v


def _dns_type(stmt: Stmt) -> str:
    v = arg_str(stmt).upper()
    if v not in DNS_TYPES:
        raise ConfigError(stmt.where, f"DNS type '{stmt.args[0]}' is not one of {', '.join(DNS_TYPES)}")
    return v


CHECKER_COMMON: Table = {
    **TIMING,
    "connect_ip": _connect_ip,
    "connect_port": _connect_port,
    "bindto": _bindto,
    "bind_port": _bind_port,
    "bind_if": _ignore,
    "fwmark": _ignore,
    "log_all_failures": _ignore,
}
CHECKER_TABLES: dict[str, Table] = {
    "TCP_CHECK": CHECKER_COMMON,
    "HTTP_GET": {
        **CHECKER_COMMON,
        "url": _url,
        "http_protocol": _set("http_protocol", _http_protocol),
        "fast_recovery": _ignore,
    },
    "MISC_CHECK": {
        **TIMING,
        "misc_path": _set("misc_path", arg_cmd, 3),
        "misc_timeout": _set("misc_timeout", lambda s: arg_timer(s, 0, 0.001)),
        "misc_dynamic": _set("misc_dynamic", _bool),
        "user": _ignore,
        "log_all_failures": _ignore,
    },
    "DNS_CHECK": {
        **CHECKER_COMMON,
        "type": _set("dns_type", _dns_type),
        "name": _set("dns_name", _text),
    },
}
CHECKER_TABLES["SSL_GET"] = {
    **CHECKER_TABLES["HTTP_GET"],
    "enable_sni": _set("enable_sni", _bool),
    "sni_name": _set("sni_name", _text),
    "tls_compliant": _ignore,
}


def _checker(w: Walker, stmt: Stmt, rs: RealServerConf) -> None:
    c = CheckerConf(stmt.keyword, stmt.where)
    w.walk(w.body(stmt), CHECKER_TABLES[stmt.keyword], c, stmt.keyword)
    if c.kind in ("HTTP_GET", "SSL_GET") and not c.urls:
        raise ConfigError(stmt.where, f"{c.kind} needs at least one url {{ path ... }} block")
    if c.kind == "MISC_CHECK" and not c.misc_path:
        raise ConfigError(stmt.where, "MISC_CHECK needs misc_path")
    rs.checkers.append(c)


def _unsupported_checker(w: Walker, stmt: Stmt, rs: RealServerConf) -> None:
    w.warn(
        f"{stmt.where}: {stmt.keyword} is not done by pylvs; real server "
        f"{rs.addr} {rs.port} is checked by its other checkers only"
    )


# -- real_server --------------------------------------------------------------------------------


def _rs_method(w: Walker, stmt: Stmt, rs: RealServerConf) -> None:
    rs.method = parse_method(stmt)


REAL_SERVER: Table = {
    **TIMING,
    "weight": _set("weight", lambda s: arg_int(s, 0, 0, MAX_WEIGHT)),
    "lvs_method": _rs_method,
    "lb_kind": _rs_method,
    "uthreshold": _set("u_threshold", lambda s: arg_int(s, 0, 0, 2**31 - 1)),
    "lthreshold": _set("l_threshold", lambda s: arg_int(s, 0, 0, 2**31 - 1)),
    "notify_up": _set("notify_up", arg_cmd, 3),
    "notify_down": _set("notify_down", arg_cmd, 3),
    "smtp_alert": _ignore,
    "snmp_name": _ignore,
}
for _kind in CHECKER_KINDS:
    REAL_SERVER[_kind] = _checker
for _kind in UNSUPPORTED_CHECKERS:
    REAL_SERVER[_kind] = _unsupported_checker


# -- virtual_server -----------------------------------------------------------------------------


def _addr_port(stmt: Stmt, words: list[str], what: str) -> tuple[Any, int]:
    if not words:
        raise ConfigError(stmt.where, f"'{stmt.keyword}' needs {what}")
    addr = parse_addr(stmt, words[0])
    port = parse_port(stmt, words[1]) if len(words) > 1 else 0
    if len(words) > 2:
        raise ConfigError(stmt.where, f"'{stmt.keyword}': unexpected '{words[2]}'")
    return addr, port


def _real_server(w: Walker, stmt: Stmt, vs: VirtualServerConf) -> None:
    addr, port = _addr_port(stmt, stmt.args, "an address and a port")
    rs = RealServerConf(addr, port, stmt.where)
    w.walk(stmt.block or [], REAL_SERVER, rs, f"real_server {addr} {port}")
    for other in vs.real_servers:
        if other.addr == rs.addr and other.port == rs.port:
            w.warn(f"{stmt.where}: real server {addr} {port} already defined at {other.where}; ignored")
            return
    vs.real_servers.append(rs)


def _protocol(stmt: Stmt) -> Proto:
    v = arg_str(stmt).upper()
    protos = {"TCP": Proto.TCP, "UDP": Proto.UDP, "SCTP": Proto.SCTP}
    if v not in protos:
        raise ConfigError(stmt.where, f"protocol '{stmt.args[0]}' is not one of TCP, UDP, SCTP")
    return protos[v]


def _scheduler(stmt: Stmt) -> str:
    from pylvs.core.sched import scheduler_names

    name = arg_str(stmt).lower()
    names = scheduler_names()
    if name not in names:
        raise ConfigError(
            stmt.where, f"'{stmt.keyword}': unknown scheduler '{stmt.args[0]}' ({', '.join(names)})"
        )
    return name


def _vs_method(w: Walker, stmt: Stmt, vs: VirtualServerConf) -> None:
    vs.method = parse_method(stmt)


def _sorry_method(w: Walker, stmt: Stmt, vs: VirtualServerConf) -> None:
    vs.sorry_method = parse_method(stmt)


def _persistence_timeout(w: Walker, stmt: Stmt, vs: VirtualServerConf) -> None:
    # keepalived: the keyword alone means the default of 6 minutes; 0 means not persistent
    timeout = arg_int(stmt, 0, 0, 2**31 - 1) if stmt.args else 360
    vs.persistence_timeout = timeout or None


def _granularity(w: Walker, stmt: Stmt, vs: VirtualServerConf) -> None:
    text = arg_str(stmt)
    if "." in text:
        try:
            vs.granularity = ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen
        except ValueError:
            raise ConfigError(stmt.where, f"persistence_granularity '{text}' is not a netmask") from None
    else:
        vs.granularity = arg_int(stmt, 0, 1, 128)


def _sched_flag(w: Walker, stmt: Stmt, vs: VirtualServerConf) -> None:
    vs.sched_flags.add(stmt.keyword)


def _sorry_server(w: Walker, stmt: Stmt, vs: VirtualServerConf) -> None:
    vs.sorry_server = _addr_port(stmt, stmt.args, "an address and a port")


def _ip_family(w: Walker, stmt: Stmt, vs: VirtualServerConf) -> None:
    v = arg_str(stmt)
    if v not in ("inet", "inet6"):
        raise ConfigError(stmt.where, f"ip_family '{v}' is not inet or inet6")
    vs.ip_family = AF_INET if v == "inet" else AF_INET6


VIRTUAL_SERVER: Table = {
    **TIMING,
    "real_server": _real_server,
    "lb_algo": _set("scheduler", _scheduler),
    "lvs_sched": _set("scheduler", _scheduler),
    "lb_kind": _vs_method,
    "lvs_method": _vs_method,
    "protocol": _set("protocol", _protocol),
    "persistence_timeout": _persistence_timeout,
    "persistence_granularity": _granularity,
    "persistence_engine": _set("persistence_engine", _text),
    "ha_suspend": _set("ha_suspend", _bool),
    "omega": _set("omega", _bool),
    "quorum": _set("quorum", lambda s: arg_int(s, 0, 0, 2**31 - 1)),
    "hysteresis": _set("hysteresis", lambda s: arg_int(s, 0, 0, 2**31 - 1)),
    "quorum_up": _set("quorum_up", arg_cmd, 3),
    "quorum_down": _set("quorum_down", arg_cmd, 3),
    "sorry_server": _sorry_server,
    "sorry_server_inhibit": _set("sorry_server_inhibit", _bool),
    "sorry_server_lvs_method": _sorry_method,
    "ip_family": _ip_family,
    "smtp_alert": _ignore,
    "snmp_name": _ignore,
    "nat_mask": _ignore,  # keepalived's old spelling of a no-op
    "net_mask": _ignore,
}
for _flag in SCHED_FLAG_WORDS:
    VIRTUAL_SERVER[_flag] = _sched_flag


def _virtual_server(w: Walker, stmt: Stmt, cfg: KeepalivedConfig) -> None:
    vs = VirtualServerConf(stmt.where)
    args = stmt.args
    if args and args[0] == "fwmark":
        vs.fwmark = arg_int(stmt, 1, 1, 2**32 - 1)
        if len(args) > 2:
            raise ConfigError(stmt.where, f"'virtual_server fwmark': unexpected '{args[2]}'")
    elif args and args[0] == "group":
        vs.group = arg_str(stmt, 1)
    else:
        vs.addr, vs.port = _addr_port(stmt, args, "an address and port, 'fwmark N' or 'group NAME'")
    w.walk(w.body(stmt), VIRTUAL_SERVER, vs, f"virtual_server {' '.join(args)}")
    cfg.virtual_servers.append(vs)


# -- virtual_server_group -----------------------------------------------------------------------


def _group_entry(stmt: Stmt) -> GroupEntry:
    words = stmt.words
    if words[0] == "fwmark":
        mark = arg_int(stmt, 0, 1, 2**32 - 1)
        fam = 0
        if len(words) > 2:
            if words[2] not in ("inet", "inet6"):
                raise ConfigError(stmt.where, f"fwmark family '{words[2]}' is not inet or inet6")
            fam = AF_INET if words[2] == "inet" else AF_INET6
        return GroupEntry(None, None, 0, mark, fam, stmt.where)
    if len(words) > 2:
        raise ConfigError(stmt.where, f"group entry: unexpected '{words[2]}'")
    port = parse_port(stmt, words[1]) if len(words) > 1 else 0
    first, last = _range(stmt, words[0])
    return GroupEntry(first, last, port, 0, 0, stmt.where)


def _range(stmt: Stmt, text: str) -> tuple[Any, Any]:
    """A.B.C.D, A.B.C.D-E (last part only), A.B.C.D-E.F.G.H, or a prefix A.B.C.D/nn (and IPv6 alike)."""
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigError(stmt.where, f"'{text}' is not an address range") from None
        return net.network_address, net.broadcast_address
    base, dash, tail = text.partition("-")
    first = parse_addr(stmt, base)
    if not dash:
        return first, first
    sep = "." if first.version == 4 else ":"
    if sep in tail:
        last = parse_addr(stmt, tail)
    else:
        head = base.rsplit(sep, 1)[0]
        last = parse_addr(stmt, f"{head}{sep}{tail}")
    if last.version != first.version or int(last) < int(first):
        raise ConfigError(stmt.where, f"address range '{text}' ends before it starts")
    if int(last) - int(first) >= 65536:
        raise ConfigError(stmt.where, f"address range '{text}' is larger than 65536 addresses")
    return first, last


def _virtual_server_group(w: Walker, stmt: Stmt, cfg: KeepalivedConfig) -> None:
    name = arg_str(stmt)
    if name in cfg.groups:
        raise ConfigError(
            stmt.where, f"virtual_server_group {name} is already defined at {cfg.groups[name].where}"
        )
    g = VirtualServerGroup(name, stmt.where)
    for entry in w.body(stmt):
        if entry.block is not None:
            raise ConfigError(entry.where, f"unexpected block in virtual_server_group {name}")
        g.entries.append(_group_entry(entry))
    cfg.groups[name] = g


def _global_defs(w: Walker, stmt: Stmt, cfg: KeepalivedConfig) -> None:
    w.walk(w.body(stmt), GLOBAL_DEFS, cfg.global_defs, "global_defs")


def _ssl(w: Walker, stmt: Stmt, cfg: KeepalivedConfig) -> None:
    w.warn(f"{stmt.where}: SSL: client certificates are not used by pylvs; SSL_GET checks run without them")


TOP: Table = {
    "global_defs": _global_defs,
    "virtual_server": _virtual_server,
    "virtual_server_group": _virtual_server_group,
    "SSL": _ssl,
    "vrrp_instance": _unacted("VRRP"),
    "vrrp_sync_group": _unacted("VRRP"),
    "vrrp_script": _unacted("VRRP tracking"),
    "vrrp_track_process": _unacted("VRRP tracking"),
    "track_file": _unacted("file tracking"),
    "static_ipaddress": _unacted("static address configuration"),
    "static_routes": _unacted("static route configuration"),
    "static_rules": _unacted("static rule configuration"),
    "linkbeat_interfaces": _unacted("link beat monitoring"),
    "interface_up_down_delays": _unacted("interface debouncing"),
    "bfd_instance": _unacted("BFD"),
    "net_namespace": _unacted("network namespace switching"),
    "net_namespace_ipvs": _unacted("network namespace switching"),
    "instance": _ignore,
    "use_pid_dir": _ignore,
    "linkbeat_use_polling": _ignore,
    "child_wait_time": _ignore,
    "namespace_with_ipsets": _ignore,
}


def timing_defaults(kind: str) -> Timing:
    """keepalived's per-kind defaults (retry: 1, DNS 3, MISC 0; delay_before_retry: 1, HTTP/SSL 3)."""
    retry = {"DNS_CHECK": 3, "MISC_CHECK": 0}.get(kind, 1)
    dbr = {"HTTP_GET": 3.0, "SSL_GET": 3.0}.get(kind, 1.0)
    return Timing(
        delay_loop=60.0,
        connect_timeout=5.0,
        retry=retry,
        delay_before_retry=dbr,
        warmup=None,
        alpha=False,
        inhibit_on_failure=False,
    )
