"""pylvsd's hook for `--web HOST:PORT` (see pylvs.daemon.main)."""

from __future__ import annotations

from typing import Any

from pylvs.web.app import Dashboard, WebServer


async def start(state: Any, host: str, port: int, token: str | None = None) -> WebServer:
    server = WebServer(Dashboard(state, token))
    await server.start(host, port)
    return server
