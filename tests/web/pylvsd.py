"""pylvsd as a subprocess for the observability tests: ephemeral rules, a temporary socket, loopback ports."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests import support


class Pylvsd(support.Pylvsd):
    """Always --ephemeral; ready once the control socket answers and the add-ons (--metrics, --web)
    listen, stopped again if it never gets there."""

    def __init__(self, tmp: Path, *extra: str, engine: str = "none") -> None:
        super().__init__(tmp, *extra, ephemeral=True, engine=engine)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            super().wait_ready(timeout)
            # The add-ons start after the control socket answers.
            while time.monotonic() < deadline:
                if all(self._listening(a) for a in self._addon_addresses()):
                    return
                time.sleep(0.05)
            raise AssertionError(f"pylvsd not ready: {self.log.read_text()}")
        except AssertionError:
            self.stop()
            raise

    def _addon_addresses(self) -> list[tuple[str, int]]:
        out = []
        for flag, value in itertools.pairwise(self.argv()):
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
