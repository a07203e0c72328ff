"""wrr: weighted round robin (ip_vs_wrr.c), with the kernel's current-weight walk and its two
failure texts."""

from __future__ import annotations

from math import gcd

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, Scheduler
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.types import Packet

HEAD = -1
OVERLOADED_TEXT = "no destination available: all destinations are overloaded"


@register
class WeightedRoundRobin(Scheduler):
    name = "wrr"

    def __init__(self, svc: VirtualService) -> None:
        super().__init__(svc)
        # cl is a list index: every list change resets it to HEAD, so it stays valid between changes.
        self.cl = HEAD
        self.di, self.mw = self._weights()
        self.cw = self.mw

    def _weights(self) -> tuple[int, int]:
        """(di, mw): gcd of the positive weights (1 if none); max weight - (di - 1)."""
        g = 0
        top = 0
        for d in self.svc.dests:
            w = d.weight
            if w > 0:
                g = gcd(g, w)
            top = max(top, w)
        self._gcd, self._top = g, top
        di = g or 1
        return di, top - (di - 1)

    def _changed(self, added: RealServer | None = None) -> None:
        self.cl = HEAD
        if added is None:
            self.di, self.mw = self._weights()
        else:
            # one server more: fold its weight into the gcd and maximum instead of a rescan
            w = added.weight
            g = gcd(self._gcd, w) if w > 0 else self._gcd
            top = self._top if self._top >= w else w
            self._gcd, self._top = g, top
            di = g or 1
            self.di, self.mw = di, top - (di - 1)
        if self.cw > self.mw or self.cw == 0:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def add_dest(self, dest: RealServer) -> None:
        self._changed(dest)

    def del_dest(self, dest: RealServer, index: int) -> None:
        self._changed()

    def upd_dest(self, dest: RealServer) -> None:
        self._changed()

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        if self.mw == 0:
            self.last_fail_text = self.no_dest_text
            return None
        dests = self.svc.dests
        n = len(dests)
        last = pos = self.cl
        stop: int | None = None
        last_pass = restarted = False
        while True:
            cw = self.cw
            for i in range(pos + 1, n):
                d = dests[i]
                if not d.overload and d.weight >= cw:
                    self.cl = i
                    return d
                if i == stop:
                    self.cl = i
                    self.last_fail_text = OVERLOADED_TEXT
                    return None
            pos = HEAD
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                if last_pass or last == HEAD:
                    self.cl = HEAD
                    self.last_fail_text = OVERLOADED_TEXT
                    return None
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last != HEAD:
                stop = last
