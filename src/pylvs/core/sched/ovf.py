"""ovf: overflow (ip_vs_ovf.c): the highest-weight server that is not OVERLOAD and whose active
connections do not exceed its weight (so it can take weight + 1), ties to the first in list order."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv
from pylvs.core.sched.index import BestIndex, IndexedScheduler, with_list_order
from pylvs.core.service import RealServer
from pylvs.core.types import MAX_WEIGHT, Packet


def ovf_key(d: RealServer) -> int | None:
    w = d.weight
    if d.overload or w == 0 or d.activeconns > w:
        return None
    return with_list_order(MAX_WEIGHT - w, d)


@register
class Overflow(IndexedScheduler):
    name = "ovf"

    def make_indexes(self) -> tuple[BestIndex, ...]:
        self.highest = BestIndex(ovf_key)
        return (self.highest,)

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        return self.highest.best()
