"""The one interface every checker kind implements, and what a check returns."""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from pylvs.core.types import IPAddr
from pylvs.health.config.model import CheckerConf


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    reason: str  # why it passed or failed, for the event log and the API
    weight: int | None = None  # a new weight (MISC_CHECK with misc_dynamic), else None


@dataclass(frozen=True, slots=True)
class Target:
    """Where one checker connects, with the effective (inherited) settings it needs."""

    addr: IPAddr
    port: int
    timeout: float  # connect_timeout: bounds the whole exchange
    bindto: IPAddr | None = None
    bind_port: int | None = None
    virtualhost: str | None = None
    delay_loop: float = 60.0

    @property
    def family(self) -> int:
        return socket.AF_INET if self.addr.version == 4 else socket.AF_INET6

    def sockaddr(self) -> tuple[str, int]:
        return (str(self.addr), self.port)

    def label(self) -> str:
        a = f"[{self.addr}]" if self.addr.version == 6 else str(self.addr)
        return f"{a}:{self.port}"


class Checker(ABC):
    """One checker of one real server. `check()` runs one probe; the manager decides what it means."""

    kind: ClassVar[str]

    def __init__(self, conf: CheckerConf, target: Target) -> None:
        self.conf = conf
        self.target = target

    @abstractmethod
    async def check(self) -> CheckResult: ...


def open_socket(target: Target, kind: socket.SocketKind) -> socket.socket:
    """A non-blocking socket of the target's family, bound to bindto/bind_port when configured."""
    sock = socket.socket(target.family, kind)
    try:
        sock.setblocking(False)
        if target.bindto is not None or target.bind_port:
            src = str(target.bindto) if target.bindto is not None else ""
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((src, target.bind_port or 0))
    except OSError:
        sock.close()
        raise
    return sock


def os_reason(what: str, e: OSError) -> str:
    # asyncio words connect errors as "Connect call failed (...)": prefer the errno's own text
    text = os.strerror(e.errno) if e.errno else (e.strerror or e.__class__.__name__)
    return f"{what}: {text}"
