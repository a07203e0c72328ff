"""Must show: real TCP traffic through pylvsd's proxy engine, then GET /metrics parsed with Prometheus'
own text parser gives node_ipvs_* (and pylvs_*) values equal to what `pylvsadm -Ln` and
`pylvsadm -Ln --stats --exact` print."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port
from tests.web.pylvsd import Pylvsd

VIP = "127.0.0.1"
SERVERS = ("127.0.0.2", "127.0.0.3")


class EchoServer:
    """A TCP server on loopback that answers each line with the line, until the client closes."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                while data := conn.recv(65536):
                    conn.sendall(data)

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[tuple[Pylvsd, int, int, list[EchoServer]]]:
    servers = [EchoServer(h) for h in SERVERS]
    mport, vport = free_port(), free_port()
    d = Pylvsd(tmp_path, "--metrics", f"127.0.0.1:{mport}", engine="proxy").start()
    try:
        yield d, mport, vport, servers
    finally:
        d.stop()
        for s in servers:
            s.stop()


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def parse_listing(text: str, columns: int) -> dict[tuple[str, str], list[int]]:
    """`-Ln` / `--stats` as {(service, server or ""): numbers}."""
    out: dict[tuple[str, str], list[int]] = {}
    svc = ""
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("  ->") and len(parts) >= 1 + columns and parts[-1].isdigit():
            out[(svc, parts[1])] = [int(x) for x in parts[-columns:]]
        elif parts and parts[0] in ("TCP", "UDP", "SCTP", "FWM"):
            svc = f"{parts[0]} {parts[1]}"
            nums = parts[2:]
            if len(nums) == columns and all(x.isdigit() for x in nums):
                out[(svc, "")] = [int(x) for x in nums]
    return out


def talk(vport: int, n: int) -> None:
    for i in range(n):
        with socket.create_connection((VIP, vport), timeout=5) as c:
            msg = b"x" * (100 * (i + 1)) + b"\n"
            c.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = c.recv(65536)
                assert chunk, "connection closed early"
                got += chunk
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass


def by_remote(samples: list[tuple[dict[str, str], float]]) -> dict[str, float]:
    return {f"{lbl['remote_address']}:{lbl['remote_port']}": v for lbl, v in samples}


def test_metrics_equal_pylvsadm_after_real_traffic(farm: Any) -> None:
    d, mport, vport, servers = farm
    svc = f"{VIP}:{vport}"
    d.pylvsadm("-A", "-t", svc, "-s", "rr")
    for s, w in zip(servers, (3, 1), strict=True):
        d.pylvsadm("-a", "-t", svc, "-r", f"{s.sock.getsockname()[0]}:{s.port}", "--fullnat", "-w", str(w))
    talk(vport, 12)

    # Counters settle once the relays have closed; then the three views must agree exactly.
    deadline = time.monotonic() + 15
    while True:
        ln = parse_listing(d.pylvsadm("-Ln"), 3)
        stats = parse_listing(d.pylvsadm("-Ln", "--stats", "--exact"), 5)
        m = scrape(mport)
        ln2 = parse_listing(d.pylvsadm("-Ln"), 3)
        stats2 = parse_listing(d.pylvsadm("-Ln", "--stats", "--exact"), 5)
        if (ln, stats) == (ln2, stats2) and stats[(f"TCP {svc}", "")][0] == 12:
            break
        assert time.monotonic() < deadline, "counters never settled"
        time.sleep(0.3)

    dests = {k[1]: v for k, v in ln.items() if k[1]}
    assert len(dests) == 2
    # node_exporter's gauges, one series per real server, labelled as node_exporter does.
    weight = m["node_ipvs_backend_weight"]
    assert {lbl["local_address"] for lbl, _ in weight} == {VIP}
    assert {lbl["local_port"] for lbl, _ in weight} == {str(vport)}
    assert {(lbl["proto"], lbl["local_mark"]) for lbl, _ in weight} == {("TCP", "")}
    assert by_remote(weight) == {k: v[0] for k, v in dests.items()}
    assert by_remote(m["node_ipvs_backend_connections_active"]) == {k: v[1] for k, v in dests.items()}
    assert by_remote(m["node_ipvs_backend_connections_inactive"]) == {k: v[2] for k, v in dests.items()}

    # node_exporter's totals: all services together (here one) equal the --stats service line.
    total = stats[(f"TCP {svc}", "")]
    names = ("connections", "incoming_packets", "outgoing_packets", "incoming_bytes", "outgoing_bytes")
    assert [m[f"node_ipvs_{n}_total"][0][1] for n in names] == total
    assert total[0] == 12 and total[3] > 12 * 100 and total[4] > 12 * 100

    # pylvs_* per server and per service: the numbers of --stats.
    for i, n in enumerate(names):
        per_dest = by_remote(m[f"pylvs_backend_{n}_total"])
        assert per_dest == {k[1]: v[i] for k, v in stats.items() if k[1]}, n
        assert m[f"pylvs_service_{n}_total"][0][1] == total[i]
    conns = by_remote(m["pylvs_backend_connections_total"])
    assert sorted(conns.values()) == [6, 6]  # rr over two servers
    # The engine's own figures are there too.
    assert any(name.startswith("pylvs_engine_") for name in m)
    assert m["pylvs_daemon_rule_changes_total"][0][1] == 3
