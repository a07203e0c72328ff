"""The packet engine's kernel fast path: once the core has decided a TCP connection, a tc ingress
eBPF program forwards its packets, runs the core's own state table on them, and tells Python only
about the packets that change the connection's state.

The per-packet engine decides every connection as before (Python, the core, the schedulers). Then:
- NAT (`-m`), FULLNAT, DR (`-g`): when the Forwarder sends a connection's SYN, its flows go into
  the map `flows` before the SYN leaves: client->server with the rewrite the SYN got (addresses,
  ports, MACs, device), and for NAT/FULLNAT server->client with the reply's rewrite. The SYN-ACK
  coming back is already the kernel's.
- TUN (`-i`): the same with the Ethernet and outer IPv4 headers to write (bpf_skb_adjust_room),
  for the segments that carry DF and fit the tunnel (the rest, and what needs ICMP
  fragmentation-needed, stays with Python); also a connection Python has seen steady for a while.

For each packet of a flow in the map (IPv4, no IP options, not a fragment), except a client's SYN
(a new connection: the core must decide whether the entry is reused), the tc program
- looks the connection's state up in the array `states` (by the element's slot) and steps it with
  the core's own table (proto/tcp.py STEP, copied into the array `steps`: one byte per
  direction, TCP flags and state, as IPVS's set_tcp_state reads it). When the state changes
  (compare-and-swap, so one CPU wins), it writes an event {slot, TCP flags, direction, new state}
  to the ring buffer `events`;
- counts the packet and its bytes beside the state (per direction), rewrites it (checksums with the l3/l4 replace
  helpers, which keep a partial checksum right) or encapsulates it, and redirects it out.

Python reads the ring on every wake-up and at least every EVENT_PERIOD (no wake-up per event): each
event is the packet that moved the state, given to the core (process_in_tcp / process_out_tcp) so
the core takes the same step: ActiveConn/InActConn, the state's timeout and the scheduler's counts
follow within that period. Packets Python still sees for such a connection (a SYN again, a segment
too big for the tunnel) go through the core as usual and the kernel's copy of the state follows.
Once a second the counters (read in place: `states` is mmap'd) go to the server, service and total
stats and re-arm the entry's timer: every open connection's, and the closing ones' when due (they
may linger for minutes: looked at further apart while nothing comes, see CLOSING_GAP). Elements of
connections the core closed (TIME_WAIT, CLOSE) or expired are removed then (later segments go the
per-packet way), as are those whose way out changed; every rule change removes them all.

The engine's packet sockets carry an eBPF socket filter: the classic prefilter's choice of frames,
minus exactly the ones the tc program takes (the same tests on the same map), so Python never
handles a frame twice. Both programs are assembled here (pylvs.netlink.ebpf): no compiler.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from pylvs.cbpf import ACCEPT
from pylvs.core.proto import tcp as coretcp
from pylvs.core.types import Fwd
from pylvs.engines.packet import coreapi
from pylvs.netlink import ebpf
from pylvs.netlink.ebpf import BPF_B, BPF_H, BPF_W, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, Asm

SO_ATTACH_BPF = 50
SO_DETACH_FILTER = 27
TC_NAME = "pylvs_flows"  # the tc filter's name
FLOWS_NAME = "plv_flows"  # map names: how a restarted pylvsd finds a killed one's maps
STATES_NAME = "plv_states"
TC_PRIO = 0xC1F5  # our filter's place on the clsact ingress hook (a crashed run's is replaced)
# Elements (a NAT connection takes two) and connections: IPVS keeps a DR/TUN connection for the
# FIN_WAIT timeout (2 minutes) after its client's FIN, and so do these (while the core keeps its
# entry): 262144 is 2,000 new DR connections per second from distinct clients, sustained. The
# elements are allocated as they come (no 30 MB up front); the states array is 10 MB, mmap'd.
MAX_FLOWS = 1 << 18
MAX_SLOTS = 1 << 18
MAX_ADDRS = 1 << 20
RING_BYTES = 1 << 20  # the event ring: 65536 events of 16 bytes (header included)
EVENT_PERIOD = 0.02  # seconds between reads of the ring when no frame wakes the engine

# An element: the device out, the largest packet that fits (TUN), its kind, its direction, the
# Ethernet header, then the outer IPv4 header (TUN) or the new addresses and ports (rewrite), the
# offset of its direction's part of the step table, and the connection's slot in `states`.
VALUE = struct.Struct("=IHBB14s20sHI")
V_IFINDEX, V_LIMIT, V_KIND, V_DIR, V_ETH, V_HEAD, V_STEP, V_SLOT = 0, 4, 6, 7, 8, 22, 42, 44
KIND_TUNNEL, KIND_REWRITE = 0, 1
DIR_IN, DIR_OUT = 0, 1
# A connection's slot in `states`: its TCP state (u32, stepped by the program), then the packets and
# bytes the kernel forwarded each way (u64 each, requests then replies, counted by the program).
# Python reads the counters in place through mmap: no syscall, and no walk of the flows map.
STATE = struct.Struct("=I4xQQQQ")
S_COUNTS = 8  # the requests' counters; the replies' follow at S_COUNTS + COUNTS.size
COUNTS = struct.Struct("=QQ")
_BOTH_WAYS = 2 * COUNTS.size
# Decisions taken ahead (ahead.py): per service a queue of (slot u32, server u16, FULLNAT local port
# u16 in network order) the core's scheduler picked in advance; the tc program takes the next one on a client's SYN (heads: taken, by the
# program; tails: written, by Python), and a server's way out from `dests`.
MAX_SVCS = 64  # services decided ahead (the others: Python decides, the kernel forwards)
QUEUE = 256  # a power of two: decisions queued per service (a slot reserved each)
QUEUE_SHIFT = QUEUE.bit_length() - 1
MAX_DESTS = 4096
# A server: device out, tunnel limit, kind (KIND_*), mode (MODE_*), Ethernet header, outer IPv4
# header (TUN), its address and port (network order, 0 = the virtual port), the step-table offset.
DEST = struct.Struct("=IHBB14s20s4sHH14x")
D_IFINDEX, D_LIMIT, D_KIND, D_MODE, D_ETH, D_OUTER, D_RADDR, D_RPORT, D_STEP = 0, 4, 6, 7, 8, 22, 42, 46, 48
MODE_NAT, MODE_DR, MODE_TUN, MODE_FULLNAT = 0, 1, 2, 3  # FULLNAT: our address in the outer field
NEW_EVENT = struct.Struct("=IBBBB12sI")  # slot, TCP flags, direction, new state, 1, flow key, server
EV_STEP, EV_NEW = 0, 1
REUSE_CORE = 1 << 31  # in the reuse masks: the core decides every SYN of a known flow (Python)
_NEW_FLAGS = -160  # the stack word _new_conn's request element is put with (BPF_NOEXIST or BPF_ANY)
_II = struct.Struct("!II")
_PORTS = struct.Struct("!HH")
_SLOT = struct.Struct("=I")
EVENT = struct.Struct("=IBBBx")  # slot, TCP flags, direction, new state
STEP_ROW = 384  # (EVENT_BITS + 1) << 4 entries per direction (proto/tcp.py _flatten)
STEP_DIRS = 3  # INPUT, OUTPUT, INPUT_ONLY
STEP_BYTES = STEP_ROW * STEP_DIRS
# Packet fields compared raw (network order) by a little-endian machine.
_ETH_IP, _ETH_ARP, _ETH_IP6 = 0x0008, 0x0608, 0xDD86
_DF, _FRAG = 0x0040, 0xFF3F  # the DF bit; MF and the fragment offset
_SYN, _TCP_EVENT_BITS = 0x02, coretcp.EVENT_BITS
MAX_INNER = 0xFFFF - 20  # the outer total length must fit 16 bits
_CLOSED = (coretcp.TIME_WAIT, coretcp.CLOSE)  # elements of these go at the next sync
_OPEN = frozenset((coretcp.ESTABLISHED, coretcp.SYN_RECV, coretcp.SYN_SENT, coretcp.SYNACK, coretcp.NONE))
# A closing connection (it may linger for minutes with little traffic) is looked at by the first
# sync after it began closing, then CLOSING_FIRST seconds later, then further apart while nothing
# comes (doubling up to CLOSING_GAP; CLOSING_FIRST again after a look that found a packet), and
# always EXPIRY_MARGIN seconds before the core's timer for it runs out (a late packet the kernel
# counted re-arms it first). A state change brings it back to every sync.
CLOSING_FIRST = 2
CLOSING_GAP = 32
EXPIRY_MARGIN = 2
# A connection without output (DR, TUN) stays in FIN_WAIT for the FIN_WAIT timeout (the director never
# sees the server's half of the close, as IPVS's does not): its elements go FIN_LINGER seconds after
# (a client reusing the port soon after still finds them; the table stays bounded). Not with decisions
# taken ahead (see ConnOffload._done).
FIN_LINGER = 2.0

Flow = tuple[
    int, bytes, int, bytes, int
]  # (proto, source, port, destination, port), as the Forwarder keys it


def flow_key(flow: Flow) -> bytes:
    """The map key: the frame's own bytes from the source address to the destination port."""
    _proto, saddr, sport, daddr, dport = flow
    return saddr + daddr + struct.pack("!HH", sport, dport)


