"""The dashboard's HTTP side: the page and its assets, /state, /events, /connections, the SSE stream,
and weight changes through the control API mounted under /api (token required)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from pylvs.daemon.changes import Change
from pylvs.web.app import Dashboard, WebServer
from tests.web.conftest import TOKEN, WEB, dest, populated_state


def run(
    test: Callable[[Any, aiohttp.ClientSession, str], Awaitable[None]], token: str | None = TOKEN
) -> None:
    async def main() -> None:
        state = await populated_state()
        srv = WebServer(Dashboard(state, token))
        await srv.start("127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as http:
                await test(state, http, f"http://127.0.0.1:{srv.port}")
        finally:
            await srv.stop()

    asyncio.run(main())


def test_page_and_assets_are_served_from_the_package() -> None:
    async def t(state: Any, http: aiohttp.ClientSession, base: str) -> None:
        async with http.get(base + "/") as r:
            page = await r.text()
            assert r.status == 200 and r.content_type == "text/html"
        assert 'src="static/app.js"' in page and "http" not in page.replace("http-equiv", "")
        for name, ctype in (("app.js", "text/javascript"), ("app.css", "text/css")):
            async with http.get(f"{base}/static/{name}") as r:
                assert r.status == 200 and r.content_type == ctype
                assert "//cdn" not in await r.text()
        async with http.get(base + "/static/../daemon.py") as r:
            assert r.status == 404

    run(t)


def test_state_lists_services_and_servers_in_listing_order() -> None:
    async def t(state: Any, http: aiohttp.ClientSession, base: str) -> None:
        async with http.get(base + "/state") as r:
            st = await r.json()
        assert st["writable"] is True
        titles = [s["title"] for s in st["services"]]
        assert titles == ["TCP  127.0.0.1:8080", "FWM  7"]
        web = st["services"][0]
        assert web["id"] == "tcp:127.0.0.1:8080" and web["scheduler"] == "wrr"
        # sorted by address, as ipvsadm -Ln lists them
        assert [(d["id"], d["fwd"], d["weight"]) for d in web["dests"]] == [
            ("127.0.0.2:8080", "Masq", 3),
            ("127.0.0.3:8080", "Masq", 1),
        ]
        assert st["services"][1]["dests"][0]["fwd"] == "Route"

    run(t)


def test_events_and_connections_json() -> None:
    async def t(state: Any, http: aiohttp.ClientSession, base: str) -> None:
        async with http.get(base + "/events") as r:
            evs = (await r.json())["events"]
        assert [e["kind"] for e in evs][:2] == ["add_service", "add_dest"]
        assert evs[0]["source"] == "pylvsadm"
        async with http.get(base + "/events?since=x") as r:
            assert r.status == 400
        async with http.get(base + "/connections?q=10.0&limit=5") as r:
            data = await r.json()
        assert data == {"total": 0, "matched": 0, "connections": []}
        async with http.get(base + "/connections?limit=-1") as r:
            assert r.status == 400

    run(t)


async def _read_sse(resp: aiohttp.ClientResponse, want: Callable[[str, Any], bool], timeout: float) -> float:
    """Read events until `want(event, data)`; returns the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    event = ""
    async with asyncio.timeout(timeout):
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and want(event, json.loads(line[6:])):
                return loop.time() - start
    raise AssertionError("stream ended")


def test_stream_pushes_state_and_a_change_at_once() -> None:
    async def t(state: Any, http: aiohttp.ClientSession, base: str) -> None:
        async with http.get(base + "/stream") as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            await _read_sse(resp, lambda e, d: e == "state", 5)
            await state.apply([Change("edit_dest", key=WEB, dest=dest("127.0.0.2", 8080, 42))], "pylvsadm")

            def weight42(e: str, d: Any) -> bool:
                return e == "state" and any(x["weight"] == 42 for s in d["services"] for x in s["dests"])

            took = await _read_sse(resp, weight42, 5)
            assert took < 0.5  # pushed on the event, not on the next tick

    run(t)


def test_weight_change_needs_the_token() -> None:
    async def t(state: Any, http: aiohttp.ClientSession, base: str) -> None:
        url = f"{base}/api/services/tcp:127.0.0.1:8080/dests/127.0.0.2:8080"
        body = {"addr": "127.0.0.2", "port": 8080, "fwd": 0, "weight": 0}
        async with http.put(url, json=body) as r:
            assert r.status in (401, 403)
        async with http.put(url, json=body, headers={"Authorization": "Bearer wrong-token"}) as r:
            assert r.status in (401, 403)
        snap = state.snapshot()
        assert snap.services[0].dests[1].weight == 3  # snapshot order: newest first
        async with http.put(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200, await r.text()
        assert state.snapshot().services[0].dests[1].weight == 0
        assert state.events.recent(0, 1)[0].kind == "edit_dest"

    run(t)


def test_without_a_token_the_page_is_read_only() -> None:
    async def t(state: Any, http: aiohttp.ClientSession, base: str) -> None:
        async with http.get(base + "/state") as r:
            assert (await r.json())["writable"] is False
        async with http.put(f"{base}/api/services/tcp:127.0.0.1:8080/dests/127.0.0.2:8080", json={}) as r:
            assert r.status in (404, 405)

    run(t, token=None)


class _Manager:
    """The two HealthManager methods the dashboard reads."""

    def dest_health(self) -> dict[tuple[Any, str, int], str]:
        return {(WEB, "127.0.0.2", 8080): "up", (WEB, "127.0.0.3", 8080): "down"}

    def state(self) -> tuple[Any, ...]:
        from pylvs.health.manager import CheckerView, RealServerView, VirtualServerView

        def rs(addr: str, ok: bool) -> RealServerView:
            return RealServerView(addr, 8080, ok, 1, "", 0.0, (CheckerView("TCP_CHECK", ok, 0, ok, "", 1.0),))

        return (
            VirtualServerView(
                "vs", (), True, 1, 0, 0, False, (rs("127.0.0.2", True), rs("127.0.0.3", False))
            ),
        )


def test_health_from_the_checkers_is_on_the_page() -> None:
    async def t(state: Any, http: aiohttp.ClientSession, base: str) -> None:
        state.health = type("Addon", (), {"manager": _Manager()})()
        async with http.get(base + "/state") as r:
            st = await r.json()
        dests = {d["id"]: d for d in st["services"][0]["dests"]}
        assert (dests["127.0.0.2:8080"]["health"], dests["127.0.0.2:8080"]["last_ok"]) == ("up", True)
        assert (dests["127.0.0.3:8080"]["health"], dests["127.0.0.3:8080"]["last_ok"]) == ("down", False)
        assert dests["127.0.0.3:8080"]["checker"] == "TCP_CHECK"
        assert st["services"][1]["dests"][0]["health"] == ""  # unchecked

    run(t)
