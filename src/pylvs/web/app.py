"""The dashboard's HTTP side: the page, its JSON, a server-sent event stream, and the control API.

Reading needs nothing. Changing (weight, quiesce, restore) goes through the daemon's own control API,
mounted under /api with the daemon's bearer token, exactly as a remote pylvsadm would use it; when the
daemon has no token the page stays read-only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from importlib import resources
from typing import Any

from aiohttp import web

from pylvs.metrics.health import health_map
from pylvs.web.view import Order, connections_json, listing_order, state_json

log = logging.getLogger("pylvs.web")

STATE_PERIOD = 1.0  # seconds between state pushes on the stream (a rule change pushes at once)
STATE_BUDGET = 0.1  # at most this share of a core for periodic pushes: big tables refresh less often
STATE_MAX_AGE = 0.5  # several open pages share one rendering this fresh
RECENT_EVENTS = 100
SHUTDOWN_TIMEOUT = 2.0  # seconds open requests get when pylvsd stops
_STATIC = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _load_static() -> dict[str, bytes]:
    base = resources.files("pylvs.web") / "static"
    return {name: (base / name).read_bytes() for name in _STATIC}


class Dashboard:
    """Serves the page for a running daemon's `state` (a pylvs.daemon.state.DaemonState)."""

    def __init__(self, state: Any, token: str | None = None) -> None:
        self.state = state
        self.token = token
        self.static = _load_static()
        self._cache: tuple[float, int, bytes] | None = None
        self.clients = 0
        self.cost = 0.0  # CPU seconds the last state rendering took
        self.streams: set[asyncio.Task[Any]] = set()  # open /stream handlers, ended on shutdown
        self._order: tuple[int, Order] | None = None

    # -- data ------------------------------------------------------------------------------------
    def _generation(self) -> int:
        return int(getattr(self.state.director.services, "generation", 0))

    def state_bytes(self) -> bytes:
        now = time.monotonic()
        gen = self._generation()
        c = self._cache
        if c is not None and c[1] == gen and now - c[0] < STATE_MAX_AGE:
            return c[2]
        t0 = time.process_time()
        extra = {"engine": getattr(self.state, "engine_name", ""), "writable": self.token is not None}
        snap = self.state.snapshot()
        if self._order is None or self._order[0] != gen:
            self._order = (gen, listing_order(snap))  # the sort parses every address: once per rule set
        body = json.dumps(
            state_json(snap, health_map(self.state), time.time(), extra, self._order[1])
        ).encode()
        self._cache = (now, gen, body)
        self.cost = time.process_time() - t0
        return body

    def period(self) -> float:
        """Seconds until the next periodic push: 1 s, longer when rendering is dear (10,000 servers)."""
        return max(STATE_PERIOD, self.cost / STATE_BUDGET)

    def events_json(self, since: int = 0) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.state.events.recent(since, RECENT_EVENTS)]

    # -- handlers --------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        return web.Response(body=self.static["index.html"], content_type="text/html", charset="utf-8")

    async def static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.static:
            raise web.HTTPNotFound()
        return web.Response(body=self.static[name], content_type=_STATIC[name], charset="utf-8")

    async def get_state(self, request: web.Request) -> web.Response:
        return web.Response(body=self.state_bytes(), content_type="application/json")

    async def get_events(self, request: web.Request) -> web.Response:
        since = request.query.get("since", "0")
        if not since.isdigit():
            raise web.HTTPBadRequest(text="since must be a non-negative integer\n")
        body = {"events": self.events_json(int(since)), "last": self.state.events.last_seq}
        return web.json_response(body)

    async def get_connections(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")[:200]
        limit = request.query.get("limit", "200")
        if not limit.isdigit():
            raise web.HTTPBadRequest(text="limit must be a non-negative integer\n")
        return web.json_response(connections_json(self.state.connections(), q, min(int(limit), 5000)))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `state` every second and right after a change, `event` for each event."""
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        q = self.state.events.subscribe()
        self.clients += 1
        me = asyncio.current_task()
        if me is not None:
            self.streams.add(me)
        try:
            await resp.write(b"event: events\ndata: " + json.dumps(self.events_json()).encode() + b"\n\n")
            await resp.write(b"event: state\ndata: " + self.state_bytes() + b"\n\n")
            next_state = loop.time() + self.period()
            while True:
                try:
                    ev = await asyncio.wait_for(q.get(), timeout=max(next_state - loop.time(), 0.01))
                except TimeoutError:
                    ev = None
                evs = [] if ev is None else [ev]
                while not q.empty():
                    evs.append(q.get_nowait())
                for e in evs:
                    await resp.write(b"event: event\ndata: " + json.dumps(e.to_json()).encode() + b"\n\n")
                if evs:
                    self._cache = None  # the rules may have changed: never show the old ones
                if evs or loop.time() >= next_state:
                    await resp.write(b"event: state\ndata: " + self.state_bytes() + b"\n\n")
                    next_state = loop.time() + self.period()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.clients -= 1
            self.state.events.unsubscribe(q)
            if me is not None:
                self.streams.discard(me)
        return resp

    def close_streams(self) -> None:
        """End every open stream (a browser would otherwise hold the daemon's shutdown)."""
        for t in list(self.streams):
            t.cancel()

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/static/{name}", self.static_file)
        r.add_get("/state", self.get_state)
        r.add_get("/events", self.get_events)
        r.add_get("/connections", self.get_connections)
        r.add_get("/stream", self.stream)
        if self.token is not None:
            from pylvs.daemon.api import make_app

            app.add_subapp("/api/", make_app(self.state, token=self.token))
        return app


class WebServer:
    """`pylvsd --web HOST:PORT`: the handle pylvsd keeps (stop() on shutdown)."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(
            self.dashboard.app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        socks = getattr(site._server, "sockets", None) or []
        self.port = socks[0].getsockname()[1] if socks else port

    async def stop(self) -> None:
        self.dashboard.close_streams()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
