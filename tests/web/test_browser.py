"""The dashboard in a real browser (Debian's headless Chromium over the DevTools protocol), against a
real pylvsd: the table matches `pylvsadm -Ln`, a change made with pylvsadm shows within two seconds,
and with the token a weight is set, quiesced and restored from the page. Saves artifacts/dashboard.png."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port
from tests.web.cdp import Browser, find_chromium
from tests.web.pylvsd import Pylvsd

TOKEN = "dashboard-token-1"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM = find_chromium()

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


def listing(text: str) -> list[dict[str, Any]]:
    """`pylvsadm -Ln` as [{title, sched, dests: [[server, fwd, weight, active, inactive]]}]."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines()[3:]:
        parts = line.split()
        if line.startswith("  ->"):
            out[-1]["dests"].append(parts[1:6])
        elif parts:
            out.append({"title": f"{parts[0]}  {parts[1]}", "sched": " ".join(parts[2:]), "dests": []})
    return out


PAGE_TABLE = """[...document.querySelectorAll('#services .svc')].map(c => ({
  title: c.querySelector('.svc-title').textContent,
  sched: c.querySelector('.svc-sched').textContent,
  dests: [...c.querySelectorAll('tr.dest')].map(tr =>
    ['server', 'fwd', 'weight', 'active', 'inactive'].map(k => tr.querySelector('td.' + k).textContent))}))"""


def row(sid: str, did: str) -> str:
    return f'document.querySelector(\'tr.dest[data-sid="{sid}"][data-did="{did}"]\')'


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    port = free_port()
    d = Pylvsd(tmp_path, "--web", f"127.0.0.1:{port}", "--token", TOKEN).start()
    d.web = f"http://127.0.0.1:{port}/"  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        d.stop()


def test_dashboard_in_chromium(daemon: Any) -> None:
    def pylvsadm(_sock: str, *args: str) -> str:
        return daemon.pylvsadm(*args)

    sock = daemon.socket
    pylvsadm(sock, "-A", "-t", "127.0.0.1:8080", "-s", "wrr")
    pylvsadm(sock, "-a", "-t", "127.0.0.1:8080", "-r", "127.0.0.2:8080", "-m", "-w", "3")
    pylvsadm(sock, "-a", "-t", "127.0.0.1:8080", "-r", "127.0.0.3:8080", "-m", "-w", "1")
    pylvsadm(sock, "-A", "-u", "127.0.0.1:53", "-s", "rr")
    pylvsadm(sock, "-a", "-u", "127.0.0.1:53", "-r", "127.0.0.5:5353", "-m")
    pylvsadm(sock, "-A", "-f", "7", "-s", "rr", "-p", "60")
    pylvsadm(sock, "-a", "-f", "7", "-r", "127.0.0.4", "-g", "-w", "2")

    async def drive() -> None:
        assert CHROMIUM is not None
        b = Browser(CHROMIUM)
        try:
            await b.start()
            await b.goto(daemon.web)
            want = listing(pylvsadm(sock, "-Ln"))
            await b.wait_for(f"document.querySelectorAll('#services .svc').length === {len(want)}", 10)
            page = await b.evaluate(PAGE_TABLE)
            assert [(s["title"], s["dests"]) for s in page] == [(s["title"], s["dests"]) for s in want]
            assert [s["sched"].split()[0] for s in page] == [s["sched"].split()[0] for s in want]
            await b.wait_for("document.querySelector('#live').classList.contains('on')", 5)
            await b.wait_for("document.querySelectorAll('#events li').length >= 7", 5)

            # A rule changed with pylvsadm shows on the page within two seconds.
            pylvsadm(sock, "-e", "-t", "127.0.0.1:8080", "-r", "127.0.0.3:8080", "-m", "-w", "9")
            t0 = time.monotonic()
            await b.wait_for(
                f"{row('tcp:127.0.0.1:8080', '127.0.0.3:8080')}.querySelector('td.weight').textContent === '9'",
                2,
            )
            shown_after = time.monotonic() - t0
            pylvsadm(sock, "-d", "-u", "127.0.0.1:53", "-r", "127.0.0.5:5353")
            await b.wait_for("!document.querySelector('tr.dest[data-did=\"127.0.0.5:5353\"]')", 2)
            page = await b.evaluate(PAGE_TABLE)
            want = listing(pylvsadm(sock, "-Ln"))
            assert [(s["title"], s["dests"]) for s in page] == [(s["title"], s["dests"]) for s in want]

            # Read-only without the token: no edit controls; a wrong token is refused.
            assert not await b.evaluate("document.body.classList.contains('rw')")
            await b.evaluate(
                "document.querySelector('#token').value = 'wrong-token'; document.querySelector('#auth').requestSubmit()"
            )
            await b.wait_for("document.querySelector('#message').classList.contains('error')", 5)
            assert not await b.evaluate("document.body.classList.contains('rw')")

            # With the token: set a weight, quiesce, restore; pylvsadm sees each.
            await b.evaluate(
                f"document.querySelector('#token').value = '{TOKEN}'; document.querySelector('#auth').requestSubmit()"
            )
            await b.wait_for("document.body.classList.contains('rw')", 5)
            r = row("tcp:127.0.0.1:8080", "127.0.0.2:8080")
            await b.evaluate(
                f"{r}.querySelector('.actions input').value = '5'; {r}.querySelector('button.set').click()"
            )
            await b.wait_for(f"{r}.querySelector('td.weight').textContent === '5'", 5)
            assert ["127.0.0.2:8080", "Masq", "5", "0", "0"] in listing(pylvsadm(sock, "-Ln"))[0]["dests"]
            await b.evaluate(f"{r}.querySelector('button.quiesce').click()")
            await b.wait_for(f"{r}.querySelector('td.weight').textContent === '0'", 5)
            assert ["127.0.0.2:8080", "Masq", "0", "0", "0"] in listing(pylvsadm(sock, "-Ln"))[0]["dests"]
            await b.evaluate(f"{r}.querySelector('button.restore').click()")
            await b.wait_for(f"{r}.querySelector('td.weight').textContent === '5'", 5)
            assert ["127.0.0.2:8080", "Masq", "5", "0", "0"] in listing(pylvsadm(sock, "-Ln"))[0]["dests"]
            await b.wait_for(
                "[...document.querySelectorAll('#events .ev-kind')].some(e => e.textContent === 'edit_dest')",
                5,
            )

            # The connection filter answers (no traffic here: an empty table with its count).
            await b.evaluate(
                "document.querySelector('#conn-filter').value = '127.0.0.2'; document.querySelector('#conn-filter').dispatchEvent(new Event('input'))"
            )
            await b.wait_for("document.querySelector('#conn-count').textContent.startsWith('(0 of')", 5)

            await b.screenshot(ARTIFACTS / "dashboard.png")
            assert not [c for c in b.console if c.startswith("exception")], b.console
            assert shown_after < 2.0
        finally:
            await b.close()

    asyncio.run(drive())


