"""The kernel objects the fast path owns: one `ip` table (the NFQUEUE rules, mark -> dnat/snat maps,
the conntrack event masks) and one `netdev` table (DR flows).

Both live under fixed pylvs names so a restarted pylvsd finds and adopts them instead of flushing
them; each change is one transaction. Tables, chains and map elements that change with the rules
(servers) go through the nft command; the NFQUEUE rules through netlink (pylvs.netlink.nftrule:
nft here has no `queue` statement, so they use the xtables NFQUEUE target, which nft cannot
write); per-connection DR flows through netlink too (pylvs.netlink.nftset), ~100x cheaper per
element than the command.
"""

from __future__ import annotations

import json
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Any

from pylvs.netlink import nftrule

IP_TABLE = "pylvs_fast"
DR_TABLE = "pylvs_fastdr"
# The chain that hands new connections to pylvsd (nftrule.queue_chain_text: after iptables' mangle,
# where users mark packets for firewall-mark services, and before dstnat).
QUEUE_CHAIN = "newconn"
LEGACY_IPT_CHAIN = "PYLVS-FAST"  # where pylvsd kept the NFQUEUE rules before (iptables mangle)
RS_SHIFT = 16
RS_MASK = 0xFFFF0000  # mark bits naming the real server; the low 16 bits stay the user's fwmark
OURS = 0x80000000  # always set in our marks: conntrack dumps are filtered by it in the kernel
# Set in the ct mark by the `fin` chain when a FIN or RST of one of our connections goes by: the
# periodic counter dump leaves closed connections out in the kernel (most entries of a busy
# director sit in TIME_WAIT for two minutes); each gets one last look by itself instead.
CLOSED = 0x40000000
# Set in the ct mark by the `fin` chain on the first packet after the handshake (see
# closed_chain_text: the event masks).
ESTB = 0x20000000
MAX_ID = 0x1FFF  # server ids stay below ESTB
USER_MASK = 0x0000FFFF
# conntrack's timeout policy for our TCP connections: TIME_WAIT and CLOSE last CLOSED_LINGER seconds
# (see closed_chain_text); kernels without nf_conntrack_timeout run without it.
TCP_TIMEOUT_POLICY = "closed_tcp"
CLOSED_LINGER = 2
DR_PRIORITY = 10  # after the labs' probe counters (-10); the per-packet engine never shares a VIP with us


