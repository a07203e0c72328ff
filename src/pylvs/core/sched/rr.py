"""rr: round robin (ip_vs_rr.c)."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, Scheduler, eligible
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.types import Packet


@register
class RoundRobin(Scheduler):
    name = "rr"

    def __init__(self, svc: VirtualService) -> None:
        super().__init__(svc)
        self.pos: RealServer | None = None  # None is the list head

    def del_dest(self, dest: RealServer, index: int) -> None:
        # The deleted server's predecessor becomes the position, so the next pick is its successor.
        if self.pos is dest:
            self.pos = self.svc.dests[index - 1] if index > 0 else None

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        dests = self.svc.dests
        if self.pos is None:
            order = dests
        else:
            i = dests.index(self.pos) + 1
            order = dests[i:] + dests[:i]  # after pos to the end, then the start up to pos
        for d in order:
            if eligible(d):
                self.pos = d
                return d
        return None
