"""Small helpers shared by test packages."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from pylvs.daemon.client import DaemonBackend, DaemonUnavailable


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port nothing listens on right now (IPv4, `host`), for a server the test starts next."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class Pylvsd:
    """pylvsd as a subprocess: a temporary socket, its own rules file (or --ephemeral), a log file."""

    def __init__(self, tmp: Path, *extra: str, ephemeral: bool = False, engine: str = "none") -> None:
        self.engine = engine
        self.dir = tmp
        self.socket = str(tmp / "pylvsd.sock")
        self.rules = tmp / "rules"
        self.extra = list(extra)
        self.ephemeral = ephemeral
        self.proc: subprocess.Popen[str] | None = None
        self.log = tmp / "pylvsd.log"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "pylvs.daemon.main", "--socket", self.socket, "--engine", self.engine]
        argv += ["--ephemeral"] if self.ephemeral else ["--rules", str(self.rules)]
        return argv + self.extra

    def start(self, wait: bool = True) -> Pylvsd:
        logf = open(self.log, "a")
        self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=logf, text=True)
        logf.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        b = self.backend()
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"pylvsd exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                b.status()
                return
            except DaemonUnavailable:
                time.sleep(0.05)
        raise AssertionError(f"pylvsd not ready: {self.log.read_text()}")

    def backend(self) -> DaemonBackend:
        return DaemonBackend(self.socket, source="pylvsadm", timeout=120)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of data, worked out here independently of the code under
    test: 0 over a header (or pseudo-header and segment) whose checksum is right."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s ^ 0xFFFF
