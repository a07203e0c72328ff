"""TCP_CHECK: the real server is alive when a TCP connection to it completes in connect_timeout."""

from __future__ import annotations

import asyncio
import socket

from pylvs.health.checkers.base import Checker, CheckResult, open_socket, os_reason


class TcpCheck(Checker):
    kind = "TCP_CHECK"

    async def check(self) -> CheckResult:
        t = self.target
        loop = asyncio.get_running_loop()
        try:
            sock = open_socket(t, socket.SOCK_STREAM)
        except OSError as e:
            return CheckResult(False, os_reason("cannot open a socket", e))
        try:
            async with asyncio.timeout(t.timeout):
                await loop.sock_connect(sock, t.sockaddr())
        except TimeoutError:
            return CheckResult(False, f"TCP connect to {t.label()} timed out after {t.timeout:g}s")
        except OSError as e:
            return CheckResult(False, os_reason(f"TCP connect to {t.label()}", e))
        finally:
            sock.close()
        return CheckResult(True, f"TCP connect to {t.label()} succeeded")
