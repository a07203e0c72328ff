"""twos: weighted power of two choices (ip_vs_twos.c, kernel 6.12): two servers drawn at random in
proportion to their weights; the one with the lower conn_overhead / weight wins. env.rng is the
random source, so tests can replay a run."""

from __future__ import annotations

from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, Scheduler, conn_overhead, eligible
from pylvs.core.service import RealServer
from pylvs.core.types import Packet


def _s32(v: int) -> int:
    """C int arithmetic: the kernel multiplies weight by overhead in 32 bits."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


@register
class PowerOfTwoChoices(Scheduler):
    name = "twos"

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        candidates = [d for d in self.svc.dests if eligible(d)]
        if not candidates:
            return None
        total = sum(d.weight for d in candidates) + 1
        r1 = env.rng.randrange(total)
        r2 = env.rng.randrange(total)
        choice1 = choice2 = None
        for d in candidates:
            r1 -= d.weight
            r2 -= d.weight
            if r1 <= 0 and choice1 is None:
                choice1 = d
            if r2 <= 0 and choice2 is None:
                choice2 = d
            if choice1 is not None and choice2 is not None:
                break
        assert choice1 is not None and choice2 is not None  # r <= total - 1 = sum of weights
        if _s32(choice2.weight * conn_overhead(choice1)) > _s32(choice1.weight * conn_overhead(choice2)):
            return choice2
        return choice1
