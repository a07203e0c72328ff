"""mh: Maglev hashing (ip_vs_mh.c): a 4093-slot lookup table populated from per-server permutations
(hsiphash with fixed keys), weighted by last_weight, chosen by the client address (and port with
mh-port); mh-fallback re-hashes with growing offsets."""

from __future__ import annotations

import errno
from math import gcd

from pylvs.core.errors import IPVSError, Op
from pylvs.core.sched import register
from pylvs.core.sched.base import SchedEnv, TableScheduler, eligible, hash_port
from pylvs.core.sched.hashing import MASK32, fold
from pylvs.core.sched.siphash import hsiphash_u32
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.types import IPAddr, Packet, SvcFlags

TAB_SIZE = 4093  # primes[CONFIG_IP_VS_MH_TAB_INDEX - 8] with the default index 12
TAB_BITS = 12 // 2  # weights are shifted down to about this many bits
KEY1 = 2654435761
KEY2 = 2654446892
MH_FALLBACK = SvcFlags.SCHED1
MH_PORT = SvcFlags.SCHED2


def mh_hashkey(addr: IPAddr, port: int, key: int, offset: int) -> int:
    return hsiphash_u32((offset + port + fold(addr)) & MASK32, key)


@register
class MaglevHashing(TableScheduler):
    name = "mh"

    def __init__(self, svc: VirtualService) -> None:
        if len(svc.dests) > TAB_SIZE:
            # ip_vs_mh_init_svc: the table cannot hold them; the kernel refuses the scheduler
            # (only `-E -s mh` can get here: a new service has no servers)
            raise IPVSError(Op.EDIT_SERVICE, errno.EINVAL, "mh: more real servers than table slots")
        self.lookup: list[RealServer | None] = [None] * TAB_SIZE
        super().__init__(svc)

    def rebuild(self) -> None:
        dests = self.svc.dests
        if len(dests) > TAB_SIZE:
            return  # the kernel refuses and leaves the table as it was
        g = 0
        for d in dests:
            if d.last_weight > 0:
                g = gcd(g, d.last_weight)
        if g < 1:
            self.lookup = [None] * TAB_SIZE
            return
        top = max(d.last_weight for d in dests) // g
        rshift = max(top.bit_length() - TAB_BITS, 0)
        # Per server: [perm (next slot to try), skip, turns], in list order.
        setups: list[tuple[RealServer, list[int], int, int]] = []
        for d in dests:
            offset = mh_hashkey(d.addr, d.port, KEY1, 0) % TAB_SIZE
            skip = mh_hashkey(d.addr, d.port, KEY2, 0) % (TAB_SIZE - 1) + 1
            lw = d.last_weight
            turns = ((lw // g) >> rshift) or (1 if lw else 0)
            if turns >= 1:
                setups.append((d, [offset], skip, turns))
        table: list[RealServer | None] = [None] * TAB_SIZE
        taken = bytearray(TAB_SIZE)
        filled = 0
        while True:
            for d, perm, skip, turns in setups:
                for _ in range(turns):
                    c = perm[0]
                    while taken[c]:
                        c += skip
                        if c >= TAB_SIZE:
                            c -= TAB_SIZE
                    perm[0] = c
                    taken[c] = 1
                    table[c] = d
                    filled += 1
                    if filled == TAB_SIZE:
                        self.lookup = table
                        return

    def slot_of(self, pkt: Packet) -> int:
        return mh_hashkey(pkt.saddr, hash_port(self.svc, MH_PORT, pkt), KEY1, 0) % TAB_SIZE

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        port = hash_port(self.svc, MH_PORT, pkt)
        ihash = mh_hashkey(pkt.saddr, port, KEY1, 0) % TAB_SIZE
        d = self.lookup[ihash]
        if d is None:
            return None
        if eligible(d):
            return d
        if not self.svc.flags & MH_FALLBACK:
            return None
        for k in range(TAB_SIZE):
            d = self.lookup[mh_hashkey(pkt.saddr, port, KEY1, (k + ihash) % TAB_SIZE) % TAB_SIZE]
            if d is None:
                return None
            if eligible(d):
                return d
        return None
