"""pylvsd as a subprocess for the observability tests: ephemeral rules, a temporary socket, loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pylvs.daemon.client import DaemonBackend, DaemonUnavailable


class Pylvsd:
    def __init__(self, tmp: Path, *extra: str, engine: str = "none") -> None:
        self.socket = str(tmp / "pylvsd.sock")
        self.log = tmp / "pylvsd.log"
        self.argv = [sys.executable, "-m", "pylvs.daemon.main", "--socket", self.socket, "--engine", engine]
        self.argv += ["--ephemeral", *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Pylvsd:
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=logf)
        backend = DaemonBackend(self.socket)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pylvsd exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                backend.status()
            except DaemonUnavailable:
                time.sleep(0.05)
                continue
            # The add-ons (--metrics, --web) start after the control socket answers.
            if all(self._listening(a) for a in self._addon_addresses()):
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"pylvsd not ready: {self.log.read_text()}")

    def _addon_addresses(self) -> list[tuple[str, int]]:
        out = []
        for flag, value in zip(self.argv, self.argv[1:], strict=False):
            if flag in ("--metrics", "--web"):
                host, _, port = value.rpartition(":")
                out.append((host.strip("[]"), int(port)))
        return out

    @staticmethod
    def _listening(addr: tuple[str, int]) -> bool:
        try:
            socket.create_connection(addr, timeout=1).close()
            return True
        except OSError:
            return False

    def pylvsadm(self, *args: str) -> str:
        env = {**os.environ, "PYLVS_SOCKET": self.socket}
        r = subprocess.run(
            [sys.executable, "-m", "pylvs.cli.pylvsadm", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, f"pylvsadm {' '.join(args)}: {r.stderr}"
        return r.stdout

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
