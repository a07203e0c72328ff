"""`pylvsd --metrics HOST:PORT`: GET /metrics in the Prometheus text format; read-only, no token."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

from aiohttp import web

from pylvs.metrics.exposition import CONTENT_TYPE, Exposition
from pylvs.metrics.model import Extras, Rows

log = logging.getLogger("pylvs.metrics")

_INDEX = b"""<!doctype html><title>pylvs metrics</title><p><a href="/metrics">/metrics</a></p>\n"""


class MetricsServer:
    """Serves scrapes rendered from `rows()` and `extras()`, both called once per scrape."""

    def __init__(self, rows: Callable[[], Rows], extras: Callable[[], Extras] | None = None) -> None:
        self.rows = rows
        self.extras = extras
        self.expo = Exposition()
        self.scrapes = 0
        self._runner: web.AppRunner | None = None
        self.port = 0  # the bound port once started (useful with port 0)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        return app

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=_INDEX, content_type="text/html")

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        # A scrape makes tens of thousands of short-lived tuples and no cycles: keep the collector
        # from walking the whole heap (every rule and server) in the middle of it.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            parts = self.expo.render_parts(self.rows(), self.extras() if self.extras else None)
        except Exception:  # a scrape must never take the daemon down; say what broke
            log.exception("metrics scrape failed")
            return web.Response(status=500, text="scrape failed; see the daemon log\n")
        finally:
            if gc_was_on:
                gc.enable()
        self.scrapes += 1
        resp = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
        resp.content_length = sum(len(p) for p in parts)
        await resp.prepare(request)
        for p in parts:
            await resp.write(p)
        await resp.write_eof()
        return resp

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # aiohttp keeps the listening sockets here
        socks = getattr(server, "sockets", None) or []
        self.port = socks[0].getsockname()[1] if socks else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
