"""ipvsadm's listings, byte for byte (spec B7, B9, B10): -L/-Ln in every format, --timeout,
--daemon, -c; and the rule format that -S shares with them (see save.py).

Everything works on plain views (pylvs.core.snapshot), so a local Director and pylvsd list alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pylvs.core.snapshot import ConnView, DestView, ServiceView, Snapshot
from pylvs.core.types import AF_INET6, Fwd, SvcFlags, TunType
from pylvs.ipvsadm.cnum import inet_pton4, inet_pton6, ntop
from pylvs.ipvsadm.grammar import Format
from pylvs.ipvsadm.names import NameResolver
from pylvs.ipvsadm.sort import sort_dests, sort_services

IPVS_VERSION = "1.2.1"
NAME_BUF = 59  # ipvsadm formats a name into a 60-byte buffer

_PROTO_LABEL = {6: "TCP", 17: "UDP", 132: "SCTP"}
_PROTO_OPTION = {6: "-t", 17: "-u", 132: "--sctp-service"}
_FWD_NAME = {
    Fwd.MASQ: "Masq",
    Fwd.LOCALNODE: "Local",
    Fwd.TUNNEL: "Tunnel",
    Fwd.DROUTE: "Route",
    Fwd.FULLNAT: "FullNat",
}
_FWD_SWITCH = {
    Fwd.MASQ: "-m",
    Fwd.TUNNEL: "-i",
    Fwd.LOCALNODE: "-g",
    Fwd.DROUTE: "-g",
    Fwd.FULLNAT: "--fullnat",
}
_TUN_NAMES = ("ipip", "gue", "gre")
_TUN_FLAGS = ("-c", "+c", "r+c")
_TUN_FLAG_OPTS = ("--tun-nocsum", "--tun-csum", "--tun-remcsum")


_FWD_NAME_OF = {int(f): name for f, name in reversed(_FWD_NAME.items())}  # first one wins
_FWD_SWITCH_OF = {int(f): sw for f, sw in reversed(_FWD_SWITCH.items())}


def _fwd_name(fwd: int) -> str:
    return _FWD_NAME_OF.get(fwd, "(null)")  # "(null)": what printf makes of ipvsadm's NULL


def _fwd_switch(fwd: int) -> str:
    return _FWD_SWITCH_OF.get(fwd, "(null)")


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


# -- names ----------------------------------------------------------------------------------------


def _parse_addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return inet_pton6(text) if ":" in text else inet_pton4(text)


def addrport_name(addr: str, port: int, protocol: int, numeric: bool, names: NameResolver | None) -> str:
    """ipvsadm's addrport_to_anyname(): `a.b.c.d:port` / `[v6]:port`, or names without -n."""
    if numeric and ":" not in addr and addr.count(".") == 3:
        return f"{addr}:{port}"  # views hold IPv4 addresses in their one dotted form
    a = _parse_addr(addr)
    v6 = a is not None and a.version == 6
    host = addr if a is None else ntop(a)
    pname = str(port)
    if not numeric and names is not None:
        if a is not None:
            host = names.addr_to_host(a) or host
        pname = names.port_to_service(port, protocol) or pname
    text = f"[{host}]:{pname}" if v6 else f"{host}:{pname}"
    return text[:NAME_BUF]


# -- numbers --------------------------------------------------------------------------------------


def largenum(v: int, exact: bool) -> str:
    """print_largenum(): 9 columns, K/M/G/T abbreviations unless --exact."""
    if exact:
        digits = len(str(v))
        return str(v).rjust(9 if digits <= 8 else digits + 1)
    if v < 100_000_000:
        return f"{v:9d}"
    if v < 1_000_000_000:
        return f"{v // 1000:8d}K"
    if v < 100_000_000_000:
        return f"{v // 1_000_000:8d}M"
    if v < 100_000_000_000_000:
        return f"{v // 1_000_000_000:8d}G"
    return f"{v // 1_000_000_000_000:8d}T"


# -- titles and entries ---------------------------------------------------------------------------


