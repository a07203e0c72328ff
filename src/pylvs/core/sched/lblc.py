"""lblc: locality-based least connection (ip_vs_lblc.c): remember which server each destination
address went to, and stay there while that server is usable and not lblc-overloaded."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv
from pylvs.core.sched.locality import LocalityScheduler
from pylvs.core.service import RealServer
from pylvs.core.types import Packet


@register
class LocalityLeastConnection(LocalityScheduler[RealServer]):
    name = "lblc"

    def tick(self, env: SchedEnv) -> None:
        self.table.tick(env.now, env.sysctl.lblc_expiration)

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        self.tick(env)
        en = self.table.get(pkt.daddr)
        if en is not None:
            en.lastuse = env.now
            d = en.value
            # The threshold OVERLOAD flag is not looked at on this path.
            if d.available and d.weight > 0 and not self.lblc_overloaded(d):
                return d
        d2 = self.least.best()
        if d2 is None:
            self.last_fail_text = self.no_dest_text
            return None
        if en is None or en.value is not d2:
            # A different server replaces the entry by a new one (fresh last-use, bucket head).
            if en is not None:
                self.table.remove(en)
            self.table.add(pkt.daddr, env.now, d2)
        return d2
