"""`pylvs top` in a real terminal (tmux): it lists pylvsd's rules, follows a pylvsadm change within two
seconds, filters, sorts, and quits on q."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.web.pylvsd import Pylvsd

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"
)


class Tmux:
    def __init__(self) -> None:
        self.server = "plv" + secrets.token_hex(4)  # a private tmux server: nobody else's sessions

    def __call__(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-L", self.server, *args], capture_output=True, text=True, timeout=10)
        return r.stdout if r.returncode == 0 else ""

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "top")

    def wait(self, pred: Callable[[str], bool], timeout: float) -> float:
        start = time.monotonic()
        while True:
            if pred(self.screen()):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"screen after {timeout} s:\n{self.screen()}")
            time.sleep(0.05)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.server, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Pylvsd, Tmux]]:
    d = Pylvsd(tmp_path).start()
    t = Tmux()
    try:
        yield d, t
    finally:
        t.kill()
        d.stop()


def test_top_in_tmux(setup: tuple[Pylvsd, Tmux]) -> None:
    d, tmux = setup
    d.pylvsadm("-A", "-t", "127.0.0.1:8080", "-s", "wrr")
    d.pylvsadm("-a", "-t", "127.0.0.1:8080", "-r", "127.0.0.2:8080", "-m", "-w", "3")
    d.pylvsadm("-a", "-t", "127.0.0.1:8080", "-r", "127.0.0.3:8080", "-m", "-w", "1")
    d.pylvsadm("-A", "-f", "7", "-s", "rr")
    d.pylvsadm("-a", "-f", "7", "-r", "127.0.0.4", "-g", "-w", "2")
    # COLUMNS/LINES from the test's environment would override the pane's size in curses.
    cmd = f"env -u COLUMNS -u LINES {sys.executable} -m pylvs.cli.pylvs top --socket {d.socket}"
    env = ["-e", f"PYTHONPATH={os.pathsep.join(sys.path)}"]
    tmux("new-session", "-d", "-s", "top", "-x", "150", "-y", "40", *env, cmd)

    tmux.wait(lambda s: "TCP  127.0.0.1:8080" in s and "127.0.0.4:0" in s, 15)
    screen = tmux.screen()
    row = next(line for line in screen.splitlines() if "-> 127.0.0.2:8080" in line).split()
    assert row[2:6] == ["Masq", "3", "0", "0"]
    assert "add_dest" in screen  # the last events

    # A rule changed with pylvsadm shows within two seconds.
    d.pylvsadm("-e", "-t", "127.0.0.1:8080", "-r", "127.0.0.3:8080", "-m", "-w", "9")

    def weight9(s: str) -> bool:
        return any("-> 127.0.0.3:8080" in line and line.split()[3] == "9" for line in s.splitlines())

    assert tmux.wait(weight9, 2.0) < 2.0

    # Filter to one server, then clear it; sort by name.
    def rows(s: str) -> str:
        return "\n".join(line for line in s.splitlines() if line.startswith(("TCP ", "FWM ", "  -> 127")))

    tmux("send-keys", "-t", "top", "/", "127.0.0.3", "Enter")
    tmux.wait(
        lambda s: "filter: 127.0.0.3 " in s and rows(s).count("->") == 1 and "-> 127.0.0.3:8080" in rows(s), 3
    )
    tmux("send-keys", "-t", "top", "Escape")
    tmux.wait(lambda s: "-> 127.0.0.2:8080" in rows(s) and "FWM  7" in rows(s), 3)
    tmux("send-keys", "-t", "top", "n")
    tmux.wait(lambda s: "sort: name" in s, 3)
    lines = tmux.screen().splitlines()
    order = [i for i, line in enumerate(lines) if line.startswith(("TCP ", "FWM "))]
    assert [lines[i].split()[0] for i in order] == ["FWM", "TCP"]  # "FWM  7" < "TCP  127..."

    tmux("send-keys", "-t", "top", "q")
    deadline = time.monotonic() + 5
    while tmux("has-session", "-t", "top") != "" or "pylvs top" in tmux.screen():
        assert time.monotonic() < deadline, tmux.screen()
        time.sleep(0.1)