def title(fmt: Format) -> str:
    if fmt.stats:
        return (
            f"{'Prot LocalAddress:Port':<33} {'Conns':>8} {'InPkts':>8} {'OutPkts':>8} {'InBytes':>8} "
            f"{'OutBytes':>8}\n  -> RemoteAddress:Port\n"
        )
    if fmt.rate:
        return (
            f"{'Prot LocalAddress:Port':<33} {'CPS':>8} {'InPPS':>8} {'OutPPS':>8} {'InBPS':>8} "
            f"{'OutBPS':>8}\n  -> RemoteAddress:Port\n"
        )
    if fmt.thresholds:
        return (
            f"{'Prot LocalAddress:Port':<33} {'Uthreshold':<10} {'Lthreshold':<10} {'ActiveConn':<10} "
            f"{'InActConn':<10}\n  -> RemoteAddress:Port\n"
        )
    if fmt.persistent_conn:
        return (
            f"{'Prot LocalAddress:Port':<33} {'Weight':<9} {'PersistConn':<11} {'ActiveConn':<10} "
            f"{'InActConn':<10}\n  -> RemoteAddress:Port\n"
        )
    if fmt.tun_info:
        return (
            "Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
        )
    return (
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    )


def sched_flags_text(se: ServiceView) -> str:
    flags = se.flags
    words: list[str] = []
    if se.scheduler == "sh":
        if flags & SvcFlags.SCHED1:
            words.append("sh-fallback")
        if flags & SvcFlags.SCHED2:
            words.append("sh-port")
    elif se.scheduler == "mh":
        if flags & SvcFlags.SCHED1:
            words.append("mh-fallback")
        if flags & SvcFlags.SCHED2:
            words.append("mh-port")
    else:
        if flags & SvcFlags.SCHED1:
            words.append("flag-1")
        if flags & SvcFlags.SCHED2:
            words.append("flag-2")
        if flags & SvcFlags.SCHED3:
            words.append("flag-3")
    return ",".join(words)


def _mask_text(se: ServiceView) -> str | None:
    """The mask as ipvsadm shows it, or None when it is the default."""
    if se.af == AF_INET6:
        return None if se.netmask == 128 else str(_signed32(se.netmask))
    if se.netmask == 0xFFFFFFFF:
        return None
    return str(ipaddress.IPv4Address(se.netmask & 0xFFFFFFFF))


def _tun_info(d: DestView) -> str:
    if d.fwd != int(Fwd.TUNNEL):
        return "n/a"
    flags = _TUN_FLAGS[d.tun_flags] if 0 <= d.tun_flags < 3 else "(null)"
    if d.tun_type == TunType.IPIP:
        return "ipip"
    if d.tun_type == TunType.GUE:
        return f"gue:{d.tun_port}:{flags}"
    if d.tun_type == TunType.GRE:
        return f"gre:{flags}"
    return "n/a"


def _tunnel_rule(svc_name: str, dname: str, d: DestView) -> str:
    head = f"-a {svc_name} -r {dname} {_fwd_switch(d.fwd)} -w {d.weight}"
    opt = _TUN_FLAG_OPTS[d.tun_flags] if 0 <= d.tun_flags < 3 else "(null)"
    if d.tun_type == TunType.GRE:
        return f"{head} --tun-type gre {opt}\n"
    if d.tun_type == TunType.GUE:
        return f"{head} --tun-type gue --tun-port {d.tun_port} {opt}\n"
    if d.tun_type == TunType.IPIP:
        return f"{head} --tun-type ipip\n"
    return f"{head}\n"


