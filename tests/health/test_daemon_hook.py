"""pylvsd --config: the services appear in `pylvsadm -Ln` and follow the health of their servers;
SIGHUP applies a good new file and keeps the old configuration when the new one is refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import free_port

BIN = Path(sys.executable).parent


def conf_text(p1: int, p2: int, sched: str = "rr") -> str:
    return f"""! pylvsd --config test
virtual_server 127.0.0.1 8080 {{
  delay_loop 0.5
  warmup 0
  lb_algo {sched}
  lb_kind NAT
  protocol TCP
  real_server 127.0.0.2 {p1} {{
    weight 2
    TCP_CHECK {{
      connect_timeout 0.5
      retry 0
    }}
  }}
  real_server 127.0.0.3 {p2} {{
    weight 3
    inhibit_on_failure
    TCP_CHECK {{
      connect_timeout 0.5
      retry 0
    }}
  }}
}}
"""


def listing(sock: Path) -> str:
    """`pylvsadm -Ln` through the daemon's socket (asked again if the daemon was busy for a moment)."""
    env = dict(os.environ, PYLVS_SOCKET=str(sock))
    r = None
    for _ in range(3):
        r = subprocess.run(
            [str(BIN / "pylvsadm"), "-Ln"], capture_output=True, text=True, env=env, timeout=20
        )
        if r.returncode == 0:
            return r.stdout
        time.sleep(0.2)
    assert r is not None
    return r.stderr


def start_pylvsd(sock: Path, conf: Path, engine: str) -> subprocess.Popen[str]:
    """The installed pylvsd on `sock` with ephemeral rules and keepalived file `conf`; stderr piped."""
    return subprocess.Popen(
        [
            str(BIN / "pylvsd"),
            "--socket",
            str(sock),
            "--ephemeral",
            "--engine",
            engine,
            "--config",
            str(conf),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_pylvsd(daemon: subprocess.Popen[str]) -> str:
    """SIGTERM (SIGKILL if it takes over 15 s); what it wrote to stderr."""
    daemon.send_signal(signal.SIGTERM)
    try:
        _, err = daemon.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        daemon.kill()
        _, err = daemon.communicate()
    return err


def wait_for(pred: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.1)


@pytest.mark.slow
def test_pylvsd_config_programs_and_follows_health(tmp_path: Path) -> None:
    if not (BIN / "pylvsd").exists():
        pytest.skip("pylvsd not installed in this environment")
    p1, p2 = free_port("127.0.0.2"), free_port("127.0.0.3")
    conf = tmp_path / "keepalived.conf"
    conf.write_text(conf_text(p1, p2))
    sock = tmp_path / "d.sock"
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.2", p1))
    listener.listen(16)
    daemon = start_pylvsd(sock, conf, "none")
    try:
        wait_for(lambda: sock.exists() and f"127.0.0.3:{p2}" in listing(sock), 15)
        # 127.0.0.3 never answers: inhibit_on_failure keeps it with weight 0, as ipvsadm shows keepalived's
        wait_for(lambda: f"127.0.0.3:{p2}              Masq    0" in listing(sock), 10)
        out = listing(sock)
        assert "TCP  127.0.0.1:8080 rr" in out and f"127.0.0.2:{p1}              Masq    2" in out
        listener.close()  # 127.0.0.2 goes away: removed
        wait_for(lambda: f"127.0.0.2:{p1}" not in listing(sock), 10)
        # the control API reports the same, with the checker's verdict per real server
        from pylvs.daemon.client import DaemonBackend

        health = DaemonBackend(str(sock)).request("GET", "/health")
        assert health["config"] == str(conf)
        (vs,) = health["virtual_servers"]
        up = {(rs["addr"], rs["port"]): rs["up"] for rs in vs["real_servers"]}
        assert up == {("127.0.0.2", p1): False, ("127.0.0.3", p2): False}

        conf.write_text("virtual_server 127.0.0.1 8080 {\n  lb_algo\n}\n")  # refused on reload
        daemon.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert "TCP  127.0.0.1:8080 rr" in listing(sock)

        conf.write_text(conf_text(p1, p2, "wlc"))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "TCP  127.0.0.1:8080 wlc" in listing(sock), 10)
        assert f"127.0.0.3:{p2}              Masq    0" in listing(sock)
    finally:
        listener.close()
        err = stop_pylvsd(daemon)
    assert daemon.returncode == 0, err
    assert "reload refused, old configuration kept" in err and ":2: 'lb_algo' needs a value" in err
    assert "Traceback" not in err


def test_pylvsd_refuses_a_bad_config_at_start(tmp_path: Path) -> None:
    if not (BIN / "pylvsd").exists():
        pytest.skip("pylvsd not installed in this environment")
    conf = tmp_path / "keepalived.conf"
    conf.write_text("virtual_server 127.0.0.1 80 {\n  lb_kind NOPE\n}\n")
    r = subprocess.run(
        [
            str(BIN / "pylvsd"),
            "--socket",
            str(tmp_path / "s"),
            "--ephemeral",
            "--engine",
            "none",
            "--config",
            str(conf),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert f"{conf}:2: 'lb_kind': unknown method 'NOPE'" in r.stderr and "Traceback" not in r.stderr


def test_addon_in_process_events_and_json(tmp_path: Path) -> None:
    import asyncio
    import json

    from pylvs.daemon.rules import Rules
    from pylvs.daemon.state import DaemonState
    from pylvs.health import daemon as hd

    p1 = free_port("127.0.0.2")
    conf = tmp_path / "keepalived.conf"
    conf.write_text(conf_text(p1, free_port("127.0.0.3")))

    async def go() -> tuple[DaemonState, dict[str, object]]:
        state = DaemonState(Rules())
        addon = await hd.start(state, str(conf))
        try:
            wait = 0.0
            while not any(e.kind == "health-down" for e in state.events.recent(0, 1000)) and wait < 3:
                await asyncio.sleep(0.05)
                wait += 0.05
            doc = addon.to_json()
        finally:
            await addon.stop()
        return state, doc

    state, doc = asyncio.run(go())
    kinds = [e.kind for e in state.events.recent(0, 1000)]
    assert "add_service" in kinds and "health-down" in kinds and "del_service" in kinds
    text = json.dumps(doc)
    assert '"quorum_up"' in text and "TCP_CHECK" in text
    assert state.snapshot().services == ()  # stop() removed what the add-on added
