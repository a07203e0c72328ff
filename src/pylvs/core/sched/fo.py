"""fo: weighted fail-over (ip_vs_fo.c): the eligible server with the highest weight, ties to the
first in list order; connection counts play no part."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, eligible
from pylvs.core.sched.index import BestIndex, IndexedScheduler, with_list_order
from pylvs.core.service import RealServer
from pylvs.core.types import MAX_WEIGHT, Packet


def fo_key(d: RealServer) -> int | None:
    # Highest weight first: order by the complement of the (31-bit) weight.
    return with_list_order(MAX_WEIGHT - d.weight, d) if eligible(d) else None


@register
class WeightedFailover(IndexedScheduler):
    name = "fo"

    def make_indexes(self) -> tuple[BestIndex, ...]:
        self.highest = BestIndex(fo_key)
        return (self.highest,)

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        return self.highest.best()