def service_entry(se: ServiceView, fmt: Format, names: NameResolver | None, rule: bool = False) -> str:
    """print_service_entry(): the service line and its real-server lines."""
    numeric = fmt.numeric
    out: list[str] = []
    if se.fwmark:
        mark = _signed32(se.fwmark)
        v6 = " -6" if rule else " IPv6"
        base = f"-f {mark}" if rule else f"FWM  {mark}"
        svc_name = base + (v6 if se.af == AF_INET6 else "")
    else:
        vname = addrport_name(se.addr, se.port, se.protocol, numeric, names)
        if rule:
            svc_name = f"{_PROTO_OPTION.get(se.protocol, '--xxx-service')} {vname}"
        else:
            svc_name = f"{_PROTO_LABEL.get(se.protocol, '?'):<4} {vname}"
            if se.af != AF_INET6:
                svc_name = svc_name[:33]

    has_sched_flags = bool(se.flags & (SvcFlags.SCHED1 | SvcFlags.SCHED2 | SvcFlags.SCHED3))
    persistent = bool(se.flags & SvcFlags.PERSISTENT)
    if rule:
        line = f"-A {svc_name} -s {se.scheduler}"
        if persistent:
            line += f" -p {se.timeout}"
            mask = _mask_text(se)
            if mask is not None:
                line += f" -M {mask}"
        if se.pe_name:
            line += f" --pe {se.pe_name}"
        if se.flags & SvcFlags.ONEPACKET:
            line += " -o"
        if has_sched_flags:
            line += " -b " + sched_flags_text(se)
    elif fmt.stats:
        line = f"{svc_name:<33}" + "".join(largenum(v, fmt.exact) for v in se.stats)
    elif fmt.rate:
        line = f"{svc_name:<33}" + "".join(largenum(v, fmt.exact) for v in se.rates)
    else:
        line = f"{svc_name} {se.scheduler}"
        if has_sched_flags:
            line += f" ({sched_flags_text(se)})"
        if persistent:
            line += f" persistent {se.timeout}"
            mask = _mask_text(se)
            if mask is not None:
                line += f" mask {mask}"
            if se.pe_name:
                line += f" pe {se.pe_name}"
        if se.flags & SvcFlags.ONEPACKET:
            line += " ops"
    out.append(line + "\n")

    # The kernel reports no protocol for a fwmark service, so its ports are never named.
    protocol = 0 if se.fwmark else se.protocol
    dests = list(se.dests) if fmt.nosort else sort_dests(list(se.dests))
    if not rule and not (fmt.stats or fmt.rate or fmt.thresholds or fmt.persistent_conn or fmt.tun_info):
        # the plain listing (-L, -Ln): the last branch below, with addrport_name's numeric IPv4
        # shortcut inlined (a 100,000-server table spends its time in this loop)
        append = out.append
        for d in dests:
            addr = d.addr
            if numeric and ":" not in addr and addr.count(".") == 3:
                dname = f"{addr}:{d.port}"[:28]
            else:
                dname = addrport_name(addr, d.port, protocol, numeric, names)
                if ":" not in addr:
                    dname = dname[:28]
            append(
                f"  -> {dname:<28} {_FWD_NAME_OF.get(d.fwd, '(null)'):<7} {d.weight:<6d} "
                f"{d.activeconns:<10d} {d.inactconns:<10d}\n"
            )
        return "".join(out)
    for d in dests:
        dname = addrport_name(d.addr, d.port, protocol, numeric, names)
        if not rule and ":" not in d.addr:
            dname = dname[:28]
        if rule:
            if d.fwd == int(Fwd.TUNNEL):
                out.append(_tunnel_rule(svc_name, dname, d))
            else:
                out.append(f"-a {svc_name} -r {dname} {_fwd_switch(d.fwd)} -w {d.weight}\n")
        elif fmt.stats:
            out.append(f"  -> {dname:<28}" + "".join(largenum(v, fmt.exact) for v in d.stats) + "\n")
        elif fmt.rate:
            cps, inpps, outpps, inbps, outbps = d.rates
            out.append(
                f"  -> {dname:<28} {cps:8d} {inpps:8d} {outpps:8d}"
                + largenum(inbps, fmt.exact)
                + largenum(outbps, fmt.exact)
                + "\n"
            )
        elif fmt.thresholds:
            out.append(
                f"  -> {dname:<28} {d.u_threshold:<10d} {d.l_threshold:<10d} "
                f"{d.activeconns:<10d} {d.inactconns:<10d}\n"
            )
        elif fmt.persistent_conn:
            out.append(
                f"  -> {dname:<28} {d.weight:<9d} {d.persistconns:<11d} "
                f"{d.activeconns:<10d} {d.inactconns:<10d}\n"
            )
        elif fmt.tun_info:
            out.append(
                f"  -> {dname:<28} {_fwd_name(d.fwd):<7} {_tun_info(d):<13} {d.weight:<6d} "
                f"{d.activeconns:<10d} {d.inactconns:<10d}\n"
            )
        else:
            out.append(
                f"  -> {dname:<28} {_fwd_name(d.fwd):<7} {d.weight:<6d} "
                f"{d.activeconns:<10d} {d.inactconns:<10d}\n"
            )
    return "".join(out)