def flow_of(key: bytes) -> Flow:
    """flow_key's inverse (the map holds TCP flows only)."""
    sport, dport = struct.unpack_from("!HH", key, 8)
    return (socket.IPPROTO_TCP, key[0:4], sport, key[4:8], dport)


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


def tunnel_value(oidx: int, eth: bytes, outer: bytes, limit: int, step: int) -> bytes:
    """The fixed part of a TUN element (after the counters; the slot is set by ConnOffload)."""
    e, o = outer_template(eth, outer)
    return VALUE.pack(oidx, min(limit, 0xFFFF), KIND_TUNNEL, DIR_IN, e, o, step * STEP_ROW, 0)[:V_SLOT]


def rewrite_value(
    oidx: int,
    macs: bytes,
    saddr: bytes,
    daddr: bytes,
    sport: int,
    dport: int,
    direction: int,
    step: int,
    server: bytes = bytes(4),
) -> bytes:
    """The fixed part of a rewriting element: the frame leaves `oidx` with `macs` (destination and
    source) and these addresses and ports. server: DR's real server (its addresses are not
    rewritten), kept for a restarted pylvsd to adopt the connection."""
    head = saddr + daddr + struct.pack("!HH", sport, dport) + (server + bytes(4))[:4] + bytes(4)
    return VALUE.pack(
        oidx, 0xFFFF, KIND_REWRITE, direction, macs[:12] + b"\x08\x00", head, step * STEP_ROW, 0
    )[:V_SLOT]


def reuse_masks(conn_reuse_mode: int, expire_nodest_conn: int) -> tuple[int, int]:
    """For entries with output (NAT, FULLNAT) and without (DR, TUN): a bit per TCP state from which
    a client's SYN is scheduled afresh, as the core decides it (packet.reuse_entry, proto reusable);
    REUSE_CORE when the rule needs what only the core knows (expire_nodest_conn: the server's weight)."""
    tcp = coretcp.TCP()
    out = []
    for no_output in (False, True):
        if expire_nodest_conn:
            out.append(REUSE_CORE)
            continue
        m = 0
        for state in range(len(coretcp.NAMES)):
            if conn_reuse_mode and tcp.reusable(state, no_output, conn_reuse_mode):
                m |= 1 << state
        out.append(m)
    return out[0], out[1]


def step_table(secure: bool) -> bytes:
    """The core's TCP state table in the layout the program indexes: direction, then
    (flags & EVENT_BITS) << 4 | state."""
    steps = coretcp.SECURE_STEP if secure else coretcp.NORMAL_STEP
    out = b"".join(bytes(row) for row in steps)
    assert len(out) == STEP_BYTES
    return out


def _lookup(a: Asm, map_fd: int, key_off: int, miss: str | None = None, hit: str | None = None) -> None:
    """R0 = the element of the map whose key is on the stack at key_off; jump to `miss` when there
    is none, or to `hit` when there is one."""
    a.ld_map_fd(R1, map_fd)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, key_off)
    a.call(ebpf.HELPER_MAP_LOOKUP_ELEM)
    if miss is not None:
        a.jmp_imm("jeq", R0, 0, miss)
    if hit is not None:
        a.jmp_imm("jne", R0, 0, hit)


def _frame_holds(a: Asm, n: int, fail: str) -> None:
    """R2 = the frame's start (R6 = skb) and R3 its end, with n bytes proven there (else `fail`):
    packet pointers are reloaded after every helper that may change the packet."""
    a.ldx(BPF_W, R2, R6, ebpf.SKB_DATA)
    a.ldx(BPF_W, R3, R6, ebpf.SKB_DATA_END)
    a.mov_reg(R4, R2)
    a.alu_imm("add", R4, n)
    a.jmp_reg("jgt", R4, R3, fail)


def _store(a: Asm, pkt_off: int, src: int, src_off: int, n: int) -> None:
    """bpf_skb_store_bytes(skb = R6, pkt_off, src + src_off, n); a failure drops the frame."""
    a.mov_reg(R1, R6)
    a.mov_imm(R2, pkt_off)
    a.mov_reg(R3, src)
    a.alu_imm("add", R3, src_off)
    a.mov_imm(R4, n)
    a.mov_imm(R5, 0)
    a.call(ebpf.HELPER_SKB_STORE_BYTES)
    a.jmp_imm("jne", R0, 0, "shot")


def _send_out(a: Asm) -> None:
    """Redirect the frame out of the element's (R7) device."""
    a.ldx(BPF_W, R1, R7, V_IFINDEX)
    a.mov_imm(R2, 0)
    a.call(ebpf.HELPER_REDIRECT)
    a.exit()


def _load_flow(a: Asm, flows_fd: int, miss: str = "pass", resyn: str = "pass") -> None:
    """R6 = skb. Checks the frame is IPv4 without options, TCP, not a fragment, puts its key at
    fp-16 and leaves the element in R7 and the TCP flags in R8; otherwise to `pass` (a flow not in
    the map: to `miss`)."""
    _frame_holds(a, 54, "pass")  # Ethernet, IPv4 without options, TCP
    a.ldx(BPF_H, R4, R2, 12)
    a.jmp_imm("jne", R4, _ETH_IP, "pass")
    a.ldx(BPF_B, R4, R2, 14)
    a.jmp_imm("jne", R4, 0x45, "pass")
    a.ldx(BPF_B, R4, R2, 23)
    a.jmp_imm("jne", R4, socket.IPPROTO_TCP, "pass")
    a.ldx(BPF_H, R4, R2, 20)
    a.jmp_imm("jset", R4, _FRAG, "pass")
    a.ldx(BPF_B, R8, R2, 47)
    for i, off in enumerate((26, 30, 34)):  # key: source, destination, ports
        a.ldx(BPF_W, R4, R2, off)
        a.stx(BPF_W, R10, R4, -16 + 4 * i)
    _lookup(a, flows_fd, -16, miss=miss)
    a.mov_reg(R7, R0)
    # a client's SYN is a new connection (or its retry): the core decides (to `resyn`, when the
    # core's reuse rule is applied here)
    a.ldx(BPF_B, R4, R7, V_DIR)
    a.jmp_imm("jne", R4, DIR_IN, "not_new")
    a.jmp_imm("jset", R8, _SYN, resyn)
    a.label("not_new")


def _reuse_rule(a: Asm, states_fd: int, reuse_fd: int, fail: str, reuse: str, keep: str) -> None:
    """R7 = a request element, R8 = a client's TCP flags with SYN: IPVS's rule for a SYN that finds
    an entry (conn_reuse_mode, from the core: the reuse masks): to `reuse` (schedule afresh) when
    the entry's state says so, to `keep` (a packet of that connection) when not, to `fail` (Python)
    for anything else (other flags, REUSE_CORE)."""
    a.mov_reg(R4, R8)
    a.alu_imm("and", R4, _TCP_EVENT_BITS)
    a.jmp_imm("jne", R4, _SYN, fail)
    a.ldx(BPF_W, R4, R7, V_SLOT)  # (scratch below what both programs use: fp-168, fp-172)
    a.stx(BPF_W, R10, R4, -168)
    _lookup(a, states_fd, -168, miss=fail)
    a.ldx(BPF_W, R9, R0, 0)
    a.alu_imm("and", R9, 0xF)  # the entry's state
    a.mov_imm(R4, 0)
    a.ldx(BPF_H, R5, R7, V_STEP)
    a.jmp_imm("jne", R5, 2 * STEP_ROW, "ru_mask")
    a.mov_imm(R4, 1)  # an entry without output (DR, TUN)
    a.label("ru_mask")
    a.stx(BPF_W, R10, R4, -172)
    _lookup(a, reuse_fd, -172, miss=fail)
    a.ldx(BPF_W, R4, R0, 0)
    a.jmp32_imm("jset", R4, REUSE_CORE, fail)
    a.alu_reg("rsh", R4, R9)
    a.jmp_imm("jset", R4, 1, reuse)
    a.ja(keep)


def _fits_tunnel(a: Asm, fail: str) -> None:
    """A TUN element (R7) takes the frame when DF is set and it fits the element's limit: for a GSO
    super-frame, its segments' payload and headers (adjust_room lowers gso_size by 20)."""
    _frame_holds(a, 54, fail)
    a.ldx(BPF_H, R4, R2, 20)
    a.jmp_imm("jset", R4, _DF, "df")
    a.ja(fail)
    a.label("df")
    a.ldx(BPF_H, R5, R2, 16)
    a.be(R5, 16)  # the inner total length
    a.jmp_imm("jgt", R5, MAX_INNER, fail)
    a.ldx(BPF_W, R4, R6, ebpf.SKB_GSO_SIZE)
    a.jmp_imm("jeq", R4, 0, "measured")
    a.ldx(BPF_B, R5, R2, 46)
    a.alu_imm("and", R5, 0xF0)
    a.alu_imm("rsh", R5, 2)
    a.alu_reg("add", R5, R4)
    a.label("measured")
    a.ldx(BPF_H, R4, R7, V_LIMIT)
    a.jmp_reg("jgt", R5, R4, fail)


