"""GET /metrics over HTTP: content type, parseable body, 404 elsewhere, a failing scrape answers 500."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from pylvs.core.director import Director
from pylvs.metrics.model import LiveRows, Rows
from pylvs.metrics.server import MetricsServer


async def _get(port: int, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


def test_metrics_over_http(director: Director) -> None:
    async def main() -> None:
        srv = MetricsServer(LiveRows(director))
        await srv.start("127.0.0.1", 0)
        try:
            status, ctype, body = await _get(srv.port, "/metrics")
            assert status == 200
            assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
            names = {f.name for f in text_string_to_metric_families(body)}
            assert {"node_ipvs_connections", "node_ipvs_backend_weight"} <= names
            assert (await _get(srv.port, "/nope"))[0] == 404
            assert srv.scrapes == 1
        finally:
            await srv.stop()

    asyncio.run(main())


def test_failing_scrape_is_a_500_not_a_crash() -> None:
    def broken() -> Rows:
        raise RuntimeError("boom")

    async def main() -> None:
        srv = MetricsServer(broken)
        await srv.start("127.0.0.1", 0)
        try:
            status, _, body = await _get(srv.port, "/metrics")
            assert status == 500 and "scrape failed" in body
        finally:
            await srv.stop()

    asyncio.run(main())
