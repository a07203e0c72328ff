"""`pylvs realserver setup|teardown` in a namespace of our own, and the TUN agent's decapsulation rules."""

from __future__ import annotations

import socket
import sys

import pytest

from pylvs.lab.netns import Netns, is_root
from pylvs.realserver.tunagent import TunAgent

A = socket.inet_aton


def _outer(src: str, inner_dst: str) -> bytes:
    inner = bytes([0x45, 0, 0, 40]) + bytes(8) + A("172.25.254.10") + A(inner_dst) + bytes(20)
    return bytes([0x45, 0, 0, 60]) + bytes(5) + b"\x04" + bytes(2) + A(src) + A("192.168.1.10") + inner


def test_agent_checks_outer_source_and_inner_destination() -> None:
    agent = TunAgent.__new__(TunAgent)  # decap() only: no TUN device, no raw socket
    agent.vips = {A("192.168.1.220")}
    agent.directors = {A("192.168.1.200")}
    assert (
        agent.decap(_outer("192.168.1.200", "192.168.1.220")) == _outer("192.168.1.200", "192.168.1.220")[20:]
    )
    assert agent.decap(_outer("10.9.9.9", "192.168.1.220")) is None  # not an allowed director
    assert agent.decap(_outer("192.168.1.200", "192.168.1.99")) is None  # not our VIP
    assert agent.decap(b"\x45" + bytes(10)) is None


@pytest.mark.netns
@pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")
def test_setup_and_teardown_restore_everything() -> None:
    with Netns() as n:
        n.add("rs")

        def sysctl(key: str) -> str:
            return n.run("rs", ["sysctl", "-n", key]).stdout.strip()

        before = {k: sysctl(k) for k in ("net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.lo.arp_announce")}
        pylvs = [sys.executable, "-m", "pylvs.cli.pylvs", "realserver"]
        n.run("rs", [*pylvs, "setup", "--mode", "dr", "--vip", "192.168.1.220"])
        assert (
            sysctl("net.ipv4.conf.all.arp_ignore") == "1" and sysctl("net.ipv4.conf.lo.arp_announce") == "2"
        )
        assert "192.168.1.220/32" in n.run("rs", ["ip", "addr", "show", "dev", "lo"]).stdout
        n.run("rs", [*pylvs, "teardown", "--vip", "192.168.1.220"])
        assert {k: sysctl(k) for k in before} == before
        assert "192.168.1.220" not in n.run("rs", ["ip", "addr", "show", "dev", "lo"]).stdout
        bad = n.run("rs", [*pylvs, "setup", "--mode", "dr", "--vip", "nonsense"], check=False)
        assert bad.returncode == 1 and "not an IP address" in bad.stderr and "Traceback" not in bad.stderr
