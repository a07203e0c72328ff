"""Nothing is left behind: the engine's nft table goes with the engine, stale tables of dead daemons
are removed, and an interrupted lab removes its namespaces."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pylvs.lab.netns import Netns, is_root

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
]

ENGINE_RUN = r"""
import asyncio, ipaddress, subprocess, sys
from pylvs.core.director import Director
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from pylvs.engines.packet import PacketEngine
async def main():
    d = Director()
    k = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address("10.1.1.1"), 80)
    d.add_service(k, ServiceConfig(scheduler="rr"))
    d.add_dest(k, DestConfig(addr=ipaddress.ip_address("10.1.1.2"), port=80, fwd=Fwd.MASQ))
    e = PacketEngine(d, asyncio.get_running_loop())
    await e.start()
    print("during:", e.table.name in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout)
    await e.stop()
    print("after:", e.table.name in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout)
asyncio.run(main())
"""


def test_engine_table_lives_only_as_long_as_the_engine() -> None:
    with Netns() as n:
        n.add("d")
        n.veth("d", "eth0", "d", "eth1")
        n.addr("d", "eth0", "10.1.1.1/24")
        out = n.run("d", [sys.executable, "-c", ENGINE_RUN]).stdout
        assert "during: True" in out and "after: False" in out


def test_stale_table_of_a_dead_daemon_is_removed() -> None:
    with Netns() as n:
        n.add("d")
        n.veth("d", "eth0", "d", "eth1")
        n.addr("d", "eth0", "10.1.1.1/24")
        dead = 4194000  # above any pid the kernel hands out by default
        subprocess.run(
            ["ip", "netns", "exec", n.ns("d"), "nft", "-f", "-"],
            input=f"table netdev pylvs_{dead} {{ }}\n",
            text=True,
            check=True,
        )
        n.run("d", [sys.executable, "-c", ENGINE_RUN])
        assert f"pylvs_{dead}" not in n.run("d", ["nft", "list", "tables"]).stdout


def _lab_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("plv")}


def test_interrupted_lab_removes_its_namespaces() -> None:
    before = _lab_namespaces()
    p = subprocess.Popen(
        [sys.executable, "-m", "pylvs.cli.pylvs", "lab", "dr", "--bare"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None
        prefix = ""
        for line in p.stdout:  # wait until the lab is up and answering
            if "network namespaces" in line:
                prefix = line.split("network namespaces ")[1].split("-*")[0]
            if "curl" in line:
                break
        new = {ns for ns in _lab_namespaces() - before if prefix and ns.startswith(prefix + "-")}
        assert new, "the lab made no namespaces"
        os.kill(p.pid, signal.SIGINT)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    time.sleep(0.2)
    assert not (_lab_namespaces() & new)
