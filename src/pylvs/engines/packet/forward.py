"""The packet path: one frame in, the frames to send out. No sockets here (the engine does I/O), so
the whole of NAT, DR, TUN and FULLNAT forwarding can be exercised with synthetic frames.

Per forwarding method (what IPVS does, in user space):
- MASQ (-m): request daddr:dport VIP -> RIP, reply saddr:sport RIP -> VIP; incremental checksums.
- DROUTE (-g): only the MACs change (destination = RS, source = ours); IP and L4 untouched.
- TUNNEL (-i): the packet (checksums finished, GSO frames cut) inside a new IPv4 header to the RIP;
  an oversized DF packet gets ICMP fragmentation-needed back, as the kernel's tunnel xmit does.
- FULLNAT: like MASQ plus saddr:sport CIP -> LIP:lport from our own port pool; both reversed on replies.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pylvs.core.director import Director
from pylvs.core.packet import Verdict
from pylvs.core.types import Fwd, IPAddr, Packet, Proto
from pylvs.engines.packet import coreapi, icmp, offload, sctp
from pylvs.engines.packet.csum import get16
from pylvs.engines.packet.frames import (
    ETH,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    F_DATA_VALID,
    F_NEEDS_CSUM,
    IP,
    IP6_HLEN,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_IPIP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    NO_VNET,
    VNET,
    arp_request,
    complete_checksum,
    eth_header,
    icmp6_error,
    icmp_error,
    ipv4_header,
    ndp_solicit,
    parse_arp,
    parse_ndp,
    segment_ipv4,
    tcp_reset,
)
from pylvs.engines.packet.neigh import Neighbours
from pylvs.engines.packet.ports import PortPool
from pylvs.engines.packet.rewrite import FixedRewrite, apply_fixed, fixed_rewrite, iplen, rewrite

Frames = list[tuple[int, bytes | bytearray]]  # (ifindex, frame with virtio header)
IPPROTO_SCTP = sctp.IPPROTO_SCTP
Flow = tuple[int, bytes, int, bytes, int]  # (protocol, source address, port, destination address, port)
HOP_TTL = 1.0  # seconds a steady connection reuses the way out it learnt (see Forwarder._fast)
# A TUN connection not given to the kernel's fast path (offload.py) on its SYN goes there after this
# many steady packets (e.g. after a rule change removed its elements).
OFFLOAD_AFTER = 8


@dataclass(slots=True)
class Iface:
    index: int
    name: str
    mac: bytes
    mtu: int = 1500
    addrs: list[bytes] = field(default_factory=list)


class Route(NamedTuple):
    ifindex: int
    nexthop: bytes  # the gateway, or the destination itself when on-link
    src: bytes  # the address the kernel would use as source toward it


@dataclass(slots=True)
class FullnatEntry:
    conn: coreapi.Conn
    caddr: bytes
    cport: int
    vaddr: bytes
    vport: int
    raddr: bytes
    rport: int
    laddr: bytes
    lport: int
    proto: int


@dataclass(slots=True)
class FastEntry:
    """What the core decided for a steady connection, and the facts that must not change to reuse it."""

    conn: coreapi.Conn
    state: int
    cflags: int
    timeouts: object
    kind: int  # 0 request, 1 NAT reply, 2 FULLNAT reply
    fn: FullnatEntry | None
    stats: tuple[Any, ...]  # the counters the core adds to (server, service, total)
    fwd: int
    raddr: bytes
    rport: int
    vaddr: bytes
    vport: int
    hop: tuple[int, bytes] | None = None  # (ifindex, destination + source MAC) the frames go out with
    hop_until: float = 0.0
    warm: bool = False  # a fast packet has been through: the next one may learn the way out
    rw: FixedRewrite | None = None  # the rewrite with its checksum deltas precomputed (IPv4)
    tun: tuple[bytes, int, int] | None = None  # TUN: (virtio + Ethernet + outer header template,
    # its header's partial sum, the largest inner packet that fits)
    offloaded: bool = False  # TUN: the kernel sends its steady segments (offload.py)
    tunnelled: int = 0  # TUN: packets sent with the learnt template (see OFFLOAD_AFTER)


@dataclass(slots=True)
class Rules:
    """What the fast checks need, recomputed from the director's services on every rule change."""

    vips: set[tuple[int, bytes, int]] = field(default_factory=set)  # (proto, addr, port 0 = any)
    nat_dests: set[tuple[int, bytes, int]] = field(default_factory=set)  # MASQ replies come from these
    lips: set[bytes] = field(default_factory=set)  # FULLNAT local addresses
    vip_addrs: set[bytes] = field(default_factory=set)  # ICMP errors to these may concern a connection
    nat_addrs: set[bytes] = field(default_factory=set)  # ... and from these (NAT real servers)


_ADDR_CACHE: dict[bytes, IPAddr] = {}


def _ip(b: bytes) -> IPAddr:
    a = _ADDR_CACHE.get(b)
    if a is None:
        if len(_ADDR_CACHE) > 65536:
            _ADDR_CACHE.clear()
        a = _ADDR_CACHE[b] = ipaddress.ip_address(b)
    return a


_HH = struct.Struct("!HH")
_H = struct.Struct("!H")
_HHH = struct.Struct("!HHH")
_HDR = struct.Struct("!HBBHHHBBH4s4s")  # ethertype + the fixed IPv4 header
_II = struct.Struct("!II")  # an IPv4 header's source and destination addresses, as ints


def _l4_check_off(proto: int) -> int:
    return 16 if proto == IPPROTO_TCP else 6