def nft(text: str, args: tuple[str, ...] = ("-f", "-")) -> tuple[int, str, str]:
    try:
        p = subprocess.run(["nft", *args], input=text, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, "", str(e)
    return p.returncode, p.stdout, p.stderr.strip()


def nft_json(*args: str) -> list[dict[str, Any]]:
    rc, out, _err = nft("", ("-j", *args))
    if rc != 0 or not out.strip():
        return []
    try:
        data = json.loads(out).get("nftables", [])
    except ValueError:
        return []
    return data if isinstance(data, list) else []


def table_exists(family: str, name: str) -> bool:
    return nft("", ("list", "table", family, name))[0] == 0


def ip_table_text(linger: bool = True, event_masks: bool = True) -> str:
    m = f"0x{RS_MASK:08x}"
    return (
        f"""table ip {IP_TABLE} {{
  map dnat_ap {{ type mark : ipv4_addr . inet_service; }}
  map dnat_a {{ type mark : ipv4_addr; }}
  map snat_a {{ type mark : ipv4_addr; }}
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    meta mark & {m} != 0 ct mark set meta mark
    meta l4proto {{ tcp, udp }} meta mark & {m} != 0 dnat ip addr . port to meta mark & {m} map @dnat_ap
    meta mark & {m} != 0 dnat ip to meta mark & {m} map @dnat_a
  }}
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    ct mark & {m} != 0 snat ip to ct mark & {m} map @snat_a
  }}
}}
"""
        + queue_chain_text()
        + closed_chain_text(linger, event_masks)
    )


def queue_chain_text() -> str:
    """The (empty) chain of the NFQUEUE rules; declaring it again leaves its rules alone, so an
    adopted table from an older pylvsd gets it too."""
    return nftrule.queue_chain_text(IP_TABLE, QUEUE_CHAIN)


def closed_chain_text(linger: bool = True, event_masks: bool = True) -> str:
    """The chain that flags closed connections (CLOSED); replaced whole, so an adopted table from
    an older pylvsd gets it too. `linger`: our TCP connections also get the `closed_tcp` timeout
    policy on their first packet (still unconfirmed in the forward hook), so conntrack lets a
    closed one go after CLOSED_LINGER seconds instead of two minutes (the core keeps its own
    TIME_WAIT entry, as IPVS does): its DESTROY event, which carries the last counters and
    state, then comes within seconds, and a busy director's conntrack table does not fill up
    with TIME_WAIT entries (262144 of them last two minutes at 2,200 connections/s).

    `event_masks` (with `linger`): each connection's conntrack event mask is set per packet so
    the kernel builds only the events the core uses: none for the SYN+ACK (SYN_RECV); state
    changes from the first packet after the handshake (ESTABLISHED, which also sets ESTB) until
    the first FIN (FIN_WAIT, which sets CLOSED); after that only RST (CLOSE) and the DESTROY.
    Building an event it then dropped cost the kernel ~2 us each, 3-4 per connection. Segments
    of an established, open connection without FIN or RST (bulk traffic) leave at the first rule."""
    ours, estb, closed = f"0x{OURS:08x}", f"0x{ESTB:08x}", f"0x{CLOSED:08x}"
    masks = event_masks and linger
    policy = ""
    rules = []
    if masks:
        rules.append(
            f"ct mark & ({ours} | {estb} | {closed}) == {ours} | {estb} tcp flags & (fin | rst) == 0 accept"
        )
    if linger:
        policy = f"""  ct timeout {TCP_TIMEOUT_POLICY} {{
    protocol tcp;
    l3proto ip;
    policy = {{ time_wait: {CLOSED_LINGER}, close: {CLOSED_LINGER} }};
  }}
"""
        rules.append(
            f"meta l4proto tcp ct state new ct mark & {ours} != 0"
            f' ct timeout set "{TCP_TIMEOUT_POLICY}"' + (" ct event set destroy" if masks else "")
        )
    if masks:
        rules += [
            f"meta l4proto tcp ct state established ct direction original"
            f" ct mark & ({ours} | {estb} | {closed}) == {ours}"
            f" ct event set protoinfo,destroy ct mark set ct mark | {estb}",
            f"meta l4proto tcp ct mark & ({ours} | {closed}) == {ours} | {closed} ct event set destroy",
            f"ct mark & {ours} != 0 tcp flags & rst != 0 ct event set protoinfo,destroy",
        ]
    rules.append(f"ct mark & {ours} != 0 tcp flags & (fin | rst) != 0 ct mark set ct mark | {closed}")
    body = "".join(f"    {r}\n" for r in rules)
    return f"""table ip {IP_TABLE} {{
{policy}  chain fin {{
    type filter hook forward priority filter; policy accept;
  }}
}}
flush chain ip {IP_TABLE} fin
table ip {IP_TABLE} {{
  chain fin {{
{body}  }}
}}
"""


@dataclass
class DrSpec:
    device: str
    mac: str  # our own, the frames' new source
    vips: list[tuple[str, int]] = field(default_factory=list)  # (VIP, port)


def dr_table_text(specs: list[DrSpec], seen_timeout: int, create: bool) -> str:
    """The DR table: created with its flow map and seen set, or (create=False) only its chains
    replaced, in one transaction, so the flows of running connections survive a rule change."""
    lines = []
    if create:
        lines += [
            f"table netdev {DR_TABLE} {{",
            "  map flows { type ipv4_addr . inet_service . ipv4_addr . inet_service : ether_addr; flags timeout; }",
            f"  set seen {{ type ipv4_addr . inet_service . ipv4_addr . inet_service; flags dynamic,timeout; timeout {seen_timeout}s; counter; }}",
            "}",
        ]
    else:
        for ch in existing_chains("netdev", DR_TABLE):
            lines.append(f"flush chain netdev {DR_TABLE} {ch}")
            lines.append(f"delete chain netdev {DR_TABLE} {ch}")
    for i, s in enumerate(specs):
        if not s.vips:
            continue
        lines.append(f"table netdev {DR_TABLE} {{")
        lines.append(f"  chain in{i} {{")
        lines.append(f'    type filter hook ingress device "{s.device}" priority {DR_PRIORITY};')
        for vip, port in sorted(set(s.vips)):
            match = f"ip daddr {vip} tcp dport {port}"
            key = "ip daddr . tcp dport . ip saddr . tcp sport"
            # SYNs never take the kernel path: every new connection is pylvsd's to schedule.
            lines.append(
                f"    {match} tcp flags & (syn | ack) != syn ether daddr set {key} map @flows"
                f' update @seen {{ {key} }} ether saddr set {s.mac} fwd to "{s.device}"'
            )
            lines.append(f"    {match} drop")
        lines.append("  }")
        lines.append("}")
    return "\n".join(lines) + "\n"


def existing_chains(family: str, table: str) -> list[str]:
    return [
        o["chain"]["name"]
        for o in nft_json("list", "table", family, table)
        if "chain" in o and o["chain"].get("table") == table
    ]


def map_elements(family: str, table: str, name: str) -> list[tuple[Any, Any]]:
    """(key, value) of a map's elements as `nft -j` prints them."""
    out: list[tuple[Any, Any]] = []
    for o in nft_json("list", "map", family, table, name):
        body = o.get("map")
        if not body:
            continue
        for el in body.get("elem", []):
            if isinstance(el, list) and len(el) == 2:
                k = el[0]
                if isinstance(k, dict) and "elem" in k:
                    k = k["elem"]["val"]
                out.append((k, el[1]))
    return out


def concat_vals(k: Any) -> list[Any]:
    if isinstance(k, dict) and "concat" in k:
        return list(k["concat"])
    return [k]


def remove_tables() -> None:
    nft("", ("delete", "table", "ip", IP_TABLE))
    nft("", ("delete", "table", "netdev", DR_TABLE))


# -- the NFQUEUE rules ------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueRule:
    """New connections (conntrack state NEW) that go to pylvsd: to a VIP (and port; 0: any port), or
    carrying a firewall mark."""

    proto: int = 0
    vip: str = ""
    port: int = 0
    mark: int = 0

    def text(self, queue_num: int, bypass: bool) -> str:
        """The rule as nft lists it."""
        if self.mark:
            match = f"meta mark 0x{self.mark:08x}"
        else:
            pn = {6: "tcp", 17: "udp"}[self.proto]
            match = f"ip daddr {self.vip} " + (
                f"{pn} dport {self.port}" if self.port else f"meta l4proto {pn}"
            )
        return f"{match} ct state new queue num {queue_num}" + (" bypass" if bypass else "")

    def exprs(self, queue_num: int, bypass: bool) -> list[bytes]:
        if self.mark:
            match = nftrule.mark(self.mark)
        else:
            match = nftrule.ip_daddr(socket.inet_aton(self.vip)) + nftrule.l4proto(self.proto)
            if self.port:
                match += nftrule.dport(self.port)
        return match + nftrule.ct_state_new() + nftrule.nfqueue(queue_num, bypass)


def queue_rules(vips: list[tuple[int, str, int]], marks: list[int]) -> list[QueueRule]:
    """Firewall marks first, then VIPs (proto, address, port), each once, in a stable order."""
    return [QueueRule(mark=m) for m in sorted(set(marks))] + [
        QueueRule(proto, vip, port) for proto, vip, port in sorted(set(vips))
    ]


def apply_queue_rules(rules: list[QueueRule], queue_num: int, bypass: bool) -> None:
    """Replace the queue chain's rules in one netlink transaction (OSError if refused)."""
    nftrule.replace_rules(
        nftrule.NFPROTO_IPV4, IP_TABLE, QUEUE_CHAIN, [r.exprs(queue_num, bypass) for r in rules]
    )


def remove_legacy_queue_chain() -> None:
    """Remove the iptables mangle chain an older pylvsd kept its NFQUEUE rules in, if one is there
    (a restarted pylvsd adopting that one's table); a machine without iptables has none."""
    try:
        cur = _ipt(["-t", "mangle", "-S", "PREROUTING"]).stdout.splitlines()
        jump = f"-A PREROUTING -j {LEGACY_IPT_CHAIN}"
        if jump not in cur and f"-N {LEGACY_IPT_CHAIN}" not in _ipt(["-t", "mangle", "-S"]).stdout:
            return
        for _ in range(cur.count(jump)):
            _ipt(["-t", "mangle", "-D", "PREROUTING", "-j", LEGACY_IPT_CHAIN])
        _ipt(["-t", "mangle", "-F", LEGACY_IPT_CHAIN])
        _ipt(["-t", "mangle", "-X", LEGACY_IPT_CHAIN])
    except (OSError, subprocess.TimeoutExpired):
        pass


def _ipt(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, timeout=10)
