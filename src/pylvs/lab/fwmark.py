"""The seed's firewall-mark lab (2.4): first the problem, then the fix.

On the NAT network, each real server answers on port 80 (http) and 443 ("https": plain HTTP on that
port, enough to see where a connection lands). With one service per port, each is scheduled on its
own, so one client's http and https connections end on different real servers. The fix marks both
ports with fwmark 66 in mangle PREROUTING and defines one persistent service `-f 66 -p`: every
connection of the client lands on the same server.

The packet engine receives the marked packets through NFQUEUE (AF_PACKET cannot see marks).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from pylvs.lab import topology as topo
from pylvs.lab.netns import LabError
from pylvs.lab.runner import Lab

MARK_RULE = (
    "iptables -t mangle -A PREROUTING -d {vip} -p tcp -m multiport --dports 80,443 -j MARK --set-mark 66"
)
SEQUENCE = (80, 80, 443, 80, 443, 443)


@dataclass
class FwmarkResult:
    before: list[tuple[int, str]] = field(default_factory=list)  # (port, answer)
    after: list[tuple[int, str]] = field(default_factory=list)
    listing: str = ""

    @staticmethod
    def servers(answers: list[tuple[int, str]]) -> set[str]:
        return {a for _p, a in answers}


def run_lab(
    engine: str = "packet",
    keep: bool = False,
    out: Callable[[str], None] = print,
    use_daemon: bool | None = None,
) -> FwmarkResult:
    res = FwmarkResult()
    with Lab("nat", engine, keep=keep, out=out, use_daemon=use_daemon, udp=False) as lab:
        lab.web_ports = [80, 443]
        # The proxy engine relays as FULLNAT here: its TPROXY listener serves the fwmark service, and
        # the transparent-proxy routing that -m needs would capture the marked connections' packets.
        lab.transparent = False
        flag = "--fullnat" if engine == "proxy" else "-m"
        lab.build()
        vip = topo.NAT_VIP
        rs = list(lab.t.rs.values()) if lab.t else []
        out("== The problem: http and https are two services, scheduled apart ==")
        cmds = []
        for port in (80, 443):
            cmds.append(f"-A -t {vip}:{port} -s rr")
            cmds += [f"-a -t {vip}:{port} -r {ip}:{port} {flag}" for ip in rs]
        lab.start_director(cmds)
        res.before = _visit(lab, out)
        out("== The fix: one mark for both ports, one persistent service ==")
        rule = MARK_RULE.format(vip=vip)
        out(f"[director]# {rule}")
        lab.n.run("lvs", rule.split())
        if engine == "proxy":
            # The proxy engine serves a fwmark service from one TPROXY listener (docs/proxy.md).
            tp = "iptables -t mangle -A PREROUTING -m mark --mark 66 -p tcp -j TPROXY --on-port 9999 --on-ip 0.0.0.0 --tproxy-mark 0x0/0x0"
            out(f"[director]# {tp}")
            lab.n.run("lvs", tp.split())
        lab.configure(["-C", "-A -f 66 -s rr -p"] + [f"-a -f 66 -r {ip} {flag}" for ip in rs])
        res.after = _visit(lab, out)
        lab.collect()
        res.listing = lab.result.listing
    return res


def _visit(lab: Lab, out: Callable[[str], None]) -> list[tuple[int, str]]:
    got = []
    for port in SEQUENCE:
        a = lab.curl(port=port).strip() or "(no answer)"
        got.append((port, a))
        out(f"[client]$ curl http://{topo.NAT_VIP}:{port}/  ->  {a}")
    http = {a for p, a in got if p == 80}
    https = {a for p, a in got if p == 443}
    if len(http | https) > 1:
        out(
            f"   one client, {len(http | https)} real servers: http on {sorted(http)}, https on {sorted(https)}"
        )
    else:
        out(f"   one client, one real server for http and https: {next(iter(http | https))}")
    return got


def run_fwmark(args: argparse.Namespace) -> int:
    try:
        r = run_lab(args.engine, args.keep, use_daemon=False if getattr(args, "bare", False) else None)
    except (LabError, OSError, ValueError) as e:
        print(f"pylvs lab fwmark: {e}", file=sys.stderr)
        return 1
    ok = (
        len(r.servers(r.before)) == 2
        and len(r.servers(r.after)) == 1
        and all(a.startswith("welcome") for _p, a in r.after)
    )
    print("lab fwmark", "ok" if ok else "FAILED")
    return 0 if ok else 1