def version_line(snap: Snapshot) -> str:
    return f"IP Virtual Server version {IPVS_VERSION} (size={snap.conn_tab_size})\n"


def ordered_services(snap: Snapshot, nosort: bool) -> list[ServiceView]:
    services = list(snap.services)
    return services if nosort else sort_services(services)


def list_all(snap: Snapshot, fmt: Format, names: NameResolver | None) -> str:
    """`ipvsadm -L` (whole table)."""
    parts = [version_line(snap), title(fmt)]
    parts.extend(service_entry(se, fmt, names) for se in ordered_services(snap, fmt.nosort))
    return "".join(parts)


def list_service(se: ServiceView, fmt: Format, names: NameResolver | None) -> str:
    """`ipvsadm -L -t ...`: the titles and one service (no version line)."""
    return title(fmt) + service_entry(se, fmt, names)


def list_timeout(snap: Snapshot) -> str:
    tcp, tcpfin, udp = snap.timeouts
    return f"Timeout (tcp tcpfin udp): {tcp} {tcpfin} {udp}\n"


def list_daemons(snap: Snapshot) -> str:
    lines = []
    for state in ("master", "backup"):
        for d in snap.daemons:
            if d.state != state:
                continue
            line = f"{state} sync daemon (mcast={d.mcast_ifn}, syncid={d.syncid}"
            if d.maxlen:
                line += f", maxlen={d.maxlen}"
            if d.group:
                line += f", group={d.group}"
            if d.port:
                line += f", port={d.port}"
            if d.ttl:
                line += f", ttl={d.ttl}"
            lines.append(line + ")\n")
    return "".join(lines)


def list_connections(
    conns: Iterable[ConnView], numeric: bool, persistent_conn: bool, names: NameResolver | None
) -> str:
    """`ipvsadm -Lc`: /proc/net/ip_vs_conn reformatted."""
    out = ["IPVS connection entries\n"]
    if persistent_conn:
        out.append(
            f"pro expire {'state':<11} {'source':<18} {'virtual':<18} {'destination':<18} "
            f"{'pe name':<16} pe_data\n"
        )
    else:
        out.append(f"pro expire {'state':<11} {'source':<18} {'virtual':<18} destination\n")
    for c in conns:
        proto = _PROTO_LABEL.get(c.protocol, "IP")
        cname = addrport_name(c.caddr, c.cport, c.protocol, numeric, names)
        vname = addrport_name(c.vaddr, c.vport, c.protocol, numeric, names)
        dname = addrport_name(c.daddr, c.dport, c.protocol, numeric, names)
        expires = max(int(c.expires), 0)
        expire = f"{expires // 60:02d}:{expires % 60:02d}"
        if persistent_conn and c.pe_name and c.pe_data:  # /proc shows both or neither
            out.append(
                f"{proto:<3} {expire:<6} {c.state:<11} {cname:<18} {vname:<18} {dname:<16} "
                f"{c.pe_name:<18} {c.pe_data}\n"
            )
        else:
            out.append(f"{proto:<3} {expire:<6} {c.state:<11} {cname:<18} {vname:<18} {dname}\n")
    return "".join(out)
