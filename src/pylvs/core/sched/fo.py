"""fo: weighted fail-over (ip_vs_fo.c): the eligible server with the highest weight, ties to the
first in list order; connection counts play no part."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, eligible
from pylvs.core.sched.index import BestIndex, IndexedScheduler, SortKey
from pylvs.core.service import RealServer
from pylvs.core.types import Packet


def fo_key(d: RealServer) -> SortKey | None:
    return (-d.weight, -d.seq) if eligible(d) else None


@register
class WeightedFailover(IndexedScheduler):
    name = "fo"

    def make_indexes(self) -> tuple[BestIndex, ...]:
        self.highest = BestIndex(fo_key)
        return (self.highest,)

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        return self.highest.best()