@dataclass(frozen=True, slots=True)
class AheadMaps:
    """The fds of the maps of decisions taken ahead (see QUEUE)."""

    services: int
    heads: int
    tails: int
    queue: int
    dests: int
    reuse: int  # u32 x 2: the states a client's SYN reschedules from (0: NAT, 1: no output), REUSE_CORE


def tc_program(
    flows_fd: int, states_fd: int, steps_fd: int, events_fd: int, ahead: AheadMaps | None = None
) -> bytes:
    """tc ingress (direct action): step, count and send the packets of flows in the map; with
    `ahead`, a client's SYN to a service with decisions queued becomes a connection here."""
    a = Asm()
    a.mov_reg(R6, R1)
    if ahead is None:
        _load_flow(a, flows_fd)
    else:
        _load_flow(a, flows_fd, "new_conn", "resyn")
    a.ldx(BPF_B, R4, R7, V_KIND)
    a.jmp_imm("jne", R4, KIND_TUNNEL, "state")
    _fits_tunnel(a, "pass")
    # -- the connection's state, stepped by the core's table --------------------------------------
    a.label("state")
    a.ldx(BPF_W, R4, R7, V_SLOT)
    a.stx(BPF_W, R10, R4, -20)
    _lookup(a, states_fd, -20, miss="pass")
    a.mov_reg(R9, R0)
    a.st_imm(BPF_W, R10, -24, 0)
    _lookup(a, steps_fd, -24, miss="pass")
    a.ldx(BPF_W, R2, R9, 0)
    a.alu_imm("and", R2, 0xF)  # the state now
    a.mov_reg(R3, R8)
    a.alu_imm("and", R3, _TCP_EVENT_BITS)
    a.alu_imm("lsh", R3, 4)
    a.alu_reg("or", R3, R2)
    a.ldx(BPF_H, R4, R7, V_STEP)
    a.alu_reg("add", R3, R4)
    a.jmp_imm("jgt", R3, STEP_BYTES - 1, "pass")
    a.alu_reg("add", R0, R3)
    a.ldx(BPF_B, R5, R0, 0)  # the state this packet moves it to
    a.jmp_reg("jeq", R5, R2, "count")
    a.mov_reg(R0, R2)
    a.atomic_cmpxchg(BPF_W, R9, R5, 0)  # one CPU moves it (and tells)
    a.jmp_reg("jne", R0, R2, "count")
    a.ldx(BPF_W, R4, R10, -20)
    a.stx(BPF_W, R10, R4, -32)
    a.stx(BPF_B, R10, R8, -28)
    a.ldx(BPF_B, R4, R7, V_DIR)
    a.stx(BPF_B, R10, R4, -27)
    a.stx(BPF_B, R10, R5, -26)
    a.st_imm(BPF_B, R10, -25, EV_STEP)
    a.ld_map_fd(R1, events_fd)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, -32)
    a.mov_imm(R3, EVENT.size)
    a.mov_imm(R4, ebpf.BPF_RB_NO_WAKEUP)
    a.call(ebpf.HELPER_RINGBUF_OUTPUT)
    # -- counters (R9: the connection's slot in `states`) -----------------------------------------
    a.label("count")
    _frame_holds(a, 54, "pass")
    a.ldx(BPF_H, R8, R2, 16)
    a.be(R8, 16)  # the IP total length (kept in R8 for the tunnel)
    a.mov_imm(R4, 1)
    a.ldx(BPF_B, R5, R7, V_DIR)
    a.jmp_imm("jne", R5, DIR_IN, "count_out")
    a.atomic_add(ebpf.BPF_DW, R9, R4, S_COUNTS)
    a.atomic_add(ebpf.BPF_DW, R9, R8, S_COUNTS + 8)
    a.ja("counted")
    a.label("count_out")
    a.atomic_add(ebpf.BPF_DW, R9, R4, S_COUNTS + COUNTS.size)
    a.atomic_add(ebpf.BPF_DW, R9, R8, S_COUNTS + COUNTS.size + 8)
    a.label("counted")
    a.ldx(BPF_B, R9, R2, 15)  # the TOS (kept in R9 for the tunnel)
    a.ldx(BPF_B, R4, R7, V_KIND)
    a.jmp_imm("jeq", R4, KIND_TUNNEL, "tunnel")
    _rewrite(a)
    a.label("tunnel")
    _encapsulate(a)
    if ahead is not None:
        a.label("resyn")  # a client's SYN for a flow the kernel has
        _reuse_rule(a, states_fd, ahead.reuse, "pass", "re_new", "not_new")
        a.label("re_new")  # the old connection is done: a new one in its place
        a.st_imm(BPF_W, R10, _NEW_FLAGS, ebpf.BPF_ANY)
        a.ja("nc_start")
        a.label("new_conn")
        a.st_imm(BPF_W, R10, _NEW_FLAGS, ebpf.BPF_NOEXIST)
        a.label("nc_start")
        _new_conn(a, flows_fd, states_fd, steps_fd, events_fd, ahead)
    a.label("pass")
    a.mov_imm(R0, ebpf.TC_ACT_OK)
    a.exit()
    a.label("shot")
    a.mov_imm(R0, ebpf.TC_ACT_SHOT)
    a.exit()
    return a.assemble()


def _take_decision(a: Asm, ahead: AheadMaps, fail: str, take: bool) -> None:
    """R8 = TCP flags, the flow key at fp-16. A client's SYN (no other flag, DF set) to a service
    with a decision queued: the decision's slot at fp-36, its server's index at fp-40, its FULLNAT
    local port at fp-42, the server's element in R9. take=False only looks (the socket filter, which
    runs before tc)."""
    a.mov_reg(R4, R8)
    a.alu_imm("and", R4, _TCP_EVENT_BITS)
    a.jmp_imm("jne", R4, _SYN, fail)
    a.ldx(BPF_H, R4, R10, -8)
    a.jmp_imm("jeq", R4, 0x1400, fail)  # from port 20 (FTP data): IPVS never schedules it
    a.ldx(BPF_W, R4, R10, -12)  # the service: destination address and port
    a.stx(BPF_W, R10, R4, -24)
    a.ldx(BPF_H, R4, R10, -6)
    a.stx(BPF_H, R10, R4, -20)
    a.st_imm(BPF_H, R10, -18, 0)
    _lookup(a, ahead.services, -24, miss=fail)
    a.ldx(BPF_W, R4, R0, 0)
    a.stx(BPF_W, R10, R4, -28)
    _lookup(a, ahead.tails, -28, miss=fail)
    a.ldx(BPF_W, R9, R0, 0)  # written so far
    _lookup(a, ahead.heads, -28, miss=fail)
    if take:
        a.mov_imm(R1, 1)
        a.atomic_fetch_add(BPF_W, R0, R1, 0)  # R1: the one this SYN takes
    else:
        a.ldx(BPF_W, R1, R0, 0)
    a.jmp32_reg("jge", R1, R9, fail)  # none queued (a taker past the tail takes nothing)
    a.ldx(BPF_W, R2, R10, -28)
    a.alu_imm("lsh", R2, QUEUE_SHIFT)
    a.alu_imm("and", R1, QUEUE - 1)
    a.alu_reg("add", R2, R1)
    a.stx(BPF_W, R10, R2, -32)
    _lookup(a, ahead.queue, -32, miss=fail)
    a.ldx(BPF_W, R4, R0, 0)
    a.stx(BPF_W, R10, R4, -36)
    a.ldx(BPF_H, R4, R0, 4)
    a.stx(BPF_W, R10, R4, -40)
    a.ldx(BPF_H, R4, R0, 6)
    a.stx(BPF_H, R10, R4, -42)  # the FULLNAT local port
    _lookup(a, ahead.dests, -40, miss=fail)
    a.mov_reg(R9, R0)


_E = -104  # the element being built, on the stack (64 bytes)
_RK = -120  # the reply flow's key (12 bytes)
_EV = -152  # the event (24 bytes)


def _copy(a: Asm, src: int, src_off: int, dst_off: int, n: int) -> None:
    """n bytes (even) from src+src_off to the stack at dst_off, two at a time (stack stores must be
    aligned to their size; dst_off is even). Uses R4."""
    for i in range(0, n, 2):
        a.ldx(BPF_H, R4, src, src_off + i)
        a.stx(BPF_H, R10, R4, dst_off + i)


