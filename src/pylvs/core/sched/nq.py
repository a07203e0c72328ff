"""nq: never queue (ip_vs_nq.c): the first idle (no active connection) eligible server in list
order; when none is idle, the sed choice."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, eligible
from pylvs.core.sched.index import BestIndex, IndexedScheduler, with_list_order
from pylvs.core.sched.sed import sed_key
from pylvs.core.service import RealServer
from pylvs.core.types import Packet


def idle_key(d: RealServer) -> int | None:
    return with_list_order(0, d) if eligible(d) and d.activeconns == 0 else None


@register
class NeverQueue(IndexedScheduler):
    name = "nq"

    def make_indexes(self) -> tuple[BestIndex, ...]:
        self.idle = BestIndex(idle_key)
        self.least = BestIndex(sed_key)
        return (self.idle, self.least)

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        return self.idle.best() or self.least.best()
