"""PACKET_FANOUT for the packet engine: N worker processes share each interface, and a classic-BPF
fanout program picks the worker so that both directions of a connection meet on the same one.

- To a virtual address (a request): the worker is a hash of (client address XOR client port) mod N.
- To a FULLNAT local address (a reply): the local port says it, since worker k only hands out
  ports from the k-th slice of the range.
- Anything else the engine takes (a NAT reply from a real server to the client): (destination
  address XOR destination port) hashed mod N: the same client endpoint as its request.
- ARP, IPv6 and ICMP go to worker 0 (each worker also reads ARP on a socket of its own).

The fanout index is the member's place in the group, in the order the sockets joined; `open_group`
therefore opens every worker's sockets in one process, in worker order, before the workers fork.

What this changes in IPVS semantics (why it is an option, off by default, and only in the bare lab
director, `PYLVS_LAB_ENGINE_OPTS='{"workers": N}'`): each worker has its own Director built from the
same rules, so the connection table is partitioned by client and
- scheduling is per worker: rr/wrr rotate per worker (globally the servers still alternate, but
  not in one strict sequence); lc/wlc/sed/nq see only the worker's own connections; sh/dh/mh are
  unchanged (pure functions of the addresses);
- persistence holds because, when any service is persistent, the worker is chosen by the client
  address alone (not its port), so all of a client's connections and templates meet on one worker;
- connection limits (-x/-y thresholds, OVERLOAD) apply per worker, i.e. N times looser overall;
- counters and rates are per worker (the lab director sums them); a listing shows one worker's;
- ICMP errors and IPv6 go to worker 0, so they find their connection only when it lives there.
"""

from __future__ import annotations

import socket

from pylvs.cbpf import (
    ALU_DIV_K,
    ALU_MOD_K,
    ALU_MUL_K,
    ALU_RSH_K,
    ALU_SUB_K,
    ALU_XOR_X,
    JEQ_K,
    JGE_K,
    LD_B_ABS,
    LD_H_ABS,
    LD_H_IND,
    LD_IMM,
    LD_W_ABS,
    LDX_B_MSH,
    LDX_MEM,
    RET_A,
    RET_K,
    ST,
    Insn,
    fprog,
)
from pylvs.engines.packet.ring import AnyRxRing, rx_ring

SOL_PACKET = 263
PACKET_FANOUT = 18
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_CBPF = 6
ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806

GOLDEN = (
    0x9E3779B1  # multiplicative hash: connect() hands out even ports, so the low bits alone would not spread
)
# A fanout program sees the skb as the receive path holds it, with data at the network header, so
# it addresses the IP header through SKF_NET_OFF and the EtherType through skb->protocol.
NET = 0xFFF00000  # SKF_NET_OFF (-0x100000) as an unsigned offset
PROTOCOL = 0xFFFFF000  # SKF_AD_OFF + SKF_AD_PROTOCOL


def port_slice(lo: int, hi: int, index: int, count: int) -> tuple[int, int]:
    """Worker `index`'s share of the FULLNAT local port range lo..hi (inclusive)."""
    chunk = (hi - lo + 1) // count
    if chunk < 1:
        raise ValueError("fewer FULLNAT local ports than workers")
    return lo + index * chunk, lo + (index + 1) * chunk - 1


