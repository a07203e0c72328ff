"""Decisions taken ahead: the core's scheduler picks the next real servers of a service before
their SYNs arrive, so the kernel's fast path (offload.py) can make a connection out of a SYN
without waiting for Python.

For a service whose decision does not depend on the packet or on the connections the servers hold
(rr or wrr, no persistence, no thresholds, every server reachable by NAT, FULLNAT (a local port
from the engine's pool goes with each decision), DR or TUN over IPv4),
this keeps a queue of up to QUEUE decisions in the kernel: each a connection slot and a server,
picked by the service's own scheduler object, in its order. The tc program takes the next one on a
client's SYN (offload._new_conn), puts the connection's elements and first state, and reports it
(EV_NEW); Python then makes the core's entry for it without scheduling again (coreapi.adopt, as
for a connection a previous pylvsd left to the kernel) and the queue is topped up.

Why it stays IPVS's behaviour: the scheduler runs the same steps in the same order, only earlier.
Before the rules change (the engine's rules_changing), the queues stop being taken from and each
service's scheduler goes back to where it stood before its first decision not taken (every
decision keeps a copy of the scheduler's state before it): the change then meets the scheduler as
IPVS's would, and the queues are filled again from the new rules. A SYN that finds the queue
empty, a service that is not eligible, or any doubt (a port in use, a full map) goes the
per-packet way: Python schedules it.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pylvs.core.types import Fwd, Packet, Proto, SvcFlags
from pylvs.engines.packet import offload
from pylvs.netlink import ebpf

ELIGIBLE_SCHEDULERS = ("rr", "wrr")
GRACE = 2.0  # seconds a taken decision may wait for its EV_NEW before its slot is reclaimed
# (ifindex, next-hop MAC, our MAC, source address, MTU) of the way to a server, or None
WayTo = Callable[[bytes], tuple[int, bytes, bytes, bytes, int] | None]
_PROBE = Packet(
    Proto.TCP, ipaddress.ip_address("0.0.0.0"), 1, ipaddress.ip_address("0.0.0.0"), 1, tcp_flags=0x02
)


@dataclass(slots=True, eq=False)
class Queued:
    """A decision in the kernel's queue: which service, which position, which server."""

    index: int  # the service's index
    pos: int  # its position in the service's queue (monotonic)
    svc: Any
    dest: Any
    dest_index: int
    lip: bytes = b""  # FULLNAT: our address toward the server
    lport: int = 0  # FULLNAT: the local port, from the engine's pool
    taken_at: float = 0.0  # when a sync first saw it taken (its EV_NEW then has GRACE to come)
    before: dict[str, Any] | None = None  # the scheduler's state before this decision
    sched: Any = None  # ... of this scheduler object (a rule change may replace it)


@dataclass(slots=True, eq=False)
class Served:
    """A service with decisions taken ahead."""

    index: int
    svc: Any
    tail: int = 0  # positions written so far
    dests: dict[int, int] = field(default_factory=dict)  # id(RealServer) -> dest index


