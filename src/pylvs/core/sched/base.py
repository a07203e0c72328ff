"""The scheduler interface (ip_vs_scheduler): one small class per algorithm, registered by name."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import ClassVar

from pylvs.core.service import RealServer, VirtualService
from pylvs.core.sysctl import Sysctls
from pylvs.core.types import Packet, Proto


@dataclass(slots=True)
class SchedEnv:
    """What a scheduler may consult besides the service and the packet: time, chance, sysctls."""

    now: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    sysctl: Sysctls = field(default_factory=Sysctls)


class Scheduler:
    """Base class. A scheduler sees the service's list in list order (svc.dests, newest first).

    Hooks mirror the kernel's: init (service creation or switch to this scheduler, with the current
    list), add_dest / del_dest / upd_dest after the list changed, schedule for each new connection,
    tick for periodic work (lblc/lblcr garbage collection), done when the service goes away or
    switches scheduler. `load_changed` is ours: it tells a scheduler that keeps an index that a
    server's connection counts changed.
    """

    name: ClassVar[str] = ""
    # The text the kernel logs when it gives up.
    no_dest_text: ClassVar[str] = "no destination available"
    # What the kernel logged for the last failed schedule() ("" = nothing); wrr may say
    # "no destination available: all destinations are overloaded". Read it after a None.
    last_fail_text: str = "no destination available"

    def __init__(self, svc: VirtualService) -> None:
        self.svc = svc

    def add_dest(self, dest: RealServer) -> None:
        """Called after `dest` was inserted at the front of the list."""

    def del_dest(self, dest: RealServer, index: int) -> None:
        """Called after `dest` was removed from list position `index` (dest.available is False)."""

    def upd_dest(self, dest: RealServer) -> None:
        """Called after `dest` was edited in place (even if nothing changed)."""

    def load_changed(self, dest: RealServer) -> None:
        """Connection counters of `dest` changed (active, total)."""

    def tick(self, env: SchedEnv) -> None:
        """Periodic work; called at least every 60 s of model time."""

    def done(self) -> None:
        """The service is deleted or switches to another scheduler."""

    def schedule(self, pkt: Packet, env: SchedEnv) -> RealServer | None:
        raise NotImplementedError


def eligible(d: RealServer) -> bool:
    """Most schedulers choose only servers with weight > 0 and the OVERLOAD flag clear."""
    return d.weight > 0 and not d.overload


def conn_overhead(d: RealServer) -> int:
    """active x 256 + total (= 257 active + inactive) on the reference kernels."""
    return (d.activeconns << 8) + d.total


class TableScheduler(Scheduler):
    """A scheduler whose lookup table is rebuilt from the list on set-up and after every add, edit
    and delete of a server (dh, sh, mh): subclasses implement `rebuild()`."""

    def __init__(self, svc: VirtualService) -> None:
        super().__init__(svc)
        self.rebuild()

    def rebuild(self) -> None:
        raise NotImplementedError

    def add_dest(self, dest: RealServer) -> None:
        self.rebuild()

    def del_dest(self, dest: RealServer, index: int) -> None:
        self.rebuild()

    def upd_dest(self, dest: RealServer) -> None:
        self.rebuild()


PORT_PROTOS = (Proto.TCP, Proto.UDP, Proto.SCTP)


def hash_port(svc: VirtualService, flag: int, pkt: Packet) -> int:
    """The port a hashing scheduler mixes in: the packet's source port when the service sets `flag`
    (sh-port / mh-port) and the protocol has ports, else 0."""
    if svc.flags & flag and pkt.protocol in PORT_PROTOS:
        return pkt.sport
    return 0
