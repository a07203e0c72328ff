"""pylvsd with the proxy engine: a service programmed through the API forwards loopback traffic,
and the counters and connection entries show up through the same API."""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from tests.support import free_port

from .conftest import Pylvsd, needs_save

pytest.importorskip("pylvs.engines.proxy")


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(1024)
        self.request.sendall(b"echo:" + data)


@pytest.fixture
def echo_server() -> Iterator[int]:
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_proxy_engine_forwards(make_daemon: Callable[..., Pylvsd], echo_server: int) -> None:
    d = make_daemon(ephemeral=True, engine="proxy").start()
    b = d.backend()
    assert b.status()["engine"] == "proxy"
    vport = free_port()
    key = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address("127.0.0.1"), vport)
    b.add_service(key, ServiceConfig("rr"))
    b.add_dest(key, DestConfig(ipaddress.ip_address("127.0.0.1"), echo_server, Fwd.MASQ))
    reply = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not reply:
        try:
            with socket.create_connection(("127.0.0.1", vport), timeout=5) as c:
                c.sendall(b"ping")
                reply = c.recv(1024)
        except OSError:
            time.sleep(0.1)  # the listener comes up just after the change
    assert reply == b"echo:ping"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and b.snapshot().services[0].stats[0] == 0:
        time.sleep(0.1)
    assert b.snapshot().services[0].stats[0] == 1  # one connection counted
    assert any(c.vport == vport for c in b.connections())
    assert d.stop() == 0


@needs_save
def test_counters_survive_a_restart_with_save_counters(
    make_daemon: Callable[..., Pylvsd], echo_server: int
) -> None:
    d = make_daemon("--save-counters", "yes", engine="proxy").start()
    b = d.backend()
    vport = free_port()
    key = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address("127.0.0.1"), vport)
    b.add_service(key, ServiceConfig("rr"))
    b.add_dest(key, DestConfig(ipaddress.ip_address("127.0.0.1"), echo_server, Fwd.MASQ))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", vport), timeout=5) as c:
                c.sendall(b"ping")
                if c.recv(1024):
                    break
        except OSError:
            time.sleep(0.1)
    while time.monotonic() < deadline and b.snapshot().services[0].stats[0] == 0:
        time.sleep(0.1)
    before = b.snapshot().services[0].stats
    assert before[0] == 1
    assert d.stop() == 0
    d2 = make_daemon("--save-counters", "yes", engine="none").start()
    svc = d2.backend().snapshot().services[0]
    assert svc.stats == before and svc.dests[0].stats == before
    d2.stop()