def _new_conn(a: Asm, flows_fd: int, states_fd: int, steps_fd: int, events_fd: int, ahead: AheadMaps) -> None:
    """A client's SYN, no element for its flow: take the service's next decision (ahead.py), put
    the connection's elements (requests; NAT: replies) and its first state, tell Python (EV_NEW),
    then count and send the SYN as any packet of the flow."""
    _frame_holds(a, 54, "pass")
    a.ldx(BPF_H, R4, R2, 20)
    a.jmp_imm("jset", R4, _DF, "nc_df")  # what the tunnel needs too (SYNs are small)
    a.ja("pass")
    a.label("nc_df")
    _take_decision(a, ahead, "pass", take=True)
    # the request element
    a.ldx(BPF_W, R4, R9, D_IFINDEX)
    a.stx(BPF_W, R10, R4, _E + V_IFINDEX)
    a.ldx(BPF_H, R4, R9, D_LIMIT)
    a.stx(BPF_H, R10, R4, _E + V_LIMIT)
    a.ldx(BPF_B, R4, R9, D_KIND)
    a.stx(BPF_B, R10, R4, _E + V_KIND)
    a.st_imm(BPF_B, R10, _E + V_DIR, DIR_IN)
    _copy(a, R9, D_ETH, _E + V_ETH, 14)
    a.ldx(BPF_B, R4, R9, D_MODE)
    a.jmp_imm("jne", R4, MODE_TUN, "nc_rw")
    _copy(a, R9, D_OUTER, _E + V_HEAD, 20)
    a.ja("nc_head")
    a.label("nc_rw")  # NAT: to the server's address and port; DR: addresses as they are
    _copy(a, R10, -16, _E + V_HEAD, 12)  # source, destination, ports from the key
    for i in range(12, 20, 2):
        a.st_imm(BPF_H, R10, _E + V_HEAD + i, 0)
    a.ldx(BPF_B, R4, R9, D_MODE)  # (_copy used R4)
    a.jmp_imm("jne", R4, MODE_DR, "nc_nat")
    _copy(a, R9, D_RADDR, _E + V_HEAD + 12, 4)  # DR: the server, for a restarted pylvsd to adopt
    a.ja("nc_head")
    a.label("nc_nat")
    a.jmp_imm("jne", R4, MODE_FULLNAT, "nc_to_server")
    _copy(a, R9, D_OUTER, _E + V_HEAD, 4)  # FULLNAT: from our address and the local port
    _copy(a, R10, -42, _E + V_HEAD + 8, 2)
    a.label("nc_to_server")
    _copy(a, R9, D_RADDR, _E + V_HEAD + 4, 4)
    a.ldx(BPF_H, R4, R9, D_RPORT)
    a.jmp_imm("jeq", R4, 0, "nc_head")  # port 0: the virtual port
    a.stx(BPF_H, R10, R4, _E + V_HEAD + 10)
    a.label("nc_head")
    a.ldx(BPF_H, R4, R9, D_STEP)
    a.stx(BPF_H, R10, R4, _E + V_STEP)
    a.ldx(BPF_W, R4, R10, -36)
    a.stx(BPF_W, R10, R4, _E + V_SLOT)
    a.ld_map_fd(R1, flows_fd)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, -16)
    a.mov_reg(R3, R10)
    a.alu_imm("add", R3, _E)
    a.ldx(BPF_W, R4, R10, _NEW_FLAGS)  # BPF_ANY: in place of a connection the core is done with
    a.call(ebpf.HELPER_MAP_UPDATE_ELEM)
    a.jmp_imm("jne", R0, 0, "pass")
    # NAT, FULLNAT: the reply element (server -> client: from the VIP, to the client's MAC, out of
    # here), keyed by the request as it now goes, turned round
    a.ldx(BPF_B, R4, R9, D_MODE)
    a.jmp_imm("jeq", R4, MODE_DR, "nc_state")
    a.jmp_imm("jeq", R4, MODE_TUN, "nc_state")
    _copy(a, R10, _E + V_HEAD + 4, _RK, 4)  # the server
    _copy(a, R10, _E + V_HEAD, _RK + 4, 4)  # the client (FULLNAT: our address)
    _copy(a, R10, _E + V_HEAD + 10, _RK + 8, 2)  # the server's port
    _copy(a, R10, _E + V_HEAD + 8, _RK + 10, 2)  # the client's port (FULLNAT: the local one)
    a.ldx(BPF_W, R4, R6, ebpf.SKB_INGRESS_IFINDEX)
    a.stx(BPF_W, R10, R4, _E + V_IFINDEX)
    a.st_imm(BPF_H, R10, _E + V_LIMIT, 0xFFFF)
    a.st_imm(BPF_B, R10, _E + V_KIND, KIND_REWRITE)
    a.st_imm(BPF_B, R10, _E + V_DIR, DIR_OUT)
    _frame_holds(a, 54, "nc_undo")
    _copy(a, R2, 6, _E + V_ETH, 6)  # to the client's MAC
    _copy(a, R2, 0, _E + V_ETH + 6, 6)  # from the one it sent to
    _copy(a, R10, -12, _E + V_HEAD, 4)  # from the VIP
    _copy(a, R10, -16, _E + V_HEAD + 4, 4)  # to the client
    _copy(a, R10, -6, _E + V_HEAD + 8, 2)  # from the virtual port
    _copy(a, R10, -8, _E + V_HEAD + 10, 2)  # to the client's port
    a.st_imm(BPF_H, R10, _E + V_STEP, STEP_ROW)
    a.ld_map_fd(R1, flows_fd)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, _RK)
    a.mov_reg(R3, R10)
    a.alu_imm("add", R3, _E)
    a.mov_imm(R4, ebpf.BPF_ANY)  # an earlier connection's reply flow: this one's now
    a.call(ebpf.HELPER_MAP_UPDATE_ELEM)
    a.jmp_imm("jne", R0, 0, "nc_undo")
    # the first state, from the core's table: the SYN's step from NONE
    a.label("nc_state")
    a.st_imm(BPF_W, R10, -24, 0)
    _lookup(a, steps_fd, -24, miss="nc_undo")
    a.ldx(BPF_H, R3, R9, D_STEP)
    a.mov_reg(R4, R8)
    a.alu_imm("and", R4, _TCP_EVENT_BITS)
    a.alu_imm("lsh", R4, 4)
    a.alu_reg("add", R3, R4)
    a.jmp_imm("jgt", R3, STEP_BYTES - 1, "nc_undo")
    a.alu_reg("add", R0, R3)
    a.ldx(BPF_B, R5, R0, 0)
    a.stx(BPF_B, R10, R5, _EV + 6)
    _lookup(a, states_fd, -36, miss="nc_undo")
    a.ldx(BPF_B, R5, R10, _EV + 6)
    a.stx(BPF_W, R0, R5, 0)
    # tell Python: slot, flags, direction, state, EV_NEW, the flow's key, the server
    a.ldx(BPF_W, R4, R10, -36)
    a.stx(BPF_W, R10, R4, _EV)
    a.stx(BPF_B, R10, R8, _EV + 4)
    a.st_imm(BPF_B, R10, _EV + 5, DIR_IN)
    a.st_imm(BPF_B, R10, _EV + 7, EV_NEW)
    for i in range(0, 12, 4):
        a.ldx(BPF_W, R4, R10, -16 + i)
        a.stx(BPF_W, R10, R4, _EV + 8 + i)
    a.ldx(BPF_W, R4, R10, -40)
    a.stx(BPF_W, R10, R4, _EV + 20)
    a.ld_map_fd(R1, events_fd)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, _EV)
    a.mov_imm(R3, NEW_EVENT.size)
    a.mov_imm(R4, ebpf.BPF_RB_NO_WAKEUP)
    a.call(ebpf.HELPER_RINGBUF_OUTPUT)
    a.jmp_imm("jne", R0, 0, "nc_undo")  # the ring is full: Python would never know it
    # and the SYN itself, as any packet of the flow (its counters: zeroed by Python with the slot)
    _lookup(a, flows_fd, -16, miss="pass")
    a.mov_reg(R7, R0)
    _lookup(a, states_fd, -36, miss="pass")
    a.mov_reg(R9, R0)
    a.ja("count")
    a.label("nc_undo")  # the connection could not be set up whole: the SYN goes to Python
    a.ld_map_fd(R1, flows_fd)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, -16)
    a.call(ebpf.HELPER_MAP_DELETE_ELEM)
    a.ldx(BPF_B, R4, R9, D_MODE)
    a.jmp_imm("jeq", R4, MODE_DR, "pass")
    a.jmp_imm("jeq", R4, MODE_TUN, "pass")
    a.ld_map_fd(R1, flows_fd)
    a.mov_reg(R2, R10)
    a.alu_imm("add", R2, _RK)
    a.call(ebpf.HELPER_MAP_DELETE_ELEM)
    a.ja("pass")


