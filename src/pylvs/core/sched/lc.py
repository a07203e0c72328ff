"""lc: least connection (ip_vs_lc.c): the eligible server with the smallest conn_overhead,
ties to the first in list order."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, conn_overhead, eligible
from pylvs.core.sched.index import BestIndex, IndexedScheduler, with_list_order
from pylvs.core.service import RealServer
from pylvs.core.types import Packet


def lc_key(d: RealServer) -> int | None:
    return with_list_order(conn_overhead(d), d) if eligible(d) else None


@register
class LeastConnection(IndexedScheduler):
    name = "lc"

    def make_indexes(self) -> tuple[BestIndex, ...]:
        self.least = BestIndex(lc_key)
        return (self.least,)

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        return self.least.best()
