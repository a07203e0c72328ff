"""pylvsd --engine proxy --config: with a steady stream of new requests through the proxy engine, a
real server that stops is taken out by its checker, and no request fails once that has happened."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import free_port

from .test_daemon_hook import listing, start_pylvsd, stop_pylvsd, wait_for

BIN = Path(sys.executable).parent


class Named(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.server_address[0].encode()  # which real server answered
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(host: str, port: int) -> http.server.ThreadingHTTPServer:
    srv = http.server.ThreadingHTTPServer((host, port), Named)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def request(port: int) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        if not data.startswith(b"HTTP/1.0 200"):
            return None
        return data.rsplit(b"\r\n\r\n", 1)[1].decode()
    except OSError:
        return None


@pytest.mark.slow
def test_no_request_fails_after_detection(tmp_path: Path) -> None:
    if not (BIN / "pylvsd").exists():
        pytest.skip("pylvsd not installed in this environment")
    vport, p1, p2 = free_port(), free_port("127.0.0.2"), free_port("127.0.0.3")
    conf = tmp_path / "keepalived.conf"
    conf.write_text(
        f"""virtual_server 127.0.0.1 {vport} {{
  delay_loop 0.3
  warmup 0
  lb_algo rr
  lb_kind FULLNAT
  protocol TCP
  real_server 127.0.0.2 {p1} {{
    HTTP_GET {{
      url {{
        path /
      }}
      connect_timeout 0.5
      retry 0
    }}
  }}
  real_server 127.0.0.3 {p2} {{
    HTTP_GET {{
      url {{
        path /
      }}
      connect_timeout 0.5
      retry 0
    }}
  }}
}}
"""
    )
    s1, s2 = serve("127.0.0.2", p1), serve("127.0.0.3", p2)
    sock = tmp_path / "d.sock"
    daemon = start_pylvsd(sock, conf, "proxy")
    results: list[tuple[float, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        end = time.monotonic() + 30  # bounded whatever happens
        while not stop.is_set() and time.monotonic() < end:
            results.append((time.monotonic(), request(vport)))
            time.sleep(0.01)

    t = threading.Thread(target=client)
    try:
        wait_for(lambda: sock.exists() and f"127.0.0.3:{p2}" in listing(sock), 15)
        wait_for(lambda: request(vport) is not None, 10)
        t.start()
        time.sleep(1.0)
        s1.shutdown()
        s1.server_close()  # real server 1 stops
        wait_for(lambda: f"127.0.0.2:{p1}" not in listing(sock), 10)
        detected = time.monotonic()
        time.sleep(1.5)
        restarted = time.monotonic()
        s1 = serve("127.0.0.2", p1)  # and comes back
        wait_for(lambda: f"127.0.0.2:{p1}" in listing(sock), 10)
        back = time.monotonic()
        time.sleep(1.0)
    finally:
        stop.set()
        if t.is_alive():
            t.join()
        s1.shutdown()
        s2.shutdown()
        stop_pylvsd(daemon)
    after = [r for ts, r in results if ts >= detected]
    assert len(after) > 50
    assert all(r is not None for r in after), [r for r in after if r is None][:3]
    assert {r for ts, r in results if detected <= ts < restarted} == {"127.0.0.3"}
    assert "127.0.0.2" in {r for ts, r in results if ts > back + 0.5}