def test_dashboard_shows_health_in_chromium(tmp_path: Path) -> None:
    """With --config, each real server's health (and the check that decided) is on the page."""
    from tests.metrics.test_health import conf

    live = socket.create_server(("127.0.0.2", 0))
    dead = socket.create_server(("127.0.0.3", 0))
    up_port, down_port = live.getsockname()[1], dead.getsockname()[1]
    dead.close()
    vport, wport = free_port(), free_port()
    cfg = tmp_path / "keepalived.conf"
    cfg.write_text(conf(vport, up_port, down_port))
    d = Pylvsd(tmp_path, "--config", str(cfg), "--web", f"127.0.0.1:{wport}").start()

    async def drive() -> None:
        assert CHROMIUM is not None
        b = Browser(CHROMIUM)
        try:
            await b.start()
            await b.goto(f"http://127.0.0.1:{wport}/")
            sid = f"tcp:127.0.0.1:{vport}"
            up, down = row(sid, f"127.0.0.2:{up_port}"), row(sid, f"127.0.0.3:{down_port}")
            await b.wait_for(
                f"{up}?.querySelector('td.health').textContent === 'up' && "
                f"{down}?.querySelector('td.health').textContent === 'down' && "
                f"{down}.querySelector('td.weight').textContent === '0'",
                15,
            )
            assert "TCP_CHECK: last check failed" == await b.evaluate(
                f"{down}.querySelector('td.health').title"
            )
            page = await b.evaluate(PAGE_TABLE)
            want = listing(d.pylvsadm("-Ln"))
            assert [(s["title"], s["dests"]) for s in page] == [(s["title"], s["dests"]) for s in want]
            await b.wait_for(
                "[...document.querySelectorAll('#events .ev-source')].some(e => e.textContent === 'health')",
                5,
            )
            await b.screenshot(ARTIFACTS / "dashboard-health.png")
        finally:
            await b.close()

    try:
        asyncio.run(drive())
    finally:
        d.stop()
        live.close()
