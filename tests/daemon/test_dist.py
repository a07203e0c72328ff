"""dist/: the systemd unit and the sysconfig-style file match what pylvsd understands."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from pylvs.daemon.client import DaemonBackend, DaemonUnavailable

DIST = Path(__file__).resolve().parents[2] / "dist"


def config_vars() -> dict[str, str]:
    out = {}
    for line in (DIST / "pylvsd-config").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name] = shlex.split(value)[0] if value.strip() else ""
    return out


def test_unit_file() -> None:
    unit = (DIST / "pylvsd.service").read_text()
    assert "ExecStart=/usr/bin/pylvsd $PYLVSD_OPTS" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "Type=notify" in unit and "EnvironmentFile=-/etc/sysconfig/pylvsd" in unit


def test_config_file_is_understood(tmp_path: Path) -> None:
    env_vars = config_vars()
    assert set(env_vars) == {
        "PYLVSD_SOCKET",
        "PYLVSD_RULES",
        "PYLVSD_ENGINE",
        "PYLVSD_SAVE_ON_STOP",
        "PYLVSD_SAVE_COUNTERS",
        "PYLVSD_NUMERIC",
        "PYLVSD_OPTS",
    }
    sock = str(tmp_path / "s.sock")
    env = {
        **os.environ,
        **env_vars,
        "PYLVSD_SOCKET": sock,
        "PYLVSD_RULES": str(tmp_path / "rules"),
        "PYLVSD_ENGINE": "none",
        "PYLVSD_SAVE_COUNTERS": "yes",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pylvs.daemon.main", *shlex.split(env_vars["PYLVSD_OPTS"])],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status = DaemonBackend(sock).status()
                break
            except DaemonUnavailable:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert status["engine"] == "none" and status["rules_file"] == str(tmp_path / "rules")
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    assert (tmp_path / "rules.counters").exists()  # save-counters came from the environment