def program(
    vips: list[bytes], lips: list[bytes], count: int, ports: tuple[int, int], by_port: bool = True
) -> list[Insn]:
    """The fanout program (returns the worker index; the kernel takes it modulo the group size).
    Without `by_port` the client's address alone picks the worker, so every connection of a client
    meets the same worker (what persistent services need: their templates are per worker)."""
    vips = sorted(set(vips))
    lips = sorted(set(lips))
    if len(vips) + len(lips) > 200:
        raise ValueError("too many addresses for the fanout program")
    chunk = max(1, (ports[1] - ports[0] + 1) // count)
    p: list[Insn] = []
    # labels resolved below: "zero", "req", "lip", "reply"
    fix: list[tuple[int, str, str]] = []  # (insn index, jt label or "", jf label or "")
    p.append((LD_H_ABS, 0, 0, PROTOCOL))
    fix.append((len(p), "", "zero"))
    p.append((JEQ_K, 0, 0, 0x0800))
    p.append((LD_B_ABS, 0, 0, NET + 9))  # protocol: TCP, UDP, SCTP carry ports at the same place
    p.append((JEQ_K, 2, 0, 6))
    p.append((JEQ_K, 1, 0, 17))
    fix.append((len(p), "", "zero"))
    p.append((JEQ_K, 0, 0, 132))
    p.append((LDX_B_MSH, 0, 0, NET))  # X = IP header length
    p.append((LD_W_ABS, 0, 0, NET + 16))  # daddr
    for a in vips:
        fix.append((len(p), "req", ""))
        p.append((JEQ_K, 0, 0, int.from_bytes(a, "big")))
    for a in lips:
        fix.append((len(p), "lip", ""))
        p.append((JEQ_K, 0, 0, int.from_bytes(a, "big")))
    labels: dict[str, int] = {}

    def client_hash(label: str, port_at: int, addr_at: int) -> None:
        """(client address ^ client port) % count, the client's side at these IP offsets."""
        labels[label] = len(p)
        p.append((LD_H_IND, 0, 0, NET + port_at) if by_port else (LD_IMM, 0, 0, 0))
        p.append((ST, 0, 0, 0))
        p.append((LD_W_ABS, 0, 0, NET + addr_at))
        p.append((LDX_MEM, 0, 0, 0))
        p.append((ALU_XOR_X, 0, 0, 0))
        p.append((ALU_MUL_K, 0, 0, GOLDEN))
        p.append((ALU_RSH_K, 0, 0, 16))
        p.append((ALU_MOD_K, 0, 0, count))
        p.append((RET_A, 0, 0, 0))

    client_hash("reply", 2, 16)  # reply from a NAT real server: the client is the destination
    client_hash("req", 0, 12)  # request to a virtual address: the client is the source
    # to a FULLNAT local address: (dport - lo) / chunk, if the port is in the range
    labels["lip"] = len(p)
    p.append((LD_H_IND, 0, 0, NET + 2))
    fix.append((len(p), "", "zero"))
    p.append((JGE_K, 0, 0, ports[0]))
    p.append((ALU_SUB_K, 0, 0, ports[0]))
    p.append((ALU_DIV_K, 0, 0, chunk))
    p.append((RET_A, 0, 0, 0))
    labels["zero"] = len(p)
    p.append((RET_K, 0, 0, 0))
    out = list(p)
    for at, jt, jf in fix:
        code, t, f, k = out[at]
        if jt:
            t = labels[jt] - at - 1
        if jf:
            f = labels[jf] - at - 1
        if not (0 <= t <= 255 and 0 <= f <= 255):
            raise ValueError("fanout program too long for 8-bit jumps")
        out[at] = (code, t, f, k)
    return out


def join(sock: socket.socket, group: int, insns: list[Insn]) -> None:
    """Join fanout group `group` (16 bits) in CBPF mode and give it the program."""
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, (group & 0xFFFF) | (PACKET_FANOUT_CBPF << 16))
    set_program(sock, insns)


def set_program(sock: socket.socket, insns: list[Insn]) -> None:
    """Replace the group's fanout program (every member may set it; the last setting wins)."""
    prog, _keep = fprog(insns)
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, prog)


ALL_TO_FIRST: list[Insn] = [(RET_K, 0, 0, 0)]


def arp_socket(ifname: str) -> socket.socket:
    """A plain socket for ARP frames only, outside the fanout group: every worker learns every
    neighbour (fanout would hand each ARP reply to one worker only)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    s.setsockopt(SOL_PACKET, 15, 1)  # PACKET_VNET_HDR: the same frame layout as the main sockets
    s.setsockopt(SOL_PACKET, 23, 1)  # PACKET_IGNORE_OUTGOING
    s.bind((ifname, ETH_P_ARP))
    s.setblocking(False)
    return s


Member = tuple[socket.socket, AnyRxRing | None, socket.socket]


def open_socket(
    ifname: str, ring: str | None = None, ring_timeout_ms: int = 1
) -> tuple[socket.socket, AnyRxRing | None]:
    """A packet socket as the engine opens it (engine._open), bound to `ifname`, taking nothing
    until the engine attaches its prefilter."""
    from pylvs import cbpf
    from pylvs.engines.packet import bpf

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.setsockopt(SOL_PACKET, 15, 1)  # PACKET_VNET_HDR
        s.setsockopt(SOL_PACKET, 23, 1)  # PACKET_IGNORE_OUTGOING
        s.setsockopt(SOL_PACKET, 20, 1)  # PACKET_QDISC_BYPASS
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        cbpf.attach(s, bpf.program([], []))
        rx = rx_ring(ring, s, ring_timeout_ms) if ring else None
        s.bind((ifname, ETH_P_ALL))
    except OSError:
        s.close()
        raise
    return s, rx


def open_group(
    ifnames: list[str], count: int, group_base: int, ring: str | None = None, ring_timeout_ms: int = 1
) -> list[dict[str, Member]]:
    """For each of `count` workers, in worker order, one socket per interface joined to that
    interface's fanout group (so member k of every group is worker k), plus an ARP socket."""
    if count < 2 or count > 64:
        raise ValueError("fanout workers must be 2..64")
    workers: list[dict[str, Member]] = [{} for _ in range(count)]
    for i, name in enumerate(ifnames):
        for w in range(count):
            s, rx = open_socket(name, ring, ring_timeout_ms)
            join(s, group_base + i, ALL_TO_FIRST)
            workers[w][name] = (s, rx, arp_socket(name))
    return workers
