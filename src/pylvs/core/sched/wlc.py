"""wlc: weighted least connection (ip_vs_wlc.c), the default scheduler: the eligible server with
the smallest conn_overhead / weight, ties to the first in list order."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv
from pylvs.core.sched.index import RATIO_SHIFT, SEQ_BITS, SEQ_MASK, BestIndex, IndexedScheduler
from pylvs.core.service import RealServer
from pylvs.core.types import Packet


def wlc_key(d: RealServer) -> int | None:
    # The kernel's scan skips OVERLOAD servers; a weight-0 one can never win its comparison.
    # with_list_order(ratio_key(conn_overhead(d), d.weight), d) if eligible(d), in one expression:
    # it runs on every change of a server's counts (twice per short connection).
    w = d.weight
    if w > 0 and not d.overload:
        ratio = (((d.activeconns << 8) + d.total) << RATIO_SHIFT) // w
        return (ratio << SEQ_BITS) | (SEQ_MASK - (d.seq & SEQ_MASK))
    return None


@register
class WeightedLeastConnection(IndexedScheduler):
    name = "wlc"

    def make_indexes(self) -> tuple[BestIndex, ...]:
        self.least = BestIndex(wlc_key)
        return (self.least,)

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        return self.least.best()

    def load_changed(self, dest: RealServer) -> None:
        # IndexedScheduler.load_changed with wlc_key inlined: twice per short connection, so
        # one frame here instead of three (the loop over indexes, update, the key function)
        if dest.available:
            w = dest.weight
            if w > 0 and not dest.overload:
                ratio = (((dest.activeconns << 8) + dest.total) << RATIO_SHIFT) // w
                self.least.set_key(dest, (ratio << SEQ_BITS) | (SEQ_MASK - (dest.seq & SEQ_MASK)))
            else:
                self.least.set_key(dest, None)
