"""sh: source hashing (ip_vs_sh.c): 256 buckets, each server taking max(weight, 1) in a row, chosen
by the client address (plus its port with sh-port); sh-fallback probes other buckets."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, TableScheduler, eligible, hash_port
from pylvs.core.sched.hashing import MASK32, fold, hash_32
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.types import Packet, SvcFlags

TAB_BITS = 8
TAB_SIZE = 1 << TAB_BITS
SH_FALLBACK = SvcFlags.SCHED1
SH_PORT = SvcFlags.SCHED2


@register
class SourceHashing(TableScheduler):
    name = "sh"

    def __init__(self, svc: VirtualService) -> None:
        self.buckets: list[RealServer | None] = []
        super().__init__(svc)

    def rebuild(self) -> None:
        dests = self.svc.dests
        if not dests:
            self.buckets = [None] * TAB_SIZE
            return
        table: list[RealServer | None] = []
        i = 0
        while len(table) < TAB_SIZE:
            d = dests[i % len(dests)]
            table.extend([d] * min(max(d.weight, 1), TAB_SIZE - len(table)))
            i += 1
        self.buckets = table

    def bucket_of(self, pkt: Packet) -> int:
        return hash_32((hash_port(self.svc, SH_PORT, pkt) + fold(pkt.saddr)) & MASK32, TAB_BITS)

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        h = self.bucket_of(pkt)
        d = self.buckets[h]
        if d is None:
            return None
        if eligible(d):
            return d
        if not self.svc.flags & SH_FALLBACK:
            return None
        # The kernel re-hashes with an offset of h + k on top of h: the probe starts at 2h.
        for k in range(TAB_SIZE):
            d = self.buckets[(2 * h + k) % TAB_SIZE]
            if d is None:
                return None
            if eligible(d):
                return d
        return None