class Ahead:
    """The maps of decisions taken ahead and what Python knows of them."""

    def __init__(self) -> None:
        self.services = ebpf.BpfMap(ebpf.BPF_MAP_TYPE_HASH, 8, 4, offload.MAX_SVCS, "plv_svcs")
        self.heads_map = ebpf.BpfMap(
            ebpf.BPF_MAP_TYPE_ARRAY, 4, 4, offload.MAX_SVCS, "plv_heads", ebpf.BPF_F_MMAPABLE
        )
        self.tails_map = ebpf.BpfMap(
            ebpf.BPF_MAP_TYPE_ARRAY, 4, 4, offload.MAX_SVCS, "plv_tails", ebpf.BPF_F_MMAPABLE
        )
        self.queue_map = ebpf.BpfMap(
            ebpf.BPF_MAP_TYPE_ARRAY, 4, 8, offload.MAX_SVCS * offload.QUEUE, "plv_queue", ebpf.BPF_F_MMAPABLE
        )
        self.dests_map = ebpf.BpfMap(
            ebpf.BPF_MAP_TYPE_ARRAY, 4, offload.DEST.size, offload.MAX_DESTS, "plv_dests"
        )
        self.reuse_map = ebpf.BpfMap(ebpf.BPF_MAP_TYPE_ARRAY, 4, 4, 2, "plv_reuse")  # offload.reuse_masks
        self.reuse_map.update(struct.pack("=I", 0), struct.pack("=I", offload.REUSE_CORE))
        self.reuse_map.update(struct.pack("=I", 1), struct.pack("=I", offload.REUSE_CORE))
        self.heads = ebpf.ArrayMmap(self.heads_map)
        self.tails = ebpf.ArrayMmap(self.tails_map)
        self.queue = ebpf.ArrayMmap(self.queue_map)
        self.served: dict[int, Served] = {}  # service index -> what it serves
        self.by_svc: dict[int, Served] = {}  # id(VirtualService) -> the same
        self.queued: dict[int, Queued] = {}  # slot -> its decision
        self.hop_of: dict[int, tuple[bytes, int, bytes]] = {}  # dest index -> (server, device, MAC)
        self.lip_of: dict[int, bytes] = {}  # dest index -> our address toward it (FULLNAT)
        self.counters = {"ahead_taken": 0, "ahead_queued": 0, "ahead_reclaimed": 0}
        self.fresh: Callable[[int], None] | None = None  # a slot's counters zeroed as it is queued

    def maps(self) -> offload.AheadMaps:
        return offload.AheadMaps(
            self.services.fd,
            self.heads_map.fd,
            self.tails_map.fd,
            self.queue_map.fd,
            self.dests_map.fd,
            self.reuse_map.fd,
        )

    # -- rules ---------------------------------------------------------------------------------
    def stop(self, now: float, restore: bool = True) -> None:
        """No decision queued is taken any more (one taken meanwhile keeps GRACE seconds for its
        event, a dropped one gives its slot back then); with restore, each service's scheduler
        back to where it stood before its first decision not taken, as if those had never been
        made (only while the rules are still those the decisions were made from)."""
        first: dict[int, Queued] = {}
        for served in self.served.values():
            # takers compare their position with the tail: none will find one past the head now
            self.tails.set(served.index, self.heads.get(served.index))
        for q in self.queued.values():
            if not q.taken_at:
                q.taken_at = now  # dropped or taken: either way it has GRACE to show up
                owner = self.served.get(q.index)
                if (
                    restore
                    and owner is not None
                    and owner.svc is q.svc
                    and q.pos >= self.heads.get(q.index)  # (read after the tail moved)
                    and (q.index not in first or q.pos < first[q.index].pos)
                ):
                    first[q.index] = q
        for q in first.values():
            sched = q.svc.scheduler
            if sched is not None and sched is q.sched and q.before is not None:
                sched.__dict__.update(q.before)
        for served in self.served.values():
            served.tail = self.heads.get(served.index)

    def load(
        self,
        director: Any,
        way_to: WayTo,
        free: list[int],
        now: float,
        ports: Any = None,
        restore: bool = False,
    ) -> None:
        """After every rule change: queued decisions stop being taken (see stop: nothing is left
        to stop when the engine did it before the change, which restored the schedulers then),
        and each eligible service gets its servers' ways out. restore: the rules are those the
        queued decisions were made from (another service became eligible, say)."""
        self.stop(now, restore)
        old = {k for k in self.services.keys()}
        self.served.clear()
        self.by_svc.clear()
        self.hop_of.clear()
        self.lip_of.clear()
        dest_index = 0
        index = 0
        keys: set[bytes] = set()
        for svc in director.services:
            if index >= offload.MAX_SVCS:
                break
            ways = self._ways(svc, way_to, ports is not None)
            if ways is None:
                continue
            key = svc.addr.packed + struct.pack("!H", svc.port) + b"\0\0"
            served = Served(index, svc, tail=self.heads.get(index))
            self.tails.set(index, served.tail)
            for dest, value in ways:
                if dest_index >= offload.MAX_DESTS:
                    break
                self.dests_map.update(struct.pack("=I", dest_index), value)
                served.dests[id(dest)] = dest_index
                ifindex, _l, _k, _m, eth, outer = offload.DEST.unpack(value)[:6]
                self.hop_of[dest_index] = (dest.addr.packed, ifindex, eth[:6])
                self.lip_of[dest_index] = outer[:4]
                dest_index += 1
            self.services.update(key, struct.pack("=I", index))
            keys.add(key)
            self.served[index] = served
            self.by_svc[id(svc)] = served
            index += 1
        for key in old - keys:
            self.services.delete(key)
        self.refill(director, free, ports)

    @staticmethod
    def _ways(svc: Any, way_to: WayTo, fullnat: bool = False) -> list[tuple[Any, bytes]] | None:
        """The servers' elements in `dests`, when the service can be decided ahead (else None)."""
        if (
            svc.fwmark
            or svc.addr is None
            or svc.addr.version != 4
            or svc.protocol != Proto.TCP
            or not svc.port
            or svc.flags & (SvcFlags.PERSISTENT | SvcFlags.ONEPACKET)
            or getattr(svc, "pe_name", "")
            or svc.scheduler_name not in ELIGIBLE_SCHEDULERS
            or not svc.dests
        ):
            return None
        out = []
        for d in svc.dests:
            if d.u_threshold or d.l_threshold or d.addr.version != 4:
                return None
            way = way_to(d.addr.packed)
            if way is None:
                return None  # not reachable yet (its MAC unknown): Python decides until it is
            ifindex, mac, ours, src, mtu = way
            eth = mac + ours + b"\x08\x00"
            raddr = d.addr.packed
            rport = struct.pack("!H", d.port)
            if d.fwd == Fwd.MASQ:
                kind, mode, outer, step, limit = offload.KIND_REWRITE, offload.MODE_NAT, bytes(20), 0, 0xFFFF
            elif d.fwd == Fwd.FULLNAT and fullnat:
                kind, mode, outer, step, limit = (
                    offload.KIND_REWRITE,
                    offload.MODE_FULLNAT,
                    src + bytes(16),
                    0,
                    0xFFFF,
                )
            elif d.fwd == Fwd.DROUTE:
                kind, mode, outer, step, limit = offload.KIND_REWRITE, offload.MODE_DR, bytes(20), 2, 0xFFFF
            elif d.fwd == Fwd.TUNNEL:
                hdr = struct.pack(
                    "!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0x4000, 64, socket.IPPROTO_IPIP, 0, src, raddr
                )
                _e, outer = offload.outer_template(eth, hdr)
                kind, mode, step, limit = offload.KIND_TUNNEL, offload.MODE_TUN, 2, min(mtu - 20, 0xFFFF)
            else:
                return None
            value = offload.DEST.pack(
                ifindex,
                limit,
                kind,
                mode,
                eth,
                outer,
                raddr,
                struct.unpack("=H", rport)[0],
                step * offload.STEP_ROW,
            )
            out.append((d, value))
        return out

    # -- the queues ------------------------------------------------------------------------------
    def refill(self, director: Any, free: list[int], ports: Any = None) -> None:
        """Top every served service's queue up with the scheduler's next picks (a slot each)."""
        env = director.env
        for served in self.served.values():
            i = served.index
            head = self.heads.get(i)
            tail = served.tail
            if tail < head:
                tail = head  # takers past the tail took nothing
            sched = served.svc.scheduler
            if sched is None:
                continue
            base = i << offload.QUEUE_SHIFT
            n = 0
            while tail - head < offload.QUEUE and free:
                before = sched.__dict__.copy()
                dest = sched.schedule(_PROBE, env)
                if dest is None:
                    sched.__dict__.update(before)  # no SYN asked: as if it had not run
                    break
                di = served.dests.get(id(dest))
                if di is None:
                    sched.__dict__.update(before)
                    break  # a server the table does not know (it came meanwhile): next load
                lport, lip = 0, b""
                if dest.fwd == Fwd.FULLNAT:
                    taken = ports.take() if ports is not None else None
                    if taken is None:
                        sched.__dict__.update(before)
                        break  # no local port free: Python decides (and says so) until one is
                    lport, lip = taken, self.lip_of[di]
                slot = free.pop()
                if self.fresh is not None:
                    self.fresh(slot)
                entry = slot | di << 32 | socket.htons(lport) << 48
                self.queue.set(base + (tail & (offload.QUEUE - 1)), entry)
                self.queued[slot] = Queued(i, tail, served.svc, dest, di, lip, lport, 0.0, before, sched)
                tail += 1
                n += 1
            if n:
                served.tail = tail
                self.tails.set(i, tail & 0xFFFFFFFF)
                self.counters["ahead_queued"] += n

    def take(self, slot: int, dest_index: int) -> Queued | None:
        """The decision an EV_NEW names (None: not one of ours, or its server is gone)."""
        q = self.queued.pop(slot, None)
        if q is None or q.dest_index != dest_index:
            return None
        self.counters["ahead_taken"] += 1
        return q

    def reclaim(self, now: float, free: list[int], ports: Any = None) -> None:
        """Decisions taken (or dropped) whose EV_NEW never came within GRACE: their slots back."""
        for slot, q in list(self.queued.items()):
            served = self.served.get(q.index)
            if q.taken_at == 0.0:
                if served is not None and served.svc is q.svc and q.pos >= self.heads.get(q.index):
                    continue  # still queued
                q.taken_at = now
                continue
            if now - q.taken_at >= GRACE:
                del self.queued[slot]
                free.append(slot)
                if q.lport and ports is not None:
                    ports.give(q.lport)
                self.counters["ahead_reclaimed"] += 1

    def stale(self, director: Any, way_to: WayTo) -> bool:
        """Whether the services that can be decided ahead are no longer the ones served (a server's
        MAC became known, say): then load() again."""
        if len(self.served) >= min(len(director.services), offload.MAX_SVCS):
            return False
        return any(
            id(svc) not in self.by_svc and self._ways(svc, way_to, True) is not None
            for svc in director.services
        )

    def close(self) -> None:
        for v in (self.heads, self.tails, self.queue):
            v.close()
        for m in (
            self.services,
            self.heads_map,
            self.tails_map,
            self.queue_map,
            self.dests_map,
            self.reuse_map,
        ):
            m.close()
