"""none: the pseudo-scheduler; every new connection fails (used with persistence-only setups)."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, Scheduler
from pylvs.core.service import RealServer
from pylvs.core.types import Packet


@register
class NoScheduler(Scheduler):
    name = "none"

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        return None
