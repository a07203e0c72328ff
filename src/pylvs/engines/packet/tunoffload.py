"""The kernel fast path for TUN (`-i`) connections: steady TCP segments are put into IP-in-IP and
sent by a tc ingress eBPF program, so Python sees only what changes a connection's state.

The per-packet engine decides every connection as before. Once a TUN connection is steady (the
Forwarder has learnt its outer header, see Forwarder._learn_tunnel), its flow goes into the map
`flows` with that header. Then, for a segment of that flow without SYN, FIN or RST, with DF set and
small enough for the tunnel (the same limit the Forwarder uses; for a GSO super-frame, its
segments' payload and headers, since adjust_room takes the outer header's 20 bytes off each
segment's payload: the real server's side, or the NIC, cuts it into segments that fit):
- the tc program on the receiving device grows the frame by 20 bytes (bpf_skb_adjust_room, which
  marks it encapsulated, so a checksum left partial by veth or a NIC stays correct), writes the
  Ethernet and outer IPv4 headers from the element, fixes the outer length and checksum, counts the
  packet and its bytes in the element, and sends it out of the element's device;
- the engine's packet sockets carry an eBPF socket filter that answers "not for us" for exactly the
  same segments (it reads the same map), so Python never handles a frame twice. Packet sockets see
  a frame before tc does (taps run first); a frame caught between an element's add or delete and
  tc may be sent by both (TCP drops the copy) or, on a delete, by neither (the connection had
  expired in the core: IPVS would drop it too).
Everything else (SYNs, FINs, RSTs, packets too big for the tunnel, which get ICMP
fragmentation-needed from Python, UDP) still reaches Python. Every second the engine reads the elements' counters: their packets and
bytes go to the server, service and total stats, and re-arm the connection's timer, as if Python
had seen them. An element goes when its connection leaves the steady state (any packet Python sees
that changes it: FIN, RST), when the core expires it, when the way out to its server changes, and
on every rule change.

Both programs are assembled here (pylvs.netlink.ebpf): no compiler is needed. The filter also does
the classic prefilter's job (engines/packet/bpf.py) from two small maps of addresses.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from pylvs.cbpf import ACCEPT
from pylvs.engines.packet.frames import ETH, IP
from pylvs.netlink import ebpf
from pylvs.netlink.ebpf import BPF_B, BPF_DW, BPF_H, BPF_W, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, Asm

SO_ATTACH_BPF = 50
TC_NAME = "pylvs_tun"  # the tc filter's name
FLOWS_NAME = "plv_tunflows"  # the flow map's name (how a restarted pylvsd knows it)
TC_PRIO = 0xC1F5  # our filter's place on the clsact ingress hook (a crashed run's is replaced)
MAX_FLOWS = 65536
MAX_ADDRS = 1 << 20
# An element: packets and bytes the kernel forwarded (u64 each, kept by the program), the device out,
# the largest inner packet that fits the tunnel, then the Ethernet and outer IPv4 headers to write.
VALUE = struct.Struct("=QQIHH14s20s6x")
V_IFINDEX, V_LIMIT, V_HEADERS = 16, 20, 24
COUNTS = struct.Struct("=QQ")
# Packet fields compared raw (network order) by a little-endian machine.
_ETH_IP, _ETH_ARP, _ETH_IP6 = 0x0008, 0x0608, 0xDD86
_DF, _FRAG = 0x0040, 0xFF3F  # the DF bit; MF and the fragment offset
_TCP_SYN_FIN_RST = 0x07
MAX_INNER = 0xFFFF - 20  # the outer total length must fit 16 bits

Flow = tuple[int, bytes, int, bytes, int]  # (proto, client, port, VIP, port), as the Forwarder keys it


def previous_flows(devices: Iterable[str]) -> ebpf.BpfMap | None:
    """The flow map of a pylvsd that stopped without removing its tc filter (a crash, a kill): the
    filter's program still holds it, and the kernel still forwards its flows. Found through the
    filter on one of our devices (programs and maps are global, the filter is this namespace's)."""
    for dev in devices:
        try:
            p = subprocess.run(
                ["tc", "-j", "filter", "show", "dev", dev, "ingress"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            filters = json.loads(p.stdout or "[]")
        except (OSError, ValueError, subprocess.SubprocessError):
            continue
        for f in filters:
            opts = f.get("options") or {}
            prog = opts.get("prog") or {}
            if f.get("pref") != TC_PRIO or opts.get("bpf_name") != TC_NAME or "id" not in prog:
                continue
            try:
                for map_id in ebpf.program_maps(int(prog["id"])):
                    m = ebpf.BpfMap.by_id(map_id)
                    if m.name == FLOWS_NAME and (m.key_size, m.value_size) == (12, VALUE.size):
                        return m
                    m.close()
            except OSError:
                continue
    return None


def flow_key(flow: Flow) -> bytes:
    """The map key: the frame's own bytes from the source address to the destination port."""
    _proto, caddr, cport, vaddr, vport = flow
    return caddr + vaddr + struct.pack("!HH", cport, vport)


def _ip_checksum(hdr: bytes) -> int:
    s: int = sum(struct.unpack("!10H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s ^ 0xFFFF


def outer_template(eth: bytes, outer: bytes) -> tuple[bytes, bytes]:
    """The Ethernet header as it is, and the outer IPv4 header with TOS and total length 0, ident 0,
    DF set and its checksum for those: the program adds TOS and length to the checksum per packet."""
    hdr = bytearray(outer[:20])
    hdr[1] = 0
    hdr[2:8] = b"\x00\x00\x00\x00\x40\x00"
    hdr[10:12] = b"\x00\x00"
    struct.pack_into("!H", hdr, 10, _ip_checksum(bytes(hdr)))
    return bytes(eth[:14]), bytes(hdr)


def tc_program(flows_fd: int) -> bytes:
    """tc ingress (direct action): encapsulate and send the steady segments of flows in the map."""
    a = Asm()
    a.mov_reg(R6, R1)
    a.ldx(BPF_W, R2, R6, ebpf.SKB_DATA)
    a.ldx(BPF_W, R3, R6, ebpf.SKB_DATA_END)
    a.mov_reg(R4, R2)
    a.alu_imm("add", R4, 54)  # Ethernet, IPv4 without options, TCP
    a.jmp_reg("jgt", R4, R3, "pass")
    a.ldx(BPF_H, R4, R2, 12)
    a.jmp_imm("jne", R4, _ETH_IP, "pass")
    a.ldx(BPF_B, R4, R2, 14)
    a.jmp_imm("jne", R4, 0x45, "pass")
    a.ldx(BPF_B, R4, R2, 23)
    a.jmp_imm("jne", R4, socket.IPPROTO_TCP, "pass")
    a.ldx(BPF_H, R4, R2, 20)
    a.jmp_imm("jset", R4, _FRAG, "pass")
    a.jmp_imm("jset", R4, _DF, "df")
    a.ja("pass")
    a.label("df")
    a.ldx(BPF_B, R4, R2, 47)
    a.jmp_imm("jset", R4, _TCP_SYN_FIN_RST, "pass")
    a.ldx(BPF_B, R9, R2, 15)  # the inner TOS, copied to the outer header
    a.ldx(BPF_H, R8, R2, 16)
    a.be(R8, 16)  # the inner total length
    a.jmp_imm("jgt", R8, MAX_INNER, "pass")
    # what must fit the tunnel: the packet, or for a GSO frame its segments' payload and headers
    a.mov_reg(R5, R8)
    a.ldx(BPF_W, R4, R6, ebpf.SKB_GSO_SIZE)
    a.jmp_imm("jeq", R4, 0, "measured")
    a.ldx(BPF_B, R5, R2, 46)
    a.alu_imm("and", R5, 0xF0)
    a.alu_imm("rsh", R5, 2)
    a.alu_reg("add", R5, R4)
    a.label("measured")
    a.stx(BPF_W, R10, R5, -24)
    for i, off in enumerate((26, 30, 34)):  # key: source, destination, ports
        a.ldx(BPF_W, R4, R2, off)
        a.stx(BPF_W, R10, R4, -16 + 4 * i)
    a.ld_map_fd(R1, flows_fd)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, -16)
    a.call(ebpf.HELPER_MAP_LOOKUP_ELEM)
    a.jmp_imm("jeq", R0, 0, "pass")
    a.mov_reg(R7, R0)
    a.ldx(BPF_H, R4, R7, V_LIMIT)
    a.ldx(BPF_W, R5, R10, -24)
    a.jmp_reg("jgt", R5, R4, "pass")
    a.mov_imm(R4, 1)
    a.atomic_add(BPF_DW, R7, R4, 0)
    a.atomic_add(BPF_DW, R7, R8, 8)
    # 20 bytes after the Ethernet header; the stack keeps a partial checksum correct (encapsulated)
    a.mov_reg(R1, R6)
    a.mov_imm(R2, 20)
    a.mov_imm(R3, ebpf.BPF_ADJ_ROOM_MAC)
    a.mov_imm(R4, ebpf.BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)
    a.call(ebpf.HELPER_SKB_ADJUST_ROOM)
    a.jmp_imm("jne", R0, 0, "shot")
    a.mov_reg(R1, R6)
    a.mov_imm(R2, 0)
    a.mov_reg(R3, R7)
    a.alu_imm("add", R3, V_HEADERS)
    a.mov_imm(R4, 34)
    a.mov_imm(R5, 0)
    a.call(ebpf.HELPER_SKB_STORE_BYTES)
    a.jmp_imm("jne", R0, 0, "shot")
    a.ldx(BPF_W, R2, R6, ebpf.SKB_DATA)
    a.ldx(BPF_W, R3, R6, ebpf.SKB_DATA_END)
    a.mov_reg(R4, R2)
    a.alu_imm("add", R4, 34)
    a.jmp_reg("jgt", R4, R3, "shot")
    a.stx(BPF_B, R2, R9, 15)
    a.mov_reg(R4, R8)
    a.alu_imm("add", R4, 20)
    a.be(R4, 16)
    a.stx(BPF_H, R2, R4, 16)
    a.ldx(BPF_W, R4, R2, 14)  # version/IHL, TOS and length as they are now
    a.mov_reg(R1, R6)
    a.mov_imm(R2, 14 + 10)
    a.mov_imm(R3, 0x45)  # the same word in the template: 45 00 00 00
    a.mov_imm(R5, 4)
    a.call(ebpf.HELPER_L3_CSUM_REPLACE)
    a.jmp_imm("jne", R0, 0, "shot")
    a.ldx(BPF_W, R1, R7, V_IFINDEX)
    a.mov_imm(R2, 0)
    a.call(ebpf.HELPER_REDIRECT)
    a.exit()
    a.label("pass")
    a.mov_imm(R0, ebpf.TC_ACT_OK)
    a.exit()
    a.label("shot")
    a.mov_imm(R0, ebpf.TC_ACT_SHOT)
    a.exit()
    return a.assemble()


def socket_program(flows_fd: int, dsts_fd: int, srcs_fd: int, ipv6: bool) -> bytes:
    """The packet sockets' filter: the classic prefilter's choice (ARP; IPv4 to a virtual or local
    address or from a NAT server; with ipv6 every IPv6 frame), minus the segments tc_program sends."""
    a = Asm()
    a.mov_reg(R6, R1)
    # frame[0:34] at fp-64 (the flow key then lies at fp-38: addresses, then the ports loaded below)
    a.mov_reg(R1, R6)
    a.mov_imm(R2, 0)
    a.mov_reg(R3, R10)
    a.alu_imm("add", R3, -64)
    a.mov_imm(R4, 34)
    a.call(ebpf.HELPER_SKB_LOAD_BYTES)
    a.jmp_imm("jne", R0, 0, "reject")
    a.ldx(BPF_H, R1, R10, -64 + 12)
    a.jmp_imm("jeq", R1, _ETH_ARP, "accept")
    if ipv6:
        a.jmp_imm("jeq", R1, _ETH_IP6, "accept")
    a.jmp_imm("jne", R1, _ETH_IP, "reject")
    a.ld_map_fd(R1, dsts_fd)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, -64 + 30)
    a.call(ebpf.HELPER_MAP_LOOKUP_ELEM)
    a.jmp_imm("jne", R0, 0, "vip")
    a.ld_map_fd(R1, srcs_fd)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, -64 + 26)
    a.call(ebpf.HELPER_MAP_LOOKUP_ELEM)
    a.jmp_imm("jne", R0, 0, "accept")
    a.ja("reject")
    a.label("vip")  # to one of ours: is it a segment the tc program sends?
    a.ldx(BPF_B, R1, R10, -64 + 23)
    a.jmp_imm("jne", R1, socket.IPPROTO_TCP, "accept")
    a.ldx(BPF_B, R1, R10, -64 + 14)
    a.jmp_imm("jne", R1, 0x45, "accept")
    a.ldx(BPF_H, R1, R10, -64 + 20)
    a.jmp_imm("jset", R1, _FRAG, "accept")
    a.jmp_imm("jset", R1, _DF, "df")
    a.ja("accept")
    a.label("df")
    a.ldx(BPF_H, R7, R10, -64 + 16)
    a.be(R7, 16)
    a.mov_reg(R1, R6)
    a.mov_imm(R2, 34)
    a.mov_reg(R3, R10)
    a.alu_imm("add", R3, -64 + 34)
    a.mov_imm(R4, 14)
    a.call(ebpf.HELPER_SKB_LOAD_BYTES)
    a.jmp_imm("jne", R0, 0, "accept")
    a.ldx(BPF_B, R1, R10, -64 + 47)
    a.jmp_imm("jset", R1, _TCP_SYN_FIN_RST, "accept")
    a.jmp_imm("jgt", R7, MAX_INNER, "accept")
    a.ldx(BPF_W, R1, R6, ebpf.SKB_GSO_SIZE)
    a.jmp_imm("jeq", R1, 0, "measured")
    a.ldx(BPF_B, R7, R10, -64 + 46)
    a.alu_imm("and", R7, 0xF0)
    a.alu_imm("rsh", R7, 2)
    a.alu_reg("add", R7, R1)
    a.label("measured")
    a.ld_map_fd(R1, flows_fd)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, -64 + 26)
    a.call(ebpf.HELPER_MAP_LOOKUP_ELEM)
    a.jmp_imm("jeq", R0, 0, "accept")
    a.ldx(BPF_H, R1, R0, V_LIMIT)
    a.jmp_reg("jgt", R7, R1, "accept")
    a.label("reject")
    a.mov_imm(R0, 0)
    a.exit()
    a.label("accept")
    a.mov_imm(R0, ACCEPT)
    a.exit()
    return a.assemble()


T = TypeVar("T")


def _off_loop(fn: Callable[[], T]) -> T:
    """Run fn in a thread of its own: pyroute2's synchronous IPRoute runs an event loop of its own,
    which it cannot do inside the daemon's running one. Any failure comes back as an OSError."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except Exception as e:  # handed to the caller as an OSError
            box.append((False, e))

    t = threading.Thread(target=run, name="pylvs-tc")
    t.start()
    t.join()
    ok, value = box[0]
    if ok:
        return cast(T, value)
    if isinstance(value, OSError):
        raise value
    raise OSError(f"tc: {value}")


class TunOffload:
    """The maps and programs of the TUN fast path, the devices and sockets they are attached to, and
    the flows the kernel sends (with the counts already given to the core)."""

    def __init__(self, max_flows: int = MAX_FLOWS, flows: ebpf.BpfMap | None = None) -> None:
        """flows: the map of a previous pylvsd (previous_flows), whose elements the kernel still
        forwards; its connections are adopted (adoptable, take) and it goes on serving."""
        if sys.byteorder != "little":
            raise OSError("the TUN fast path's programs compare packet bytes as a little-endian machine")
        self.flows = flows or ebpf.BpfMap(ebpf.BPF_MAP_TYPE_HASH, 12, VALUE.size, max_flows, FLOWS_NAME)
        # addresses: as many as a restore may bring, allocated as they come
        self.dsts = ebpf.BpfMap(ebpf.BPF_MAP_TYPE_HASH, 4, 1, MAX_ADDRS, "plv_dsts", ebpf.BPF_F_NO_PREALLOC)
        self.srcs = ebpf.BpfMap(ebpf.BPF_MAP_TYPE_HASH, 4, 1, MAX_ADDRS, "plv_srcs", ebpf.BPF_F_NO_PREALLOC)
        self.tc_fd = -1
        self.sock_fd = -1
        self.ipv6 = False
        self.hooks: dict[int, ebpf.TcIngress] = {}
        self.socks: dict[int, socket.socket] = {}
        self.entries: dict[bytes, Any] = {}  # key -> the Forwarder's FastEntry
        self.values: dict[bytes, bytes] = {}  # key -> the element's device, limit and headers
        self.counted: dict[bytes, tuple[int, int]] = {}  # key -> packets, bytes given to the core
        self.addr_sets: tuple[set[bytes], set[bytes]] = (set(), set())
        self.counters = {
            "kernel_pkts": 0,
            "kernel_bytes": 0,
            "flows_added": 0,
            "flows_removed": 0,
            "flows_adopted": 0,
        }
        try:
            self.tc_fd = ebpf.load_program(tc_program(self.flows.fd), ebpf.BPF_PROG_TYPE_SCHED_CLS, "plv_tun")
            self.sock_fd = self._load_filter(False)
        except OSError:
            self.close()
            raise

    # -- a restart: the flows an earlier pylvsd left to the kernel -------------------------------
    def adoptable(self) -> list[tuple[bytes, Flow, int, bytes, bytes, int]]:
        """The elements of the map as (key, flow, device, Ethernet header, outer header, limit)."""
        out = []
        for key, raw in self.flows.items():
            if len(key) != 12 or len(raw) != VALUE.size:
                continue
            _pk, _by, ifindex, limit, _pad, eth, outer = VALUE.unpack(raw)
            caddr, vaddr, cport, vport = key[0:4], key[4:8], *struct.unpack_from("!HH", key, 8)
            out.append((key, (socket.IPPROTO_TCP, caddr, cport, vaddr, vport), ifindex, eth, outer, limit))
        return out

    def take(self, key: bytes, fe: Any) -> None:
        """An element now stands for fe (adopted); the kernel's counts so far are the old run's."""
        raw = self.flows.lookup(key)
        if raw is None:
            return
        self.entries[key] = fe
        self.values[key] = raw[16:]
        pk, by = COUNTS.unpack_from(raw)
        self.counted[key] = (pk, by)
        self.counters["flows_adopted"] += 1

    def drop(self, key: bytes) -> None:
        """An element nobody can adopt (its service or server is gone)."""
        self.flows.delete(key)

    def _load_filter(self, ipv6: bool) -> int:
        prog = socket_program(self.flows.fd, self.dsts.fd, self.srcs.fd, ipv6)
        return ebpf.load_program(prog, ebpf.BPF_PROG_TYPE_SOCKET_FILTER, "plv_prefilter")

    # -- where it runs ---------------------------------------------------------------------------
    def attach_device(self, ifindex: int) -> None:
        if ifindex not in self.hooks:
            self.hooks[ifindex] = _off_loop(
                lambda: ebpf.TcIngress(ifindex, self.tc_fd, TC_NAME, prio=TC_PRIO, replace=True)
            )

    def attach_socket(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, self.sock_fd)
        self.socks[sock.fileno()] = sock

    def set_prefilter(self, dsts: Iterable[bytes], srcs: Iterable[bytes], ipv6: bool) -> None:
        """The addresses the sockets take frames for (as engines/packet/bpf.program has them)."""
        for m, old, new in (
            (self.dsts, self.addr_sets[0], set(dsts)),
            (self.srcs, self.addr_sets[1], set(srcs)),
        ):
            for a in old - new:
                m.delete(a)
            for a in new - old:
                m.update(a, b"\x01")
            old.clear()
            old.update(new)
        if ipv6 != self.ipv6:
            fd = self._load_filter(ipv6)
            for s in self.socks.values():
                s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, fd)
            os.close(self.sock_fd)
            self.sock_fd, self.ipv6 = fd, ipv6

    # -- flows -----------------------------------------------------------------------------------
    def add(self, flow: Flow, fe: Any) -> bool:
        """Give a steady TUN connection to the kernel (fe: a FastEntry with its outer header learnt)."""
        if flow[0] != socket.IPPROTO_TCP or fe.tun is None or fe.hop is None:
            return False
        tmpl, _base, limit = fe.tun
        eth, outer = outer_template(tmpl[ETH : ETH + 14], tmpl[IP : IP + 20])
        key = flow_key(flow)
        fixed = VALUE.pack(0, 0, fe.hop[0], min(limit, 0xFFFF), 0, eth, outer)[16:]
        if self.values.get(key) == fixed and self.entries.get(key) is fe:
            return True
        pk, by = self._current(key) if key in self.values else (0, 0)
        try:
            self.flows.update(key, COUNTS.pack(pk, by) + fixed)
        except OSError:
            return False  # the map is full: the connection stays with Python
        if key not in self.values:
            self.counters["flows_added"] += 1
            self.counted[key] = (0, 0)
        self.entries[key] = fe
        self.values[key] = fixed
        return True

    def _current(self, key: bytes) -> tuple[int, int]:
        raw = self.flows.lookup(key)
        if raw is None:
            return self.counted.get(key, (0, 0))
        pk, by = COUNTS.unpack_from(raw)
        return pk, by

    def remove(self, flow: Flow) -> None:
        self._remove(flow_key(flow), account=True)

    def _remove(self, key: bytes, account: bool) -> None:
        if key not in self.values:
            return
        fe = self.entries.get(key)
        raw = self.flows.lookup(key) if account else None  # the last counts, when still owed
        self.flows.delete(key)
        if fe is not None and raw is not None:
            pk, by = COUNTS.unpack_from(raw)
            self._account(key, fe, pk, by, None)
        self.entries.pop(key, None)
        self.values.pop(key, None)
        self.counted.pop(key, None)
        self.counters["flows_removed"] += 1

    def clear(self) -> None:
        for key in list(self.values):
            self._remove(key, account=True)

    def _account(self, key: bytes, fe: Any, pk: int, by: int, now: float | None, arm: Any = None) -> None:
        """Give the core what the kernel sent since the last look: the counters, and the timer."""
        opk, oby = self.counted.get(key, (0, 0))
        dp, db = pk - opk, by - oby
        if dp <= 0:
            return
        self.counted[key] = (pk, by)
        for st in fe.stats:
            st.inpkts += dp
            st.inbytes += db
        self.counters["kernel_pkts"] += dp
        self.counters["kernel_bytes"] += db
        if arm is not None and now is not None:
            arm(fe.conn, now)

    def sync(
        self,
        now: float,
        arm: Callable[[Any, float], None] | None,
        alive: Callable[[Any], bool],
        hop_of: Callable[[bytes], tuple[int, bytes] | None],
    ) -> None:
        """Once a second: the kernel's counts to the core; elements of dead connections, or whose way
        out changed, removed (the Forwarder learns the new way from the next packet it sees)."""
        if not self.values:
            return
        seen = dict(self.flows.items())
        hops: dict[bytes, tuple[int, bytes] | None] = {}
        for key in list(self.values):
            fe = self.entries.get(key)
            raw = seen.get(key)
            if fe is None or raw is None:
                self._remove(key, account=False)
                continue
            pk, by = COUNTS.unpack_from(raw)
            self._account(key, fe, pk, by, now, arm)
            if not alive(fe.conn):
                self._remove(key, account=False)
                fe.offloaded = False
                continue
            raddr = fe.raddr
            if raddr not in hops:
                hops[raddr] = hop_of(raddr)
            hop = hops[raddr]
            if hop is None or fe.hop is None or hop != (fe.hop[0], fe.hop[1][:6]):
                self._remove(key, account=False)
                fe.offloaded = False
                fe.hop = fe.tun = None

    def close(self) -> None:
        for hook in self.hooks.values():
            try:
                _off_loop(hook.close)
            except OSError:
                pass
        self.hooks.clear()
        for s in self.socks.values():
            try:
                s.setsockopt(socket.SOL_SOCKET, 27, 0)  # SO_DETACH_FILTER
            except OSError:
                pass
        self.socks.clear()
        for fd in (self.tc_fd, self.sock_fd):
            if fd >= 0:
                os.close(fd)
        self.tc_fd = self.sock_fd = -1
        for m in (self.flows, self.dsts, self.srcs):
            m.close()
        self.entries.clear()
        self.values.clear()

    def stats(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.counters.items()}
        out["kernel_flows"] = float(len(self.values))
        return out
