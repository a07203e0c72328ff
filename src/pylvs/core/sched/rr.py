"""rr: round robin (ip_vs_rr.c)."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, Scheduler
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.types import Packet


@register
class RoundRobin(Scheduler):
    name = "rr"

    def __init__(self, svc: VirtualService) -> None:
        super().__init__(svc)
        self.pos: RealServer | None = None  # None is the list head
        self._pos_index = -1  # where pos was last seen; re-found when the list shifted

    def del_dest(self, dest: RealServer, index: int) -> None:
        # The deleted server's predecessor becomes the position, so the next pick is its successor.
        if self.pos is dest:
            self.pos = self.svc.dests[index - 1] if index > 0 else None
            self._pos_index = index - 1

    def _index_of_pos(self) -> int:
        dests = self.svc.dests
        i = self._pos_index
        if self.pos is None:
            return -1
        if not (0 <= i < len(dests) and dests[i] is self.pos):
            i = dests.index(self.pos)
        return i

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        dests = self.svc.dests
        n = len(dests)
        p = self._index_of_pos()
        # After pos to the end of the list, then (if pos is a server) from the start up to pos.
        for k in range(1, n + 1):
            i = p + k
            if p < 0 and i >= n:
                break
            i %= n
            d = dests[i]
            if d.weight > 0 and not d.overload:  # eligible(d), inlined (once per new connection)
                self.pos = d
                self._pos_index = i
                return d
        return None