class Forwarder:
    """Holds the engine-side state (neighbours, client MACs, FULLNAT ports) and rewrites frames."""

    def __init__(
        self,
        director: Director,
        ifaces: dict[int, Iface],
        route: Callable[[bytes], Route | None],
        neigh: Neighbours,
        ports: PortPool,
    ) -> None:
        self.director = director
        self.ifaces = ifaces
        self.route = route
        self.neigh = neigh
        self.ports = ports
        self.rules = Rules()
        self.clients: dict[bytes, tuple[int, bytes]] = {}  # client (or next hop) IP -> (ifindex, MAC)
        self.fn_by_client: dict[Flow, FullnatEntry] = {}
        self.fn_by_local: dict[Flow, FullnatEntry] = {}
        self.ident = 0
        self.fast: dict[Flow, FastEntry] = {}
        self.conn_table: Any = getattr(director, "conns", None)
        self.offload: Any = None  # an offload.ConnOffload when the kernel forwards decided connections
        self.offload_fwds: frozenset[Fwd] = frozenset()  # ... of servers with these methods
        # The core's int entry points for IPv4 (no Packet or address objects per packet), used
        # unless the Packet API was replaced on this director (the tests' small fake core does).
        own = getattr(director, "__dict__", {})
        self._in_v4: Callable[..., Any] | None = (
            None if "process_in" in own else getattr(director, "process_in_v4", None)
        )
        self._out_tcp: Callable[..., Any] | None = (
            None if "process_out" in own else getattr(director, "process_out_tcp", None)
        )
        self._lookup_out_v4: Callable[..., Any] | None = (
            None if "lookup_out" in own else getattr(director, "lookup_out_v4", None)
        )
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "rx",
                "tx",
                "in",
                "out",
                "nodest",
                "drop",
                "icmp_frag",
                "arp_tx",
                "gso_cut",
                "other_host",
                "unknown",
                "fast",
                "icmp_relayed",
                "pass",
            ),
            0,
        )

    # -- rules ---------------------------------------------------------------------------------
    def load_rules(self) -> None:
        r = Rules()
        for svc in self.director.services:
            if svc.fwmark:
                # Requests come through NFQUEUE; NAT replies still arrive on the packet sockets.
                for d in svc.dests:
                    if d.fwd == Fwd.MASQ and d.addr.version == 4:
                        r.nat_dests.add((IPPROTO_TCP, d.addr.packed, d.port))
                        r.nat_dests.add((IPPROTO_UDP, d.addr.packed, d.port))
                        r.nat_dests.add((IPPROTO_SCTP, d.addr.packed, d.port))
                continue
            if svc.addr is None:
                continue
            r.vips.add((int(svc.protocol), svc.addr.packed, svc.port))
            for d in svc.dests:
                if d.fwd == Fwd.MASQ:
                    r.nat_dests.add((int(svc.protocol), d.addr.packed, d.port))
                elif d.fwd == Fwd.FULLNAT:
                    rt = self.route(d.addr.packed)
                    if rt is not None:
                        r.lips.add(rt.src)
        r.vip_addrs = {a for _p, a, _port in r.vips}
        r.nat_addrs = {a for _p, a, _port in r.nat_dests}
        self.rules = r
        self.fast.clear()
        if self.offload is not None:
            self.offload.clear()

    # -- entry point ---------------------------------------------------------------------------
    def handle(self, ifindex: int, f: bytearray, now: float) -> Frames:
        c = self.counters
        c["rx"] += 1
        out: Frames = []
        ifc = self.ifaces.get(ifindex)
        if ifc is None or len(f) < IP + 20:
            return out
        # Ethernet type, then the IPv4 header and the first 4 bytes after it, in one unpack.
        et, vihl, _tos, tl, _id, frag, _ttl, proto, _ck, saddr, daddr = _HDR.unpack_from(f, ETH + 12)
        if et == ETH_P_ARP:
            self._arp(f, out)
            return out
        if f[ETH] & 1 == 0 and f[ETH : ETH + 6] != ifc.mac:
            c["other_host"] += 1  # a bridge flooding someone else's frame: not ours to forward
            return out
        if et != ETH_P_IP or vihl >> 4 != 4:
            if et == ETH_P_IPV6 and vihl >> 4 == 6 and len(f) >= IP + IP6_HLEN + 4:
                self._handle6(ifc, f, out, now)
            return out
        if (proto != IPPROTO_TCP and proto != IPPROTO_UDP) or frag & 0x3FFF:
            if proto == IPPROTO_ICMP and not frag & 0x3FFF:
                self._icmp(ifc, f, out, saddr, daddr)
            elif proto == IPPROTO_SCTP and not frag & 0x3FFF:
                self._sctp4(ifc, f, out, now, IP + (vihl & 0xF) * 4, IP + tl, saddr, daddr)
            else:
                c["unknown"] += 1  # fragments and other protocols are left alone
            return out
        l4 = IP + (vihl & 0xF) * 4
        sport, dport = _HH.unpack_from(f, l4)
        self._dispatch(ifc, f, out, now, l4, (proto, saddr, sport, daddr, dport))
        return out

    def _sctp4(
        self, ifc: Iface, f: bytearray, out: Frames, now: float, l4: int, end: int, saddr: bytes, daddr: bytes
    ) -> None:
        """An IPv4 SCTP packet: the same way as TCP and UDP once its CRC is finished (sctp.accept)."""
        if not sctp.accept(f, l4, end):
            self.counters["unknown"] += 1
            return
        sport, dport = _HH.unpack_from(f, l4)
        self._dispatch(ifc, f, out, now, l4, (IPPROTO_SCTP, saddr, sport, daddr, dport))

    def _handle6(self, ifc: Iface, f: bytearray, out: Frames, now: float) -> None:
        """IPv6 (no extension headers): NAT, DR and FULLNAT; neighbour discovery for our next hops."""
        proto = f[IP + 6]
        if proto == IPPROTO_ICMPV6:
            nd = parse_ndp(f)
            if nd is not None:
                for ifindex, frame in self.neigh.learn(nd[0], nd[1]):
                    frame[ETH : ETH + 6] = nd[1]
                    out.append((ifindex, frame))
            return
        l4 = IP + IP6_HLEN
        if proto != IPPROTO_TCP and proto != IPPROTO_UDP:
            if proto != IPPROTO_SCTP or not sctp.accept(f, l4, IP + iplen(f)):
                self.counters["unknown"] += 1
                return
        sport, dport = _HH.unpack_from(f, l4)
        flow = (proto, bytes(f[IP + 8 : IP + 24]), sport, bytes(f[IP + 24 : IP + 40]), dport)
        self._dispatch(ifc, f, out, now, l4, flow)

    def _dispatch(self, ifc: Iface, f: bytearray, out: Frames, now: float, l4: int, flow: Flow) -> None:
        if self.fast:
            fe = self.fast.get(flow)
            if fe is not None and self._fast(fe, ifc, f, out, now, l4, flow):
                return
        proto, saddr, sport, daddr, dport = flow
        rules = self.rules
        if (proto, daddr, dport) in rules.vips or (proto, daddr, 0) in rules.vips:
            self._inbound(ifc, f, out, now, l4, flow)
        elif (proto, saddr, sport) in rules.nat_dests or (proto, saddr, 0) in rules.nat_dests:
            self._nat_reply(f, out, now, l4, flow)
        elif daddr in rules.lips and self.ports.owns(dport):
            self._fullnat_reply(f, out, now, l4, flow)
        else:
            self.counters["unknown"] += 1

    def handle_marked(
        self, indev: int, hwaddr: bytes, payload: bytes, fwmark: int, now: float
    ) -> tuple[Frames, bool]:
        """A packet NFQUEUE handed us with its firewall mark (IP layer, checksums finished, no GSO).
        Returns the frames to send and whether the kernel should keep the packet (the core said PASS)."""
        out: Frames = []
        ifc = self.ifaces.get(indev)
        if ifc is None or len(payload) < 20 or payload[0] >> 4 != 4:
            return out, True
        proto = payload[9]
        if proto not in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP) or (payload[6] << 8 | payload[7]) & 0x3FFF:
            return out, True
        f = bytearray(NO_VNET + ifc.mac + (hwaddr[:6] or bytes(6)) + b"\x08\x00") + payload
        l4 = IP + (payload[0] & 0xF) * 4
        if proto == IPPROTO_SCTP and not sctp.accept(f, l4, IP + iplen(f)):
            return out, True
        sport, dport = _HH.unpack_from(f, l4)
        flow = (proto, bytes(f[IP + 12 : IP + 16]), sport, bytes(f[IP + 16 : IP + 20]), dport)
        action = self._inbound(ifc, f, out, now, l4, flow, fwmark)
        return out, action == "PASS"

    def _remember(self, flow: Flow, conn: coreapi.Conn, kind: int, ent: FullnatEntry | None = None) -> None:
        """Keep what the core decided for a connection now in a steady state (see _fast)."""
        self.fast[flow] = FastEntry(
            conn,
            conn.state,
            conn.flags,
            self.director.timeouts,
            kind,
            ent,
            coreapi.stats_of(self.director, conn),
            conn.fwd,
            conn.daddr.packed,
            conn.dport,
            conn.vaddr.packed,
            conn.vport,
        )

    def _fast(
        self, fe: FastEntry, ifc: Iface, f: bytearray, out: Frames, now: float, l4: int, flow: Flow
    ) -> bool:
        """A packet of a connection in a steady state (TCP ESTABLISHED without SYN/FIN/RST, UDP, or
        SCTP ESTABLISHED whose first chunk is one the state machine takes as DATA):
        the core's answer is known (same entry, no state change), so only its counters and timer move.
        Anything else, or any change of the entry, goes the full way through the core.

        The frame's way out (interface and MACs) is learnt from the second packet that takes the full
        forwarding path and reused for HOP_TTL seconds: a route or neighbour change is seen that late
        at most (a rule change drops every entry at once)."""
        conn = fe.conn
        proto = flow[0]
        if (
            (proto == IPPROTO_TCP and f[l4 + 13] & 0x07)
            or conn.state != fe.state
            or conn.flags != fe.cflags
            or self.director.timeouts is not fe.timeouts
            or not conn.dest.available
            or (proto == IPPROTO_SCTP and f[l4 + 12] in sctp.MOVING_CHUNKS)
        ):
            del self.fast[flow]
            if fe.offloaded:
                self.offload.remove_flow(flow)  # the core must see its packets again
            return False
        length = iplen(f)
        kind = fe.kind
        if kind == 0:
            for st in fe.stats:
                st.inpkts += 1
                st.inbytes += length
        else:
            for st in fe.stats:
                st.outpkts += 1
                st.outbytes += length
        self.conn_table.arm(conn, now)  # the timer, as the core re-arms it on every packet
        c = self.counters
        c["fast"] += 1
        hop = fe.hop
        fwd = fe.fwd
        ent = fe.fn
        if kind == 0 and fwd == Fwd.FULLNAT and hop is not None:
            ent = self.fn_by_client.get(flow)
            if ent is None or ent.conn is not conn:
                hop = None  # the local port changed hands: the full path sorts it out
        if hop is None or now >= fe.hop_until:
            n = len(out)
            if kind == 0:
                self._forward(ifc, f, out, conn, l4, flow, fe)
            elif kind == 1:
                self._nat_out(f, out, conn, proto, l4, flow[3], fe)
            elif ent is not None:
                self._fullnat_out(f, out, ent, proto, l4)
            if not fe.warm:
                fe.warm = True  # learn from the second fast packet: short connections never pay for it
            elif len(out) == n + 1 and out[n][1] is f:  # forwarded as it is: that way can be reused
                fe.hop = (out[n][0], bytes(f[ETH : ETH + 12]))
                fe.hop_until = now + HOP_TTL
                fe.rw = self._fixed(fe, flow)
            elif kind == 0 and fwd == Fwd.TUNNEL and len(out) == n + 1:
                self._learn_tunnel(fe, out[n])
                fe.hop_until = now + HOP_TTL
                if fe.offloaded and fe.tun is not None:
                    self.offload_steady(flow, fe)  # the way out again (the element follows it)
            return True
        if fe.tun is not None:
            c["in"] += 1
            if not self._tunnel_fast(f, out, hop[0], fe.tun):
                self._tunnel(ifc, f, out, fe.raddr)
            fe.tunnelled += 1
            if fe.tunnelled == OFFLOAD_AFTER and self.offload is not None:
                fe.offloaded = self.offload_steady(flow, fe)
            return True
        rw = fe.rw
        if rw is not None:
            c["in" if kind == 0 else "out"] += 1
            apply_fixed(f, proto, l4, rw)
        elif kind == 0:
            c["in"] += 1
            if fwd == Fwd.MASQ:
                rewrite(f, proto, l4, None, None, fe.raddr, fe.rport)
            elif ent is not None:  # FULLNAT
                rewrite(f, proto, l4, ent.laddr, ent.lport, fe.raddr, fe.rport)
        elif kind == 1:
            c["out"] += 1
            rewrite(f, proto, l4, fe.vaddr, fe.vport, None, None)
        elif ent is not None:
            c["out"] += 1
            rewrite(f, proto, l4, ent.vaddr, ent.vport, ent.caddr, ent.cport)
        f[ETH : ETH + 12] = hop[1]
        f[0] &= ~F_DATA_VALID & 0xFF  # as _send_ip: on the way out only NEEDS_CSUM means anything
        out.append((hop[0], f))
        return True

    def _learn_tunnel(self, fe: FastEntry, sent: tuple[int, bytes | bytearray]) -> None:
        """Keep the outer header _tunnel() just built as a template for the connection's next packets."""
        oidx, frame = sent
        ifc = self.ifaces.get(oidx)
        o = IP  # the outer IPv4 header
        if (
            ifc is None
            or len(frame) < o + 40
            or frame[ETH + 12 : ETH + 14] != b"\x08\x00"
            or frame[o + 9] != 4
        ):
            fe.hop = fe.tun = None
            return
        self._set_tunnel(fe, oidx, bytes(frame[: o + 20]), ifc.mtu - 20)

    @staticmethod
    def _set_tunnel(fe: FastEntry, oidx: int, head: bytes, limit: int) -> None:
        """fe's way out: device, MACs, and the outer header as a template (virtio, Ethernet, IPv4)."""
        o = IP
        tmpl = bytearray(head)
        tmpl[o + 1] = 0  # tos, total length, ident, flags and checksum: filled in per packet
        tmpl[o + 2 : o + 8] = bytes(6)
        tmpl[o + 10 : o + 12] = b"\0\0"
        base = sum(sum(_HH.unpack_from(tmpl, o + i)) for i in range(0, 20, 4))
        fe.hop = (oidx, bytes(head[ETH : ETH + 12]))
        fe.tun = (bytes(tmpl), base, limit)

    def _tunnel_fast(self, f: bytearray, out: Frames, oidx: int, tun: tuple[bytes, int, int]) -> bool:
        """_tunnel() with the learnt template: False (nothing done) for what needs the full way: GSO
        frames to cut, or a packet too big for the tunnel."""
        tmpl, base, limit = tun
        vflags, gso_type, _hl, _gs, csum_start, csum_offset = VNET.unpack_from(f, 0)
        total = iplen(f)
        if gso_type or total > limit:
            return False
        end = IP + total
        if vflags & F_NEEDS_CSUM:
            complete_checksum(f, csum_start, csum_offset, end)
        self.ident = ident = (self.ident + 1) & 0xFFFF
        tos = f[IP + 1]
        frag = f[IP + 6] & 0x40  # DF copied from the inner packet, as _tunnel does
        frame = bytearray(tmpl)
        frame += f[IP:end]
        tot = total + 20
        _HHH.pack_into(frame, IP + 2, tot, ident, frag << 8)
        frame[IP + 1] = tos
        x = base + tos + tot + ident + (frag << 8)
        x = (x & 0xFFFF) + (x >> 16)
        x = (x & 0xFFFF) + (x >> 16)
        _H.pack_into(frame, IP + 10, x ^ 0xFFFF)
        out.append((oidx, frame))
        return True

    def _fixed(self, fe: FastEntry, flow: Flow) -> FixedRewrite | None:
        """The rewrite every later packet of a steady connection gets (None: none, IPv6, or SCTP,
        whose CRC rewrite() keeps)."""
        if flow[0] == IPPROTO_SCTP:
            return None
        if fe.kind == 0:
            if fe.fwd == Fwd.MASQ:
                return fixed_rewrite(flow, None, None, fe.raddr, fe.rport)
            ent = self.fn_by_client.get(flow) if fe.fwd == Fwd.FULLNAT else None
            return fixed_rewrite(flow, ent.laddr, ent.lport, fe.raddr, fe.rport) if ent is not None else None
        if fe.kind == 1:
            return fixed_rewrite(flow, fe.vaddr, fe.vport, None, None)
        ent = fe.fn
        return fixed_rewrite(flow, ent.vaddr, ent.vport, ent.caddr, ent.cport) if ent is not None else None

    def _icmp(self, ifc: Iface, f: bytearray, out: Frames, saddr: bytes, daddr: bytes) -> None:
        """Relay an ICMP error about a tracked connection (see icmp.py)."""
        ihl = (f[IP] & 0xF) * 4
        total = iplen(f)
        q = icmp.quoted(f[IP + ihl : IP + total])
        if q is None:
            return
        proto, qs, qsp, qd, qdp, _off = q
        rules = self.rules
        d = self.director
        f[0:10] = NO_VNET  # every checksum is recomputed below: nothing left to finish
        if daddr in rules.vip_addrs:
            # From the client's side, about a reply VIP:vport -> CIP:cport: to the connection's server.
            conn = coreapi.find_in(d, Proto(proto), _ip(qd), qdp, _ip(qs), qsp)
            if conn is None or getattr(conn, "dead", False):
                return
            fwd = conn.fwd
            raddr = conn.daddr.packed
            rt = self.route(raddr)
            if rt is None:
                return
            self.counters["icmp_relayed"] += 1
            if fwd == Fwd.MASQ:
                pkt = f[IP : total + IP]
                icmp.rewrite(pkt, None, raddr, (raddr, conn.dport), None)
                f[IP : IP + total] = pkt
                self._send_ip(out, rt, rt.nexthop, f)
            elif fwd == Fwd.DROUTE:
                self._send_ip(out, rt, rt.nexthop, f)
            elif fwd == Fwd.TUNNEL:
                self._tunnel(ifc, f, out, raddr)
        elif saddr in rules.nat_addrs:
            # From a NAT real server, about a packet CIP:cport -> RIP:rport: to the client, as the VIP.
            conn = coreapi.find_out(d, Proto(proto), _ip(qd), qdp, _ip(qs), qsp)
            if conn is None or conn.fwd != Fwd.MASQ:
                return
            self.counters["icmp_relayed"] += 1
            vaddr = conn.vaddr.packed
            pkt = f[IP : IP + total]
            icmp.rewrite(pkt, vaddr, None, None, (vaddr, conn.vport))
            f[IP : IP + total] = pkt
            self._to_client(out, daddr, f)

    # -- requests ------------------------------------------------------------------------------
    def _inbound(
        self, ifc: Iface, f: bytearray, out: Frames, now: float, l4: int, flow: Flow, fwmark: int = 0
    ) -> str:
        proto, saddr, sport, daddr, dport = flow
        length = iplen(f)
        flags = f[l4 + 13] if proto == IPPROTO_TCP else 0
        in_v4 = self._in_v4
        action: str
        conn: coreapi.Conn | None
        if in_v4 is not None and proto != IPPROTO_SCTP and len(daddr) == 4:
            # IPv4 TCP/UDP: the addresses as ints straight from the header (SCTP needs its chunk
            # type, which only process_in takes)
            sa, da = _II.unpack_from(f, IP + 12)
            r = in_v4(proto, sa, sport, da, dport, fwmark, length, flags, now)
            if type(r) is Verdict:
                action, conn = r.action.name, r.conn
            else:
                action, conn = "FORWARD", r
        else:
            if proto == IPPROTO_SCTP:
                chunk, abort = sctp.first_chunk(f, l4, IP + length)
                pkt = Packet(
                    Proto(proto), _ip(saddr), sport, _ip(daddr), dport, fwmark, length, 0, chunk, abort
                )
            else:
                pkt = Packet(Proto(proto), _ip(saddr), sport, _ip(daddr), dport, fwmark, length, flags)
            action, conn = coreapi.decide_in(self.director, pkt, now)
        if action == "NO_DEST":
            self.counters["nodest"] += 1
            if len(daddr) == 16:
                err = icmp6_error(ifc.mac, bytes(f[ETH + 6 : ETH + 12]), daddr, f[IP : IP + iplen(f)], 1, 4)
                out.append((ifc.index, err))
                return action
            out.append((ifc.index, icmp_error(ifc.mac, bytes(f[ETH + 6 : ETH + 12]), daddr, f[IP:], 3, 3)))
            return action
        if action == "PASS" and not fwmark and len(daddr) == 4:
            # IPVS lets the packet go on to the director's own stack, which has no socket for it and
            # answers with a RST (TCP) or port unreachable (UDP); our drop rule kept it from that
            # stack, so we answer as it would.
            self.counters["pass"] += 1
            peer = bytes(f[ETH + 6 : ETH + 12])
            if proto == IPPROTO_TCP:
                rst = tcp_reset(ifc.mac, peer, f[IP:])
                if rst is not None:
                    out.append((ifc.index, rst))
            elif proto == IPPROTO_SCTP:
                # an SCTP stack's "out of the blue" answer (an ABORT, mostly), not ICMP
                ootb = sctp.ootb_frame(ifc.mac, peer, f[IP : IP + length])
                if ootb is not None:
                    out.append((ifc.index, ootb))
            else:
                out.append((ifc.index, icmp_error(ifc.mac, peer, daddr, f[IP:], 3, 3)))
            return action
        if action != "FORWARD" or conn is None:
            self.counters["drop"] += 1
            return action
        if coreapi.steady(conn, proto) or (proto == IPPROTO_SCTP and sctp.steady(conn)):
            self._remember(flow, conn, 0)
        off = self.offload
        if off is None or proto != IPPROTO_TCP or fwmark or len(daddr) != 4:
            return self._forward(ifc, f, out, conn, l4, flow)
        n = len(out)
        action = self._forward(ifc, f, out, conn, l4, flow)
        rec = off.by_flow.get(flow)
        if rec is not None and rec.conn is conn:
            off.follow(rec)  # a packet of a connection the kernel forwards: its state follows the core's
        elif flags & 0x12 == 0x02 and len(out) == n + 1 and conn.fwd in self.offload_fwds:
            self._give(flow, conn, out[n])  # before the SYN leaves: its SYN-ACK is the kernel's
        return action

    def _give(self, flow: Flow, conn: coreapi.Conn, sent: tuple[int, bytes | bytearray]) -> None:
        """Give a connection the core has just decided to the kernel (offload.py): its requests with
        the rewrite (or tunnel) the SYN got, its replies (NAT, FULLNAT) with the reply rewrite."""
        oidx, frame = sent
        if len(frame) < IP + 40 or frame[ETH + 12 : ETH + 14] != b"\x08\x00":
            return  # an ARP request: the server's MAC is not known yet
        fwd = conn.fwd
        raddr = conn.daddr.packed
        elements: list[tuple[Flow, int, bytes]]
        if fwd == Fwd.TUNNEL:
            oifc = self.ifaces.get(oidx)
            if frame[IP + 9] != IPPROTO_IPIP or oifc is None:
                return
            value = offload.tunnel_value(
                oidx, bytes(frame[ETH : ETH + 14]), bytes(frame[IP : IP + 20]), oifc.mtu - 20, 2
            )
            elements = [(flow, offload.DIR_IN, value)]
        else:
            l4 = IP + (frame[IP] & 0xF) * 4
            saddr, daddr = bytes(frame[IP + 12 : IP + 16]), bytes(frame[IP + 16 : IP + 20])
            sport, dport = _HH.unpack_from(frame, l4)
            nat = fwd == Fwd.MASQ or fwd == Fwd.FULLNAT
            value = offload.rewrite_value(
                oidx,
                bytes(frame[ETH : ETH + 12]),
                saddr,
                daddr,
                sport,
                dport,
                offload.DIR_IN,
                0 if nat else 2,
                b"" if nat else raddr,
            )
            elements = [(flow, offload.DIR_IN, value)]
            if nat:
                _p, caddr, cport, vaddr, vport = flow
                hop = self.clients.get(caddr)
                cifc = self.ifaces.get(hop[0]) if hop is not None else None
                if hop is None or cifc is None:
                    return
                back = offload.rewrite_value(
                    hop[0], hop[1] + cifc.mac, vaddr, caddr, vport, cport, offload.DIR_OUT, 1
                )
                elements.append(((IPPROTO_TCP, daddr, dport, saddr, sport), offload.DIR_OUT, back))
        self.offload.give(
            conn, coreapi.stats_of(self.director, conn), elements, (raddr, oidx, bytes(frame[ETH : ETH + 6]))
        )

    def offload_steady(self, flow: Flow, fe: FastEntry) -> bool:
        """A steady TUN connection (its outer header learnt) to the kernel."""
        if fe.tun is None or fe.hop is None or flow[0] != IPPROTO_TCP:
            return False
        tmpl, _base, limit = fe.tun
        value = offload.tunnel_value(fe.hop[0], tmpl[ETH : ETH + 14], tmpl[IP : IP + 20], limit, 2)
        hop = (fe.raddr, fe.hop[0], fe.hop[1][:6])
        return bool(self.offload.give(fe.conn, fe.stats, [(flow, offload.DIR_IN, value)], hop, fe))

    def _forward(
        self,
        ifc: Iface,
        f: bytearray,
        out: Frames,
        conn: coreapi.Conn,
        l4: int,
        flow: Flow,
        fe: FastEntry | None = None,
    ) -> str:
        self.counters["in"] += 1
        if fe is not None:
            fwd, raddr, rport = fe.fwd, fe.raddr, fe.rport
        else:
            fwd, raddr, rport = conn.fwd, conn.daddr.packed, conn.dport
        if fwd == Fwd.DROUTE:
            self._to_server(out, raddr, f)
        elif fwd == Fwd.MASQ or fwd == Fwd.FULLNAT:
            self.clients[flow[1]] = (ifc.index, bytes(f[ETH + 6 : ETH + 12]))
            if fwd == Fwd.MASQ:
                rewrite(f, flow[0], l4, None, None, raddr, rport)
            else:
                ent = self._fullnat_entry(conn, flow, raddr, rport)
                if ent is None:
                    self.counters["drop"] += 1
                    return "DROP"
                rewrite(f, flow[0], l4, ent.laddr, ent.lport, raddr, rport)
            self._to_server(out, raddr, f)
        elif fwd == Fwd.TUNNEL and len(raddr) == 4:
            self._tunnel(ifc, f, out, raddr)
        else:
            self.counters["drop"] += 1  # LOCALNODE / BYPASS: the drop rule keeps these from the stack
        return "FORWARD"

    def _to_server(self, out: Frames, raddr: bytes, f: bytearray) -> None:
        rt = self.route(raddr)
        if rt is not None:
            self._send_ip(out, rt, rt.nexthop, f)

    def _fullnat_entry(self, conn: coreapi.Conn, flow: Flow, raddr: bytes, rport: int) -> FullnatEntry | None:
        """The local address and port standing in for the client `flow` comes from (allocated once)."""
        ent = self.fn_by_client.get(flow)
        if ent is not None and ent.conn is conn and ent.raddr == raddr:
            return ent
        if ent is not None:
            self._fullnat_free(ent)
        rt = self.route(raddr)
        if rt is None:
            return None
        lport = self.ports.take()
        if lport is None:
            return None
        proto, caddr, cport, vaddr, vport = flow
        ent = FullnatEntry(conn, caddr, cport, vaddr, vport, raddr, rport, rt.src, lport, proto)
        self.fn_by_client[flow] = ent
        self.fn_by_local[(proto, raddr, rport, rt.src, lport)] = ent
        return ent

    def adopt_fullnat(
        self, conn: coreapi.Conn, flow: Flow, raddr: bytes, rport: int, laddr: bytes, lport: int
    ) -> None:
        """A FULLNAT connection the kernel set up with a local port taken from our pool (ahead.py):
        its entry, so Python serves its packets the kernel leaves and the port returns when the core
        ends the connection."""
        old = self.fn_by_client.get(flow)
        if old is not None:
            self._fullnat_free(old)
        proto, caddr, cport, vaddr, vport = flow
        ent = FullnatEntry(conn, caddr, cport, vaddr, vport, raddr, rport, laddr, lport, proto)
        self.fn_by_client[flow] = ent
        self.fn_by_local[(proto, raddr, rport, laddr, lport)] = ent

    def _fullnat_free(self, ent: FullnatEntry) -> None:
        self.fn_by_client.pop((ent.proto, ent.caddr, ent.cport, ent.vaddr, ent.vport), None)
        self.fn_by_local.pop((ent.proto, ent.raddr, ent.rport, ent.laddr, ent.lport), None)
        self.ports.give(ent.lport)

    def sweep(self) -> None:
        """Give back the local ports of FULLNAT connections the core has expired."""
        for ent in [e for e in self.fn_by_client.values() if not coreapi.conn_alive(e.conn)]:
            self._fullnat_free(ent)
        for key in [k for k, fe in self.fast.items() if not coreapi.conn_alive(fe.conn)]:
            if self.fast.pop(key).offloaded:
                self.offload.remove_flow(key)

    def _tunnel(self, ifc: Iface, f: bytearray, out: Frames, raddr: bytes) -> None:
        rt = self.route(raddr)
        if rt is None:
            self.counters["drop"] += 1
            return
        oifc = self.ifaces.get(rt.ifindex)
        if oifc is None:
            return
        vflags, gso_type, _hl, gso_size, csum_start, csum_offset = VNET.unpack_from(f, 0)
        total = iplen(f)
        end = IP + total
        inner: list[bytearray]
        if gso_type and gso_size:
            # The RS cannot take a super-packet inside a tunnel: cut it as the kernel's GSO would.
            inner = segment_ipv4(f[IP:end], gso_type, gso_size)
            self.counters["gso_cut"] += 1
            if not inner:
                self.counters["drop"] += 1
                return
        else:
            if vflags & F_NEEDS_CSUM:
                complete_checksum(f, csum_start, csum_offset, end)
            inner = [f[IP:end]]
        limit = oifc.mtu - 20
        for pkt in inner:
            df = bool(get16(pkt, 6) & 0x4000)
            if len(pkt) > limit:
                if df:
                    self.counters["icmp_frag"] += 1
                    out.append(
                        (
                            ifc.index,
                            icmp_error(
                                ifc.mac, bytes(f[ETH + 6 : ETH + 12]), bytes(pkt[16:20]), pkt, 3, 4, limit
                            ),
                        )
                    )
                else:
                    self.counters["drop"] += 1  # outer fragmentation is not done here
                continue
            self.ident = (self.ident + 1) & 0xFFFF
            outer = ipv4_header(rt.src, raddr, IPPROTO_IPIP, len(pkt), self.ident, df, 64, pkt[1])
            frame = bytearray(NO_VNET + bytes(14)) + outer + pkt
            self._send_ip(out, rt, rt.nexthop, frame, eth_type=True)

    # -- replies -------------------------------------------------------------------------------
    def _nat_reply(self, f: bytearray, out: Frames, now: float, l4: int, flow: Flow) -> None:
        proto, saddr, sport, daddr, dport = flow
        out_v4 = self._lookup_out_v4
        if out_v4 is not None and len(daddr) == 4:
            sa, da = _II.unpack_from(f, IP + 12)
            conn = out_v4(proto, sa, sport, da, dport)
        else:
            conn = coreapi.find_out(self.director, Proto(proto), _ip(saddr), sport, _ip(daddr), dport)
        if conn is None:
            self.counters["drop"] += 1
            return
        self._note_reply(f, now, l4, flow, conn, daddr, dport, 1)
        self._nat_out(f, out, conn, proto, l4, daddr)

    def _note_reply(
        self,
        f: bytearray,
        now: float,
        l4: int,
        flow: Flow,
        conn: coreapi.Conn,
        caddr: bytes,
        cport: int,
        kind: int,
        ent: FullnatEntry | None = None,
    ) -> None:
        """Tell the core about a reply (real server -> client `caddr:cport`); remember a steady one."""
        proto, saddr, sport = flow[0], flow[1], flow[2]
        flags = f[l4 + 13] if proto == IPPROTO_TCP else 0
        length = iplen(f)
        if proto == IPPROTO_TCP and self._out_tcp is not None:
            self._out_tcp(conn, length, flags, now)  # what process_out does for TCP, minus the Packet
        else:
            if proto == IPPROTO_SCTP:
                chunk, abort = sctp.first_chunk(f, l4, IP + length)
                pkt = Packet(Proto(proto), _ip(saddr), sport, _ip(caddr), cport, 0, length, 0, chunk, abort)
            else:
                pkt = Packet(
                    Proto(proto), _ip(saddr), sport, _ip(caddr), cport, length=length, tcp_flags=flags
                )
            coreapi.note_out(self.director, conn, pkt, now)
        if coreapi.steady(conn, proto) or (proto == IPPROTO_SCTP and sctp.steady(conn)):
            self._remember(flow, conn, kind, ent)
        off = self.offload
        if off is not None and off.by_flow:
            rec = off.by_flow.get(flow)
            if rec is not None and rec.conn is conn:
                off.follow(rec)

    def _nat_out(
        self,
        f: bytearray,
        out: Frames,
        conn: coreapi.Conn,
        proto: int,
        l4: int,
        daddr: bytes,
        fe: FastEntry | None = None,
    ) -> None:
        self.counters["out"] += 1
        if fe is not None:
            rewrite(f, proto, l4, fe.vaddr, fe.vport, None, None)
        else:
            rewrite(f, proto, l4, conn.vaddr.packed, conn.vport, None, None)
        self._to_client(out, daddr, f)

    def _fullnat_reply(self, f: bytearray, out: Frames, now: float, l4: int, flow: Flow) -> None:
        ent = self.fn_by_local.get(flow)
        if ent is None:
            self.counters["drop"] += 1
            return
        self._note_reply(f, now, l4, flow, ent.conn, ent.caddr, ent.cport, 2, ent)
        self._fullnat_out(f, out, ent, flow[0], l4)

    def _fullnat_out(self, f: bytearray, out: Frames, ent: FullnatEntry, proto: int, l4: int) -> None:
        self.counters["out"] += 1
        rewrite(f, proto, l4, ent.vaddr, ent.vport, ent.caddr, ent.cport)
        self._to_client(out, ent.caddr, f)

    def _to_client(self, out: Frames, caddr: bytes, f: bytearray) -> None:
        hop = self.clients.get(caddr)
        if hop is not None:
            ifc = self.ifaces[hop[0]]
            f[ETH : ETH + 6] = hop[1]
            f[ETH + 6 : ETH + 12] = ifc.mac
            out.append((ifc.index, f))
            return
        rt = self.route(caddr)
        if rt is not None:
            self._send_ip(out, rt, rt.nexthop, f)

    # -- link layer ----------------------------------------------------------------------------
    def _send_ip(self, out: Frames, rt: Route, hop: bytes, f: bytearray, eth_type: bool = False) -> None:
        ifc = self.ifaces.get(rt.ifindex)
        if ifc is None:
            self.counters["drop"] += 1
            return
        if eth_type:
            f[ETH : ETH + 14] = eth_header(bytes(6), ifc.mac, ETH_P_IP)
        else:
            f[ETH + 6 : ETH + 12] = ifc.mac
        # DATA_VALID describes what we received; on the way out only NEEDS_CSUM means anything.
        f[0] &= ~F_DATA_VALID & 0xFF
        mac = self.neigh.lookup(hop)
        if mac is not None:
            f[ETH : ETH + 6] = mac
            out.append((ifc.index, f))
            return
        if self.neigh.hold(hop, ifc.index, f, self._now_hint):
            self.counters["arp_tx"] += 1
            ask = arp_request(ifc.mac, rt.src, hop) if len(hop) == 4 else ndp_solicit(ifc.mac, rt.src, hop)
            out.append((ifc.index, ask))

    _now_hint = 0.0

    def way_to(self, raddr: bytes) -> tuple[int, bytes, bytes, bytes, int] | None:
        """(device, next-hop MAC, our MAC there, our source address, MTU) toward raddr, when all
        are known now (the kernel's fast path sets connections up with them: ahead.py)."""
        rt = self.route(raddr)
        if rt is None:
            return None
        ifc = self.ifaces.get(rt.ifindex)
        mac = self.neigh.lookup(rt.nexthop)
        if ifc is None or mac is None:
            return None
        return (rt.ifindex, mac, ifc.mac, rt.src, ifc.mtu)

    def hop_to(self, raddr: bytes) -> tuple[int, bytes] | None:
        """The device and next-hop MAC a frame to raddr would leave with now (None: not known)."""
        rt = self.route(raddr)
        if rt is None:
            return None
        mac = self.neigh.lookup(rt.nexthop)
        return None if mac is None else (rt.ifindex, mac)

    def _arp(self, f: bytearray, out: Frames) -> None:
        a = parse_arp(f)
        if a is None:
            return
        _op, sha, spa, _tpa = a
        for ifindex, frame in self.neigh.learn(spa, sha):
            frame[ETH : ETH + 6] = sha
            out.append((ifindex, frame))

    def stats(self) -> dict[str, float]:
        d: dict[str, float] = {k: float(v) for k, v in self.counters.items()}
        d["fullnat_ports_used"] = float(len(self.fn_by_client))
        return d