def _rewrite(a: Asm) -> None:
    """Addresses and ports as the element says (checksums mended by the replace helpers, which
    know a partial checksum), the MACs, and out of the element's device."""
    # the packet's addresses and ports as they are, at fp-48 (source), fp-44 (destination), fp-40 (ports)
    _frame_holds(a, 54, "pass")
    for i, off in enumerate((26, 30, 34)):
        a.ldx(BPF_W, R4, R2, off)
        a.stx(BPF_W, R10, R4, -48 + 4 * i)
    for i, (pkt_off, val_off, pseudo) in enumerate(
        ((26, V_HEAD, True), (30, V_HEAD + 4, True), (34, V_HEAD + 8, False))
    ):
        done = f"rw{i}"
        a.ldx(BPF_W, R4, R7, val_off)
        a.ldx(BPF_W, R3, R10, -48 + 4 * i)
        a.jmp_reg("jeq", R4, R3, done)
        a.stx(BPF_W, R10, R4, -56)  # the new value, for the store
        a.mov_reg(R1, R6)
        a.mov_imm(R2, 34 + 16)  # the TCP checksum
        a.mov_imm(R5, (ebpf.BPF_F_PSEUDO_HDR if pseudo else 0) | 4)
        a.call(ebpf.HELPER_L4_CSUM_REPLACE)
        a.jmp_imm("jne", R0, 0, "shot")
        if pseudo:
            a.mov_reg(R1, R6)
            a.mov_imm(R2, 14 + 10)  # the IPv4 header checksum
            a.ldx(BPF_W, R3, R10, -48 + 4 * i)
            a.ldx(BPF_W, R4, R10, -56)
            a.mov_imm(R5, 4)
            a.call(ebpf.HELPER_L3_CSUM_REPLACE)
            a.jmp_imm("jne", R0, 0, "shot")
        _store(a, pkt_off, R10, -56, 4)
        a.label(done)
    _store(a, 0, R7, V_ETH, 12)
    _send_out(a)


def _encapsulate(a: Asm) -> None:
    """IP-in-IP: 20 bytes after the Ethernet header (the stack keeps a partial checksum correct:
    adjust_room marks the frame encapsulated), the element's headers, the outer TOS and length,
    the outer checksum, and out of the element's device. R8 = inner length, R9 = inner TOS."""
    a.mov_reg(R1, R6)
    a.mov_imm(R2, 20)
    a.mov_imm(R3, ebpf.BPF_ADJ_ROOM_MAC)
    a.mov_imm(R4, ebpf.BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)
    a.call(ebpf.HELPER_SKB_ADJUST_ROOM)
    a.jmp_imm("jne", R0, 0, "shot")
    _store(a, 0, R7, V_ETH, 34)
    _frame_holds(a, 34, "shot")
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
    _send_out(a)


def socket_program(
    flows_fd: int,
    dsts_fd: int,
    srcs_fd: int,
    ipv6: bool,
    ahead: AheadMaps | None = None,
    states_fd: int = -1,
) -> bytes:
    """The packet sockets' filter: the classic prefilter's choice (ARP; IPv4 to a virtual or local
    address or from a NAT server; with ipv6 every IPv6 frame), minus the frames tc_program takes.
    Taps run before tc: a SYN the tc program will set up from a queued decision is predicted from
    the queue as it is now (another CPU taking the last decision first can make a SYN go unseen:
    the client sends it again)."""
    a = Asm()
    a.mov_reg(R6, R1)
    # frame[0:48] at fp-64 (the flow key then lies at fp-38: addresses and ports)
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
    _lookup(a, dsts_fd, -64 + 30, hit="ours")
    _lookup(a, srcs_fd, -64 + 26, hit="ours")
    a.ja("reject")
    a.label("ours")  # for us: is it a frame the tc program takes?
    a.ldx(BPF_B, R1, R10, -64 + 23)
    a.jmp_imm("jne", R1, socket.IPPROTO_TCP, "accept")
    a.ldx(BPF_B, R1, R10, -64 + 14)
    a.jmp_imm("jne", R1, 0x45, "accept")
    a.ldx(BPF_H, R1, R10, -64 + 20)
    a.jmp_imm("jset", R1, _FRAG, "accept")
    a.mov_reg(R1, R6)
    a.mov_imm(R2, 34)
    a.mov_reg(R3, R10)
    a.alu_imm("add", R3, -64 + 34)
    a.mov_imm(R4, 14)
    a.call(ebpf.HELPER_SKB_LOAD_BYTES)
    a.jmp_imm("jne", R0, 0, "accept")
    _lookup(a, flows_fd, -64 + 26, miss="no_flow" if ahead is not None else "accept")
    a.mov_reg(R7, R0)
    a.ldx(BPF_B, R1, R7, V_DIR)
    a.jmp_imm("jne", R1, DIR_IN, "not_new")
    a.ldx(BPF_B, R8, R10, -64 + 47)
    if ahead is None:
        a.jmp_imm("jset", R8, _SYN, "accept")
    else:
        a.jmp_imm("jset", R8, _SYN, "resyn")
    a.label("not_new")
    a.ldx(BPF_B, R1, R7, V_KIND)
    a.jmp_imm("jne", R1, KIND_TUNNEL, "reject")
    # the tunnel's tests, on the copied bytes (tc's _fits_tunnel reads the packet itself)
    a.ldx(BPF_H, R1, R10, -64 + 20)
    a.jmp_imm("jset", R1, _DF, "df")
    a.ja("accept")
    a.label("df")
    a.ldx(BPF_H, R5, R10, -64 + 16)
    a.be(R5, 16)
    a.jmp_imm("jgt", R5, MAX_INNER, "accept")
    a.ldx(BPF_W, R1, R6, ebpf.SKB_GSO_SIZE)
    a.jmp_imm("jeq", R1, 0, "measured")
    a.ldx(BPF_B, R5, R10, -64 + 46)
    a.alu_imm("and", R5, 0xF0)
    a.alu_imm("rsh", R5, 2)
    a.alu_reg("add", R5, R1)
    a.label("measured")
    a.ldx(BPF_H, R1, R7, V_LIMIT)
    a.jmp_reg("jgt", R5, R1, "accept")
    if ahead is not None:
        a.ja("reject")  # (the tunnel's tests passed: tc takes it)
        a.label("resyn")  # as the tc program decides (R7, R8 set): reuse, keep, or Python
        _reuse_rule(a, states_fd, ahead.reuse, "accept", "no_flow", "not_new")
        a.label("no_flow")  # a SYN the tc program will make a connection of?
        a.ldx(BPF_H, R1, R10, -64 + 20)
        a.jmp_imm("jset", R1, _DF, "nf_df")
        a.ja("accept")
        a.label("nf_df")
        a.ldx(BPF_B, R8, R10, -64 + 47)
        _copy(a, R10, -64 + 26, -16, 12)  # the key where _take_decision reads it
        _take_decision(a, ahead, "accept", take=False)
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


def previous_maps(devices: Iterable[str]) -> dict[str, ebpf.BpfMap]:
    """The maps of a pylvsd that stopped without removing its tc filter (a crash, a kill): the
    filter's program still holds them, and the kernel still forwards their flows. Found through the
    filter on one of our devices (programs and maps are global, the filter is this namespace's).
    Empty when there is none, or when its maps are not the ones this version writes."""
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
            found: dict[str, ebpf.BpfMap] = {}
            try:
                for map_id in ebpf.program_maps(int(prog["id"])):
                    m = ebpf.BpfMap.by_id(map_id)
                    if m.name == FLOWS_NAME and (m.key_size, m.value_size) == (12, VALUE.size):
                        found["flows"] = m
                    elif m.name == STATES_NAME and (m.key_size, m.value_size) == (4, STATE.size):
                        found["states"] = m
                    else:
                        m.close()
            except OSError:
                for m in found.values():
                    m.close()
                continue
            if len(found) == 2:
                return found
            for m in found.values():
                m.close()
    return {}


@dataclass(frozen=True, slots=True)
class Adoptable:
    """What a killed pylvsd's elements of one connection say of it (adoption_of)."""

    fwd: Fwd
    raddr: bytes
    rport: int  # 0: the virtual port (DR, TUN)
    laddr: bytes = b""  # FULLNAT: our address and local port toward the server
    lport: int = 0


def adoption_of(parts: list[tuple[bytes, Flow, int, bytes]]) -> Adoptable | None:
    """The forwarding method and real server of a connection from its elements (key, flow, state,
    value), as give() and the tc program wrote them; None when they do not make one connection."""
    request = [p for p in parts if p[3][V_DIR] == DIR_IN]
    if len(request) != 1:
        return None
    _key, flow, _state, raw = request[0]
    _p, caddr, _cport, vaddr, _vport = flow
    head = raw[V_HEAD : V_HEAD + 20]
    if raw[V_KIND] == KIND_TUNNEL:
        found, n = Adoptable(Fwd.TUNNEL, head[16:20], 0), 1
    elif head[0:4] != caddr:  # our address as the source
        rport, lport = struct.unpack_from("!HH", head, 10)[0], struct.unpack_from("!H", head, 8)[0]
        found, n = Adoptable(Fwd.FULLNAT, head[4:8], rport, head[0:4], lport), 2
    elif head[4:8] != vaddr:
        found, n = Adoptable(Fwd.MASQ, head[4:8], struct.unpack_from("!H", head, 10)[0]), 2
    elif head[12:16] != bytes(4):
        found, n = Adoptable(Fwd.DROUTE, head[12:16], 0), 1
    else:
        return None  # a DR element without its server (an older pylvsd's)
    return found if len(parts) == n else None


