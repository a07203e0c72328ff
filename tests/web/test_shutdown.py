"""An open dashboard (its event stream) must not hold up pylvsd's shutdown."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests.support import free_port
from tests.web.pylvsd import Pylvsd


def test_open_stream_does_not_delay_sigterm(tmp_path: Path) -> None:
    port = free_port()
    d = Pylvsd(tmp_path, "--web", f"127.0.0.1:{port}").start()
    stream = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        stream.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"event: " in stream.recv(65536) + stream.recv(65536)  # headers, then the first event
        assert d.proc is not None
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(30)
        assert rc == 0
        assert time.monotonic() - t0 < 5
    finally:
        stream.close()
        d.stop()
