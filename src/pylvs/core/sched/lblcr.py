"""lblcr: locality-based least connection with replication (ip_vs_lblcr.c): each destination
address keeps a set of servers that grows when its best member is overloaded and sheds its busiest
member when it has not changed for lblcr_expiration."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, conn_overhead
from pylvs.core.sched.locality import LocalityScheduler
from pylvs.core.service import RealServer
from pylvs.core.types import Packet


class DestSet:
    """Members, newest first, and the time of the last change."""

    __slots__ = ("lastmod", "members")

    def __init__(self, dest: RealServer, now: float) -> None:
        self.members = [dest]
        self.lastmod = now

    def insert(self, dest: RealServer, now: float) -> None:
        if dest not in self.members:
            self.members.insert(0, dest)
            self.lastmod = now

    def erase(self, dest: RealServer, now: float) -> None:
        if dest in self.members:
            self.members.remove(dest)
            self.lastmod = now

    def least(self) -> RealServer | None:
        """Least overhead/weight among usable members; ties keep the earlier member."""
        it = iter(self.members)
        least = None
        for d in it:
            if not d.overload and d.weight > 0 and d.available:
                least = d
                break
        if least is None:
            return None
        loh = conn_overhead(least)
        for d in it:
            if d.overload:
                continue
            doh = conn_overhead(d)
            if loh * d.weight > doh * least.weight and d.available:
                least, loh = d, doh
        return least

    def most(self) -> RealServer | None:
        """Most overhead/weight among members with weight > 0 (deleted or overloaded included)."""
        it = iter(self.members)
        most = None
        for d in it:
            if d.weight > 0:
                most = d
                break
        if most is None:
            return None
        moh = conn_overhead(most)
        for d in it:
            doh = conn_overhead(d)
            if moh * d.weight < doh * most.weight and d.weight > 0:
                most, moh = d, doh
        return most


@register
class LocalityLeastConnectionReplicated(LocalityScheduler[DestSet]):
    name = "lblcr"

    def tick(self, env: SchedEnv) -> None:
        self.table.tick(env.now, env.sysctl.lblcr_expiration)

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        self.tick(env)
        now = env.now
        en = self.table.get(pkt.daddr)
        if en is None:
            d = self.least.best()
            if d is None:
                self.last_fail_text = ""  # the kernel only debug-logs this case
                return None
            self.table.add(pkt.daddr, now, DestSet(d, now))
            return d
        en.lastuse = now
        dset = en.value
        d = dset.least()
        if len(dset.members) > 1 and now > dset.lastmod + env.sysctl.lblcr_expiration:
            m = dset.most()
            if m is not None:
                dset.erase(m, now)
        if d is not None and not self.lblc_overloaded(d):
            return d
        d = self.least.best()
        if d is None:
            self.last_fail_text = self.no_dest_text
            return None
        dset.insert(d, now)
        return d
