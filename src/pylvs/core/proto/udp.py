"""UDP (ip_vs_proto_udp.c): one state, never active; a reply assures the controlling template."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.core.proto import Direction, Protocol
from pylvs.core.types import Packet, Proto, Timeouts

if TYPE_CHECKING:
    from pylvs.core.sysctl import Sysctls

NORMAL = 0
NAMES = ("UDP",)


class UDP(Protocol):
    proto = Proto.UDP
    names = NAMES
    active = frozenset()

    def may_schedule(self, pkt: Packet, sysctl: Sysctls) -> bool:
        return True  # any datagram

    def next_state(self, state: int, pkt: Packet, direction: Direction, sysctl: Sysctls) -> int:
        return NORMAL

    def timeouts(self, t: Timeouts) -> tuple[int, ...]:
        return (t.udp,)
