"""sed: shortest expected delay (ip_vs_sed.c): wlc with (active + 1) as the load, so inactive
connections do not count."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, eligible
from pylvs.core.sched.index import BestIndex, IndexedScheduler, ratio_key, with_list_order
from pylvs.core.service import RealServer
from pylvs.core.types import Packet


def sed_key(d: RealServer) -> int | None:
    return with_list_order(ratio_key(d.activeconns + 1, d.weight), d) if eligible(d) else None


@register
class ShortestExpectedDelay(IndexedScheduler):
    name = "sed"

    def make_indexes(self) -> tuple[BestIndex, ...]:
        self.least = BestIndex(sed_key)
        return (self.least,)

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        return self.least.best()
