"""wlc: weighted least connection (ip_vs_wlc.c), the default scheduler: the eligible server with
the smallest conn_overhead / weight, ties to the first in list order."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, conn_overhead, eligible
from pylvs.core.sched.index import BestIndex, IndexedScheduler, ratio_key, with_list_order
from pylvs.core.service import RealServer
from pylvs.core.types import Packet


def wlc_key(d: RealServer) -> int | None:
    # The kernel's scan skips OVERLOAD servers; a weight-0 one can never win its comparison.
    return with_list_order(ratio_key(conn_overhead(d), d.weight), d) if eligible(d) else None


@register
class WeightedLeastConnection(IndexedScheduler):
    name = "wlc"

    def make_indexes(self) -> tuple[BestIndex, ...]:
        self.least = BestIndex(wlc_key)
        return (self.least,)

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        return self.least.best()
