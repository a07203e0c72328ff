"""dh: destination hashing (ip_vs_dh.c): 256 buckets filled round-robin from the list, chosen by
the packet's destination address. No fallback."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, TableScheduler, eligible
from pylvs.core.sched.hashing import fold, hash_32
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.types import Packet

TAB_BITS = 8
TAB_SIZE = 1 << TAB_BITS


@register
class DestinationHashing(TableScheduler):
    name = "dh"

    def __init__(self, svc: VirtualService) -> None:
        self.buckets: list[RealServer | None] = []
        super().__init__(svc)

    def rebuild(self) -> None:
        dests = self.svc.dests
        n = len(dests)
        self.buckets = [dests[i % n] for i in range(TAB_SIZE)] if n else [None] * TAB_SIZE

    def bucket_of(self, pkt: Packet) -> int:
        return hash_32(fold(pkt.daddr), TAB_BITS)

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        d = self.buckets[self.bucket_of(pkt)]
        if d is None or not d.available or not eligible(d):
            return None
        return d
