"""Health in the metrics: pylvsd --config runs keepalived TCP_CHECKs on loopback; /metrics shows each
real server's state and last check result, and the daemon's event counters follow."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.metrics.test_real_traffic import by_remote, scrape
from tests.support import free_port
from tests.web.pylvsd import Pylvsd


def conf(vport: int, up_port: int, down_port: int) -> str:
    return f"""virtual_server 127.0.0.1 {vport} {{
  delay_loop 0.5
  lb_algo rr
  lb_kind NAT
  protocol TCP
  real_server 127.0.0.2 {up_port} {{
    weight 2
    TCP_CHECK {{
      connect_timeout 0.5
      retry 0
    }}
  }}
  real_server 127.0.0.3 {down_port} {{
    weight 3
    inhibit_on_failure
    TCP_CHECK {{
      connect_timeout 0.5
      retry 0
    }}
  }}
}}
"""


def test_health_state_and_last_check_in_metrics(tmp_path: Path) -> None:
    live = socket.create_server(("127.0.0.2", 0))
    dead = socket.create_server(("127.0.0.3", 0))
    down_port = dead.getsockname()[1]
    dead.close()  # nothing listens there: its check fails
    vport, mport = free_port(), free_port()
    cfg = tmp_path / "keepalived.conf"
    cfg.write_text(conf(vport, live.getsockname()[1], down_port))
    d = Pylvsd(tmp_path, "--config", str(cfg), "--metrics", f"127.0.0.1:{mport}").start()
    try:
        up, down = f"127.0.0.2:{live.getsockname()[1]}", f"127.0.0.3:{down_port}"
        deadline = time.monotonic() + 15
        while True:
            m = scrape(mport)
            health = {
                (f"{lbl['remote_address']}:{lbl['remote_port']}", lbl["state"])
                for lbl, _ in m.get("pylvs_backend_health", [])
            }
            last = by_remote(m.get("pylvs_backend_last_check_success", []))
            if (
                (up, "up") in health
                and (down, "down") in health
                and last.get(up) == 1
                and last.get(down) == 0
            ):
                break
            assert time.monotonic() < deadline, (health, last)
            time.sleep(0.3)
        # inhibit_on_failure keeps the dead server at weight 0, as pylvsadm shows
        assert by_remote(m["node_ipvs_backend_weight"]) == {up: 2, down: 0}
        assert m["pylvs_daemon_rule_changes_total"][0][1] >= 3
    finally:
        d.stop()
        live.close()
