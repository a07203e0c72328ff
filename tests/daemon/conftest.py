"""Fixtures: pylvsd as a subprocess on a temporary socket and rules file (engine none)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pylvs.daemon.client import DaemonBackend, DaemonUnavailable


class Pylvsd:
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


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Pylvsd]]:
    """make_daemon(*extra_args, ephemeral=False) -> a not yet started Pylvsd; all are killed at the end."""
    made: list[Pylvsd] = []

    def make(*extra: str, ephemeral: bool = False, engine: str = "none") -> Pylvsd:
        d = Pylvsd(tmp_path, *extra, ephemeral=ephemeral, engine=engine)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


@pytest.fixture
def ephemeral(make_daemon: Callable[..., Pylvsd]) -> Iterator[Pylvsd]:
    d = make_daemon(ephemeral=True).start()
    yield d
    d.stop()


def have_save() -> bool:
    try:
        import pylvs.ipvsadm.run
        import pylvs.ipvsadm.save  # noqa: F401
    except ImportError:
        return False
    return True


needs_save = pytest.mark.skipif(not have_save(), reason="pylvs.ipvsadm.save/run not written yet")
os.environ.setdefault("PYTHONUNBUFFERED", "1")
