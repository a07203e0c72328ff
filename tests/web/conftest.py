"""A daemon state (rules, event log) in this process, and the dashboard serving it on loopback."""

from __future__ import annotations

import ipaddress
from typing import Any

from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from pylvs.daemon.changes import Change
from pylvs.daemon.rules import Rules
from pylvs.daemon.state import DaemonState

TOKEN = "s3cret-token"
WEB = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address("127.0.0.1"), 8080)
FWM = ServiceKey.for_fwmark(7)


def dest(addr: str, port: int, weight: int, fwd: Fwd = Fwd.MASQ) -> DestConfig:
    return DestConfig(ipaddress.ip_address(addr), port, fwd, weight)


async def populated_state() -> Any:
    state = DaemonState(Rules())
    await state.apply(
        [
            Change("add_service", key=WEB, svc=ServiceConfig("wrr")),
            Change("add_dest", key=WEB, dest=dest("127.0.0.2", 8080, 3)),
            Change("add_dest", key=WEB, dest=dest("127.0.0.3", 8080, 1)),
            Change("add_service", key=FWM, svc=ServiceConfig("rr")),
            Change("add_dest", key=FWM, dest=dest("127.0.0.4", 0, 2, Fwd.DROUTE)),
        ],
        "pylvsadm",
    )
    return state
