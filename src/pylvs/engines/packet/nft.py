"""The engine's nftables netdev table: keeps the director's own stack away from forwarded traffic.

AF_PACKET taps see frames before the netdev ingress hook, so a drop rule there hides the virtual
services' packets from the local stack (which would answer a SYN to the VIP with a RST, or forward
a NAT reply un-rewritten) while the engine still reads them. The rules are scoped so the director's
own connections keep working: NAT replies only when not addressed to a local address, FULLNAT replies
only inside our own local-port range. The table is created, replaced and deleted atomically with
`nft -f`, and named after the daemon's pid so several daemons (and stale tables) never collide.

Firewall-mark services need the packets' marks, which only the IP stack's hooks see: an `ip` table of
the same name holds their NFQUEUE rules (`meta mark N queue num Q`), in a chain right after
iptables' mangle PREROUTING where users set the marks. nft here cannot write the xtables NFQUEUE
target those rules use, so pylvs.netlink.nftrule writes them, the chain's rules replaced in one batch.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from dataclasses import dataclass, field

from pylvs.core.types import Fwd
from pylvs.netlink import nftrule

MARK_CHAIN = "fwmark"  # nftrule.queue_chain_text: after the user's MARK rules, before dstnat

PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}


@dataclass(slots=True)
class DropSpec:
    vips: list[tuple[int, str, int]] = field(default_factory=list)  # (proto, addr, port 0 = any)
    nat_dests: list[tuple[int, str, int]] = field(default_factory=list)
    lips: list[tuple[int, str]] = field(default_factory=list)  # (proto, address)


def spec_from_director(director: object, lips_for: dict[str, str]) -> DropSpec:
    """The drop rules for the director's services; lips_for maps a FULLNAT RIP to our local address."""
    spec = DropSpec()
    for svc in director.services:  # type: ignore[attr-defined]
        if svc.fwmark:
            for d in svc.dests:
                if d.fwd == Fwd.MASQ:
                    spec.nat_dests += [(p, str(d.addr), d.port) for p in PROTO_NAMES]
            continue
        if svc.addr is None:
            continue
        p = int(svc.protocol)
        if p not in PROTO_NAMES:
            continue
        spec.vips.append((p, str(svc.addr), svc.port))
        for d in svc.dests:
            if d.fwd == Fwd.MASQ:
                spec.nat_dests.append((p, str(d.addr), d.port))
            elif d.fwd == Fwd.FULLNAT and str(d.addr) in lips_for:
                spec.lips.append((p, lips_for[str(d.addr)]))
    return spec


def _fam(addr: str) -> str:
    return "ip6" if ":" in addr else "ip"


def _chain_rules(spec: DropSpec, port_range: tuple[int, int]) -> list[str]:
    rules = []
    for p, addr, port in sorted(set(spec.vips)):
        pn = PROTO_NAMES[p]
        if port:
            rules.append(f"{_fam(addr)} daddr {addr} {pn} dport {port} drop")
        else:
            rules.append(f"{_fam(addr)} daddr {addr} meta l4proto {pn} drop")
    for p, addr, port in sorted(set(spec.nat_dests)):
        pn = PROTO_NAMES[p]
        sp = f" {pn} sport {port}" if port else f" meta l4proto {pn}"
        rules.append(f"{_fam(addr)} saddr {addr}{sp} fib daddr type != local drop")
    for addr in sorted({a for _p, a, _port in spec.nat_dests if ":" not in a}):
        # ICMP errors from NAT real servers to clients are relayed by the engine, rewritten.
        rules.append(f"ip saddr {addr} meta l4proto icmp fib daddr type != local drop")
    lo, hi = port_range
    for p, addr in sorted(set(spec.lips)):
        rules.append(f"{_fam(addr)} daddr {addr} {PROTO_NAMES[p]} dport {lo}-{hi} drop")
    return rules


def ruleset(table: str, devices: list[str], spec: DropSpec, port_range: tuple[int, int]) -> str:
    body = _chain_rules(spec, port_range)
    lines = [f"table netdev {table}", f"delete table netdev {table}", f"table netdev {table} {{"]
    for i, dev in enumerate(devices):
        lines.append(f"  chain in{i} {{")
        lines.append(f'    type filter hook ingress device "{dev}" priority 0;')
        lines.extend(f"    {r}" for r in body)
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _nft(text: str, args: tuple[str, ...] = ("-f", "-")) -> tuple[int, str]:
    try:
        p = subprocess.run(["nft", *args], input=text, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, str(e)
    return p.returncode, p.stderr.strip()


class NftTable:
    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"pylvs_{os.getpid()}"
        self.installed = False
        self.marks_installed = False

    def apply(self, devices: list[str], spec: DropSpec, port_range: tuple[int, int]) -> None:
        rc, err = _nft(ruleset(self.name, devices, spec, port_range))
        if rc != 0:
            raise OSError(f"nft: cannot install table {self.name}: {err}")
        self.installed = True

    def apply_marks(self, marks: list[int], queue_num: int) -> None:
        """Queue every packet carrying one of `marks` (IPv4) to `queue_num`; none: no `ip` table."""
        if not marks:
            self._remove_marks()
            return
        if not self.marks_installed:
            rc, err = _nft(nftrule.queue_chain_text(self.name, MARK_CHAIN))
            if rc != 0:
                raise OSError(f"nft: cannot install table ip {self.name}: {err}")
            self.marks_installed = True
        rules = [nftrule.mark(m) + nftrule.nfqueue(queue_num, bypass=False) for m in sorted(set(marks))]
        nftrule.replace_rules(nftrule.NFPROTO_IPV4, self.name, MARK_CHAIN, rules)

    def remove(self) -> None:
        if self.installed:
            _nft("", ("delete", "table", "netdev", self.name))
            self.installed = False
        self._remove_marks()

    def _remove_marks(self) -> None:
        if self.marks_installed:
            _nft("", ("delete", "table", "ip", self.name))
            self.marks_installed = False


def remove_stale(prefix: str = "pylvs_") -> list[str]:
    """Delete the netdev and ip tables left by pylvs daemons that no longer run (their pid is gone)."""
    gone = []
    for family in ("netdev", "ip"):
        rc = subprocess.run(["nft", "list", "tables", family], capture_output=True, text=True, timeout=10)
        for m in re.finditer(rf"table {family} ({re.escape(prefix)}(\d+))\b", rc.stdout):
            if not os.path.exists(f"/proc/{m.group(2)}"):
                _nft("", ("delete", "table", family, m.group(1)))
                gone.append(m.group(1))
    return gone


__all__ = ["DropSpec", "NftTable", "remove_stale", "ruleset", "socket", "spec_from_director"]