@dataclass(slots=True, eq=False)
class Offloaded:
    """One connection the kernel forwards: its core entry, its slot, its elements, and what of the
    kernel's counts the core already has (per element: packets, bytes)."""

    conn: Any
    slot: int
    stats: tuple[Any, ...]  # the core's counters (server, service, total)
    keys: list[bytes] = field(default_factory=list)
    dirs: list[int] = field(default_factory=list)
    counted: list[list[int]] = field(default_factory=list)
    raw: bytes = b""  # its counters (both ways) as the last look found them in `states`
    fe: Any = None  # the Forwarder's FastEntry, for a connection offloaded once steady
    hop: tuple[bytes, int, bytes] | None = None  # (server, device, MAC) its requests leave with
    state: int = -1  # the state the kernel's copy was last given
    fin_since: float = 0.0  # without output: when a sync first saw it in FIN_WAIT
    due: int = 0  # closing: the second a sync looks at it next (0: every sync, in `watch`)
    gap: int = 1  # closing: seconds between looks while nothing comes


class ConnOffload:
    """The maps and programs of the kernel fast path, the devices and sockets they are attached to,
    and the connections the kernel forwards."""

    def __init__(
        self,
        director: Any,
        max_flows: int = MAX_FLOWS,
        previous: dict[str, ebpf.BpfMap] | None = None,
        ahead: bool = False,
    ) -> None:
        """previous: the maps of an earlier pylvsd (previous_maps), whose elements the kernel still
        forwards; its connections are adopted (adoptable, take) and the maps go on serving."""
        if sys.byteorder != "little":
            raise OSError("the kernel fast path's programs compare packet bytes as a little-endian machine")
        self.director = director
        prev = previous or {}
        self.flows = prev.get("flows") or ebpf.BpfMap(
            ebpf.BPF_MAP_TYPE_HASH, 12, VALUE.size, max_flows, FLOWS_NAME, ebpf.BPF_F_NO_PREALLOC
        )
        self.states = prev.get("states") or ebpf.BpfMap(
            ebpf.BPF_MAP_TYPE_ARRAY, 4, STATE.size, MAX_SLOTS, STATES_NAME, ebpf.BPF_F_MMAPABLE
        )
        # the states written and the counters read in place (no syscall)
        self.state_of: ebpf.ArrayMmap | None = None
        self.writer: ebpf.MapWriter | None = None
        self.steps = ebpf.BpfMap(ebpf.BPF_MAP_TYPE_ARRAY, 4, STEP_BYTES, 1, "plv_steps")
        self.events = ebpf.RingBuf(RING_BYTES, "plv_events")
        # addresses: as many as a restore may bring, allocated as they come
        self.dsts = ebpf.BpfMap(ebpf.BPF_MAP_TYPE_HASH, 4, 1, MAX_ADDRS, "plv_dsts", ebpf.BPF_F_NO_PREALLOC)
        self.srcs = ebpf.BpfMap(ebpf.BPF_MAP_TYPE_HASH, 4, 1, MAX_ADDRS, "plv_srcs", ebpf.BPF_F_NO_PREALLOC)
        self.secure: bool | None = None
        self._reuse: tuple[int, int] | None = None
        self.ahead: Any = None  # an ahead.Ahead: decisions taken before their SYNs come
        self.ports: Any = None  # the engine's FULLNAT port pool (ports.PortPool), for FULLNAT ahead
        self.on_fullnat: Any = None  # the Forwarder's adopt_fullnat
        self.tc_fd = -1
        self.sock_fd = -1
        self.ipv6 = False
        self.hooks: dict[int, ebpf.TcIngress] = {}
        self.socks: dict[int, socket.socket] = {}
        self.by_slot: dict[int, Offloaded] = {}
        self.by_flow: dict[Flow, Offloaded] = {}
        self.watch: dict[int, Offloaded] = {}  # slot -> looked at every sync (open, or just changed)
        self.later: dict[int, list[Offloaded]] = {}  # second -> closing ones looked at then
        # the slots a killed run's elements name, kept for adoption (take) until adopted() is called
        self.held: set[int] = set()
        if prev.get("flows") is not None:
            self.held = {
                VALUE.unpack_from(raw)[-1] for _k, raw in self.flows.items() if len(raw) == VALUE.size
            }
        self.free = [s for s in range(MAX_SLOTS - 1, -1, -1) if s not in self.held]
        self.cooling: list[int] = []  # slots freed since the last sync (an event may still name them)
        self.addr_sets: tuple[set[bytes], set[bytes]] = (set(), set())
        self.counters = {
            "kernel_pkts": 0,
            "kernel_bytes": 0,
            "kernel_events": 0,
            "flows_added": 0,
            "flows_removed": 0,
            "flows_adopted": 0,
            "offload_full": 0,
        }
        try:
            self.state_of = ebpf.ArrayMmap(self.states)
        except (OSError, ValueError):
            pass  # an older run's map, not mmap-able: one bpf() per state write
        try:
            if ahead:
                from pylvs.engines.packet.ahead import Ahead  # it builds on this module

                self.ahead = Ahead()
                self.ahead.fresh = self._fresh
            self.writer = ebpf.MapWriter(self.flows, 2)
            self.set_steps()
            prog = tc_program(
                self.flows.fd, self.states.fd, self.steps.fd, self.events.fd, self._ahead_maps()
            )
            self.tc_fd = ebpf.load_program(prog, ebpf.BPF_PROG_TYPE_SCHED_CLS, "plv_flows")
            self.sock_fd = self._load_filter(False)
        except OSError:
            self.close()
            raise

    def set_steps(self) -> None:
        """The core's state table (secure_tcp 3 has its own) and, with decisions ahead, its reuse
        rule for a SYN that finds an entry; written when they change."""
        sysctl = getattr(self.director, "sysctl", None)
        secure = getattr(sysctl, "secure_tcp", 0) == 3
        if secure != self.secure:
            self.steps.update(b"\0\0\0\0", step_table(secure))
            self.secure = secure
        if self.ahead is not None:
            masks = reuse_masks(
                getattr(sysctl, "conn_reuse_mode", 1), getattr(sysctl, "expire_nodest_conn", 0)
            )
            if masks != self._reuse:
                for i, m in enumerate(masks):
                    self.ahead.reuse_map.update(_SLOT.pack(i), _SLOT.pack(m))
                self._reuse = masks

    def _ahead_maps(self) -> AheadMaps | None:
        return self.ahead.maps() if self.ahead is not None else None

    def _load_filter(self, ipv6: bool) -> int:
        prog = socket_program(
            self.flows.fd, self.dsts.fd, self.srcs.fd, ipv6, self._ahead_maps(), self.states.fd
        )
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

    # -- connections -----------------------------------------------------------------------------
    def give(
        self,
        conn: Any,
        stats: tuple[Any, ...],
        elements: list[tuple[Flow, int, bytes]],
        hop: tuple[bytes, int, bytes] | None = None,
        fe: Any = None,
    ) -> bool:
        """The kernel forwards `conn` from now on: elements = (flow, direction, fixed value from
        tunnel_value / rewrite_value). False (nothing given) when the maps are full."""
        if not elements:
            return False
        old = self.by_flow.get(elements[0][0])
        if old is not None:
            if old.conn is conn and old.keys == [flow_key(f) for f, _d, _v in elements]:
                old.fe = fe or old.fe
                old.hop = hop
                return self._update_values(old, elements)
            self._remove(old, account=True)
        for flow, _d, _v in elements[1:]:  # a reply flow of an earlier connection
            other = self.by_flow.get(flow)
            if other is not None:
                self._remove(other, account=True)
        if not self.free:
            self.counters["offload_full"] += 1
            return False
        slot = self.free.pop()
        rec = Offloaded(conn, slot, stats, fe=fe, hop=hop)
        try:
            self._reset(slot, conn.state)
            rec.state = conn.state
            keys: list[bytes] = []
            values: list[bytes] = []
            tail = _SLOT.pack(slot)
            for flow, direction, fixed in elements:
                keys.append(flow_key(flow))
                values.append(fixed + tail)
                rec.dirs.append(direction)
                rec.counted.append([0, 0])
            if self.writer is not None and len(keys) <= self.writer.capacity:
                self.writer.put(b"".join(keys), b"".join(values), len(keys))
            else:
                self.flows.update_batch(keys, values)
        except OSError:
            self.free.append(slot)
            self.counters["offload_full"] += 1
            return False
        rec.keys = keys
        self._register(rec, [f for f, _d, _v in elements])
        self.counters["flows_added"] += len(keys)
        return True

    def _register(self, rec: Offloaded, flows: Iterable[Flow]) -> None:
        """Python's side of a connection the kernel now forwards (its elements, for `flows` in
        the order of rec.keys, are in the map)."""
        self.by_slot[rec.slot] = rec
        self.watch[rec.slot] = rec
        for flow in flows:
            self.by_flow[flow] = rec

    def _update_values(self, rec: Offloaded, elements: list[tuple[Flow, int, bytes]]) -> bool:
        """Same connection, same flows, maybe another way out: the fixed parts rewritten (the
        kernel's counters are the slot's: kept)."""
        for (_flow, _d, fixed), key in zip(elements, rec.keys, strict=True):
            try:
                self.flows.update(key, fixed + _SLOT.pack(rec.slot))
            except OSError:
                self._remove(rec, account=True)
                return False
        return True

    def _set_state(self, slot: int, state: int) -> None:
        if self.state_of is not None:
            self.state_of.set(slot, state)
        else:
            raw = self.states.lookup(_SLOT.pack(slot)) or bytes(STATE.size)
            self.states.update(_SLOT.pack(slot), _SLOT.pack(state) + raw[4:])

    def _reset(self, slot: int, state: int) -> None:
        """A slot taken for a new connection: its state, and counters from zero (no element names
        the slot while it cools, so the program no longer counts there)."""
        value = STATE.pack(state, 0, 0, 0, 0)
        if self.state_of is not None:
            off = slot * self.state_of.stride
            self.state_of.buf[off : off + STATE.size] = value
        else:
            self.states.update(_SLOT.pack(slot), value)

    def _fresh(self, slot: int) -> None:
        """A slot queued with a decision taken ahead (the program sets its first state)."""
        self._reset(slot, 0)

    def counts(self, slot: int, direction: int) -> tuple[int, int]:
        """Packets and bytes the kernel forwarded for the connection in `slot`, one way."""
        off = S_COUNTS + direction * COUNTS.size
        if self.state_of is not None:
            pk, by = COUNTS.unpack_from(self.state_of.buf, slot * self.state_of.stride + off)
        else:
            pk, by = COUNTS.unpack_from(self.states.lookup(_SLOT.pack(slot)) or bytes(STATE.size), off)
        return pk, by

    def _read(self, rec: Offloaded, now: float | None, arm: Any = None) -> bool:
        """The connection's counters to the core; whether the kernel forwarded any packet since
        the last look (most looks at a closing connection find none: one compare)."""
        so = self.state_of
        if so is not None:
            off = rec.slot * so.stride + S_COUNTS
            view = so.buf[off : off + _BOTH_WAYS]
            if view == rec.raw:
                return False
            raw = rec.raw = view.tobytes()
        else:
            raw = (self.states.lookup(_SLOT.pack(rec.slot)) or bytes(STATE.size))[S_COUNTS:]
            if raw == rec.raw:
                return False
            rec.raw = raw
        got = False
        for i, direction in enumerate(rec.dirs):
            pk, by = COUNTS.unpack_from(raw, direction * COUNTS.size)
            got = self._account(rec, i, pk, by, now, arm) or got
        return got

    def follow(self, rec: Offloaded) -> None:
        """Python took one of the connection's packets through the core: the kernel's copy of its
        state follows (or its elements go, when the core ended the entry)."""
        conn = rec.conn
        if getattr(conn, "dead", False):
            self._remove(rec, account=True)
        elif conn.state != rec.state:
            rec.state = conn.state
            self._set_state(rec.slot, conn.state)
            self.watch[rec.slot] = rec

    def remove_flow(self, flow: Flow) -> None:
        rec = self.by_flow.get(flow)
        if rec is not None:
            self._remove(rec, account=True)

    def _remove(self, rec: Offloaded, account: bool, keep: Collection[bytes] = ()) -> None:
        """keep: keys now another connection's (the kernel gave them to a new one): not deleted.
        (The slot's counters stopped when the kernel did: they are this connection's.)"""
        if self.by_slot.get(rec.slot) is not rec:
            return
        if account:
            self._read(rec, None)
        self._delete([k for k in rec.keys if k not in keep])
        self._forget(rec)

    def _delete(self, keys: list[bytes]) -> None:
        try:
            self.flows.delete_batch(keys)
        except OSError:
            for key in keys:
                self.flows.delete(key)

    def _forget(self, rec: Offloaded) -> None:
        """Python's side of a removal (the elements are gone from the map)."""
        for key in rec.keys:
            flow = flow_of(key)
            if self.by_flow.get(flow) is rec:
                del self.by_flow[flow]
        del self.by_slot[rec.slot]
        self.watch.pop(rec.slot, None)  # (a `later` entry is passed over: by_slot no longer has it)
        self.cooling.append(rec.slot)
        self.counters["flows_removed"] += len(rec.keys)
        if rec.fe is not None:
            rec.fe.offloaded = False

    def _done(self, rec: Offloaded, now: float) -> bool:
        """Whether a live connection's elements can go. With decisions ahead, only once a SYN for
        its flow would be scheduled afresh anyway (the core's reuse rule: the kernel makes new
        connections of SYNs it has no element for, and must not while the core would keep the
        entry). Otherwise at TIME_WAIT or CLOSE, or FIN_LINGER into FIN_WAIT without output (the
        next packets go through Python, which asks the core)."""
        state = rec.conn.state
        no_output = rec.dirs == [DIR_IN]
        if self.ahead is not None:
            mask = self._reuse[1 if no_output else 0] if self._reuse is not None else REUSE_CORE
            return not mask & REUSE_CORE and bool(mask >> state & 1)
        if state in _CLOSED:
            return True
        if state == coretcp.FIN_WAIT and no_output:
            if not rec.fin_since:
                rec.fin_since = now
            return now - rec.fin_since >= FIN_LINGER
        return False

    def clear(self) -> None:
        """Every element removed (a rule change): the events before it given to the core first."""
        self.drain(None)
        for rec in list(self.by_slot.values()):
            self._remove(rec, account=True)
        self.later.clear()

    def _account(self, rec: Offloaded, i: int, pk: int, by: int, now: float | None, arm: Any = None) -> bool:
        """Give the core what the kernel sent since the last look: the counters, and the timer.
        Whether there was any."""
        counted = rec.counted[i]
        dp, db = pk - counted[0], by - counted[1]
        if dp <= 0 and db <= 0:
            return False
        counted[0], counted[1] = pk, by
        if getattr(rec.conn.dest, "available", True):
            if rec.dirs[i] == DIR_IN:
                for st in rec.stats:
                    st.inpkts += dp
                    st.inbytes += db
            else:
                for st in rec.stats:
                    st.outpkts += dp
                    st.outbytes += db
        self.counters["kernel_pkts"] += dp
        self.counters["kernel_bytes"] += db
        if arm is not None and now is not None and not getattr(rec.conn, "dead", False):
            arm(rec.conn, now)
        return True

    # -- what the kernel tells ---------------------------------------------------------------------
    def drain(self, now: float | None) -> int:
        """The state changes the kernel saw, given to the core. The kernel steps a connection with
        the core's own table, so the core's entry takes the state the kernel has for it now, once
        per read however many steps it took meanwhile (a short connection's often all come in one
        read): a connection the kernel made (EV_NEW) is made in that state, a known one enters it
        (coreapi.enter_state: ActiveConn/InActConn, timeout, timer; the packets are counted from
        the kernel's counters). An entry with a persistence template takes each step through the
        core instead (process_in_tcp / process_out_tcp, counted: the element's counters hold that
        packet too), which may take another step than the kernel: the kernel then follows."""
        records = self.events.drain()
        if not records:
            return 0
        d = self.director
        if now is None:
            now = d.env.now
        by_slot, watch = self.by_slot, self.watch
        unpack_from = EVENT.unpack_from
        process_in, process_out = d.process_in_tcp, d.process_out_tcp
        d.advance(now)  # the timers due first, as the packets' own processing runs them
        table = d.conns.conns
        made: dict[int, list[Any]] = {}  # slot -> [EV_NEW, the last state this read has for it]
        moved: dict[int, list[Any]] = {}  # slot -> [its Offloaded, the last state this read has]
        for raw in records:
            if raw[7] == EV_NEW and len(raw) >= NEW_EVENT.size:
                made[_SLOT.unpack_from(raw)[0]] = [raw, raw[6]]
                continue
            slot, flags, direction, new = unpack_from(raw)
            m = made.get(slot) or moved.get(slot)
            if m is not None:
                m[1] = new
                continue
            rec = by_slot.get(slot)
            if rec is None:
                continue
            conn = rec.conn
            if conn.dead:
                self._remove(rec, account=True)  # the core ended it: its next packets ask the core
                continue
            watch[slot] = rec  # a sync looks at it next (a closing one may be open again)
            if conn.control is None and conn.dest.available and table.get(conn.key) is conn:
                moved[slot] = [rec, new]
                continue
            if direction == DIR_IN:
                process_in(conn, 0, flags, now)
            else:
                process_out(conn, 0, flags, now)
            # (elements are listed requests first, replies second: the index is the direction)
            # the core counted this packet, and so does the element: not twice in the stats
            rec.counted[direction if direction < len(rec.counted) else 0][0] += 1
            rec.state = new
            if conn.state != new and not conn.dead:
                self.follow(rec)  # the core took another step (it knows more): the kernel follows
        now_of = self.state_of.get if self.state_of is not None else None
        for slot, (rec, new) in moved.items():  # (before any connection made in its place)
            state = now_of(slot) & 0xF if now_of is not None else new
            coreapi.enter_state(d, rec.conn, state, now)
            rec.state = state
        if made:
            for slot, (raw, new) in made.items():
                self._new(raw, now_of(slot) & 0xF if now_of is not None else new, now)
            self.ahead.refill(d, self.free, self.ports)
        self.counters["kernel_events"] += len(records)
        return len(records)

    def _new(self, raw: bytes, state: int, now: float) -> None:
        """EV_NEW: the kernel made a connection of a SYN with a decision taken ahead (ahead.py):
        the core's entry for it, in `state` (the kernel's latest step), to the server decided."""
        slot, _flags, _direction, _first, _t, key, di = NEW_EVENT.unpack_from(raw)
        caddr, vaddr = key[0:4], key[4:8]
        cport, vport = _PORTS.unpack_from(key, 8)
        ahead = self.ahead
        q = ahead.take(slot, di) if ahead is not None else None
        dest = q.dest if q is not None else None
        rport = (dest.port or vport) if dest is not None else 0
        hop = ahead.hop_of.get(di) if ahead is not None else None
        raddr = hop[0] if hop is not None else b""
        # the reply flow (NAT, FULLNAT): to the client, or to our address and the local port
        back: tuple[bytes, int] | None = None
        if q is not None and dest is not None and dest.fwd == Fwd.MASQ:
            back = (caddr, cport)
        elif q is not None and dest is not None and dest.fwd == Fwd.FULLNAT:
            back = (q.lip, q.lport)
        if back is not None and dest is not None:
            keys = [key, raddr + back[0] + _PORTS.pack(rport, back[1])]
        else:
            keys = [key]
        conn = None
        if q is not None and dest is not None and dest.available:
            d = self.director
            ci, vi = _II.unpack_from(key)
            existing = d.lookup_in_v4(6, ci, cport, vi, vport)
            if existing is None or existing.dead or not coreapi.keeps_entry(d, existing):
                conn = coreapi.adopt_decided(d, q.svc, dest, ci, cport, vi, vport, rport, state, now)
        if conn is None or conn.dest is not dest:
            # not ours, its server gone, or the core keeps an older entry for the flow (a port reused
            # with conn_reuse_mode 0): the elements go, the next packets take the per-packet way
            self._delete([k for k in keys if flow_of(k) not in self.by_flow])
            if q is not None:
                self.cooling.append(slot)
                if q.lport and self.ports is not None:
                    self.ports.give(q.lport)
            return
        flows = [(socket.IPPROTO_TCP, caddr, cport, vaddr, vport)]
        if back is None:
            dirs, counted = [DIR_IN], [[0, 0]]
        else:
            dirs, counted = [DIR_IN, DIR_OUT], [[0, 0], [0, 0]]
            flows.append((socket.IPPROTO_TCP, raddr, rport, back[0], back[1]))
            if dest.fwd == Fwd.FULLNAT and self.on_fullnat is not None:
                # the Forwarder's entry: Python's way for the flow's late packets, the port's return
                self.on_fullnat(conn, flows[0], raddr, rport, back[0], back[1])
        rec = Offloaded(
            conn, slot, coreapi.stats_of(self.director, conn), keys, dirs, counted, b"", None, hop, state
        )
        by_flow = self.by_flow
        for flow in flows:
            old = by_flow.get(flow)
            if old is not None:
                self._remove(old, account=True, keep=keys)
        self._register(rec, flows)
        self.counters["flows_added"] += len(keys)

    def rules_changing(self, now: float) -> None:
        """Before a rule change: the decisions queued are taken no more and each service's
        scheduler goes back to before the first one not taken (ahead.Ahead.stop)."""
        if self.ahead is not None:
            self.ahead.stop(now)

    def load_ahead(self, way_to: Any, now: float) -> None:
        """After a rule change (the engine's sync): decisions taken ahead for the new rules."""
        if self.ahead is not None:
            self.ahead.load(self.director, way_to, self.free, now, self.ports)

    def sync(
        self,
        now: float,
        arm: Callable[[Any, float], None] | None,
        hop_of: Callable[[bytes], tuple[int, bytes] | None],
        way_to: Any = None,
        full: bool = False,
    ) -> None:
        """Once a second: the kernel's counts to the core; elements of closed or dead connections,
        or whose way out changed, removed; freed slots back in use. Open connections are looked at
        every time, closing ones when due (see CLOSING_GAP); full: every connection now."""
        self.drain(now)
        self.set_steps()
        self.free.extend(self.cooling)
        self.cooling = []
        if self.ahead is not None:
            self.ahead.reclaim(now, self.free, self.ports)
            if way_to is not None and self.ahead.stale(self.director, way_to):
                # (the same rules: the decisions queued are put back as if never made)
                self.ahead.load(self.director, way_to, self.free, now, self.ports, restore=True)
            else:
                self.ahead.refill(self.director, self.free, self.ports)
        if not self.by_slot:
            return
        second = int(now)
        watch, later, by_slot = self.watch, self.later, self.by_slot
        if full:
            todo = list(by_slot.values())
            later.clear()
        else:
            todo = list(watch.values())
            for when in [w for w in later if w <= second]:
                for rec in later.pop(when):
                    if rec.due == when and by_slot.get(rec.slot) is rec and rec.slot not in watch:
                        todo.append(rec)
        hops: dict[bytes, tuple[int, bytes] | None] = {}
        doomed: list[Offloaded] = []
        read, done = self._read, self._done
        for rec in todo:
            conn = rec.conn
            got = read(rec, now, arm)
            if conn.dead or done(rec, now):
                doomed.append(rec)
                continue
            if rec.hop is not None:
                raddr, oidx, mac = rec.hop
                if raddr not in hops:
                    hops[raddr] = hop_of(raddr)
                if hops[raddr] != (oidx, mac):
                    doomed.append(rec)
                    if rec.fe is not None:
                        rec.fe.hop = rec.fe.tun = None
                    continue
            if conn.state in _OPEN:
                rec.due = 0
                watch[rec.slot] = rec
                continue
            # Closing: looked at again later, further apart while the kernel sees nothing of it,
            # and EXPIRY_MARGIN before the core's timer for it runs out (not before the next second).
            if rec.due:
                gap = rec.gap = CLOSING_FIRST if got else min(rec.gap * 2, CLOSING_GAP)
            else:
                watch.pop(rec.slot, None)
                gap = rec.gap = CLOSING_FIRST
            due = second + gap
            expires = getattr(conn, "expires", 0.0)
            if expires and due > expires - EXPIRY_MARGIN:
                due = max(second + 1, int(expires) - EXPIRY_MARGIN)
            rec.due = due
            bucket = later.get(due)
            if bucket is None:
                later[due] = [rec]
            else:
                bucket.append(rec)
        if doomed:  # one batch for all (their counts were just read)
            self._delete([k for rec in doomed for k in rec.keys])
            for rec in doomed:
                self._forget(rec)

    # -- a restart: the connections an earlier pylvsd left to the kernel -------------------------
    def adoptable(self) -> list[tuple[bytes, Flow, int, bytes, int]]:
        """The map's elements as (key, flow, state, value, slot), each with its connection's state."""
        out = []
        for key, raw in self.flows.items():
            if len(key) != 12 or len(raw) != VALUE.size:
                continue
            slot = VALUE.unpack(raw)[-1]
            st = self.states.lookup(_SLOT.pack(slot))
            state = _SLOT.unpack_from(st)[0] if st is not None else coretcp.ESTABLISHED
            saddr, daddr, sport, dport = key[0:4], key[4:8], *struct.unpack_from("!HH", key, 8)
            out.append((key, (socket.IPPROTO_TCP, saddr, sport, daddr, dport), state, raw, slot))
        return out

    def take(
        self, conn: Any, stats: tuple[Any, ...], parts: list[tuple[bytes, Flow, int, bytes]], slot: int
    ) -> None:
        """Elements (key, flow, direction, value) that stand for `conn` now (adopted); the kernel's
        counts so far are the old run's."""
        if slot in self.by_slot or slot not in self.held:
            for key, _f, _d, _raw in parts:
                self.flows.delete(key)
            return
        self.held.discard(slot)
        rec = Offloaded(conn, slot, stats, state=conn.state)
        for key, _flow, direction, _raw in parts:
            pk, by = self.counts(slot, direction)
            rec.keys.append(key)
            rec.dirs.append(direction)
            rec.counted.append([pk, by])
        self._register(rec, [flow for _k, flow, _d, _r in parts])
        self._set_state(slot, conn.state)
        self.counters["flows_adopted"] += len(parts)

    def adopted(self) -> None:
        """Adoption is over: the slots no adopted connection took serve again (after cooling)."""
        self.cooling.extend(self.held)
        self.held.clear()

    def drop(self, key: bytes) -> None:
        """An element nobody can adopt (its service or server is gone)."""
        self.flows.delete(key)

    def close(self) -> None:
        for hook in self.hooks.values():
            try:
                _off_loop(hook.close)
            except OSError:
                pass
        self.hooks.clear()
        for s in self.socks.values():
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
            except OSError:
                pass
        self.socks.clear()
        for fd in (self.tc_fd, self.sock_fd):
            if fd >= 0:
                os.close(fd)
        self.tc_fd = self.sock_fd = -1
        if self.state_of is not None:
            self.state_of.close()
            self.state_of = None
        for m in (self.flows, self.states, self.steps, self.dsts, self.srcs):
            m.close()
        self.events.close()
        if self.ahead is not None:
            self.ahead.close()
            self.ahead = None
        self.by_slot.clear()
        self.by_flow.clear()

    def stats(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.counters.items()}
        out["kernel_flows"] = float(len(self.by_flow))
        if self.ahead is not None:
            out.update({k: float(v) for k, v in self.ahead.counters.items()})
        return out
