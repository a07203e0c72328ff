"""The seed's labs as tests: each fails when the packets take the wrong path.

NAT and FULLNAT replies must pass the director; DR and TUN replies must bypass it (counted by an nft
probe table on the director, independent of the engine). The real server must see the client's
address (NAT, DR, TUN) or the director's (FULLNAT); 3 MB up and down and UDP must work in every mode.
"""

from __future__ import annotations

import shutil

import pytest

from pylvs.core.director import Director
from pylvs.lab.fwmark import run_lab as run_fwmark_lab
from pylvs.lab.netns import is_root
from pylvs.lab.runner import Lab, LabResult, daemon_available

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
    pytest.mark.skipif(
        shutil.which("nft") is None or shutil.which("curl") is None, reason="needs nft and curl"
    ),
    pytest.mark.skipif(not hasattr(Director, "process_in"), reason="the core's packet API has not landed"),
]

_results: dict[str, LabResult] = {}


def lab(mode: str) -> LabResult:
    if mode not in _results:
        # The bare lab director: the data plane on its own (the pylvsd path has its own test below).
        with Lab(mode, "packet", out=lambda _s: None, use_daemon=False) as run:
            _results[mode] = run.run()
    return _results[mode]


@pytest.mark.parametrize("mode", ["nat", "dr", "tun", "fullnat"])
def test_ten_requests_alternate_between_the_real_servers(mode: str) -> None:
    r = lab(mode)
    assert (
        r.answers == ["welcome to 192.168.1.10", "welcome to 192.168.1.20"] * 5
        or r.answers
        == [
            "welcome to 192.168.1.20",
            "welcome to 192.168.1.10",
        ]
        * 5
    ), r.answers


@pytest.mark.parametrize("mode", ["nat", "fullnat"])
def test_replies_pass_the_director(mode: str) -> None:
    r = lab(mode)
    assert r.requests_via_director > 0
    assert r.replies_via_director > 0, r.counters


@pytest.mark.parametrize("mode", ["dr", "tun"])
def test_replies_bypass_the_director(mode: str) -> None:
    r = lab(mode)
    assert r.requests_via_director > 0
    assert r.replies_via_director == 0, r.counters
    assert sum(r.counters["router"].values()) > 0  # they reached the router straight from the RS


@pytest.mark.parametrize("mode", ["nat", "dr", "tun"])
def test_real_server_sees_the_client(mode: str) -> None:
    assert lab(mode).peer.startswith("172.25.254.10:")


def test_fullnat_real_server_sees_the_director() -> None:
    peer = lab("fullnat").peer
    addr, _, port = peer.partition(":")
    assert addr == "192.168.1.100" and 10000 <= int(port) <= 30000


@pytest.mark.parametrize("mode", ["nat", "dr", "tun", "fullnat"])
def test_three_megabytes_up_and_down(mode: str) -> None:
    r = lab(mode)
    assert r.upload_ok and r.download_ok


@pytest.mark.parametrize("mode", ["nat", "dr", "tun", "fullnat"])
def test_udp(mode: str) -> None:
    r = lab(mode)
    assert len(r.udp_answers) == 4
    vip = "192.168.1.220" if mode in ("dr", "tun") else "172.25.254.100"
    for a in r.udp_answers:
        assert a.startswith("welcome to 192.168.1.") and a.endswith(f"from {vip}"), a
    assert {a.split()[2] for a in r.udp_answers} == {"192.168.1.10", "192.168.1.20"}


@pytest.mark.parametrize("mode", ["nat", "dr", "fullnat"])
def test_ipv6(mode: str) -> None:
    r = lab(mode)
    assert sorted(set(r.v6_answers)) == ["welcome to 192.168.1.10", "welcome to 192.168.1.20"], r.v6_answers
    host = r.v6_peer.rpartition(":")[0]
    assert host == ("fd00:192:168:1::100" if mode == "fullnat" else "fd00:172:25:254::10"), r.v6_peer
    if mode == "dr":
        assert r.replies6_via_director == 0, r.counters
    else:
        assert r.replies6_via_director > 0, r.counters


def test_fwmark_lab_shows_the_problem_then_the_fix() -> None:
    r = run_fwmark_lab("packet", out=lambda _s: None, use_daemon=False)
    assert r.servers(r.before) == {"welcome to 192.168.1.10", "welcome to 192.168.1.20"}
    assert len(r.servers(r.after)) == 1 and next(iter(r.servers(r.after))).startswith("welcome to 192.168.1.")


@pytest.mark.skipif(not daemon_available(), reason="pylvsd / pylvsadm not installed")
def test_nat_lab_through_pylvsd_and_pylvsadm() -> None:
    """The lab as `pylvs lab nat` runs it: pylvsd + pylvsadm, and the article's -Sn / -C / -R epilogue."""
    with Lab("nat", "packet", out=lambda _s: None, udp=False) as run:
        r = run.run()
    assert sorted(set(r.answers)) == ["welcome to 192.168.1.10", "welcome to 192.168.1.20"]
    assert r.upload_ok and r.download_ok and r.replies_via_director > 0
    assert "172.25.254.100:80 rr" in r.listing and "Masq" in r.listing
    assert (
        r.restored and len(r.after_restore) == 2 and all(a.startswith("welcome to") for a in r.after_restore)
    )


def test_proxy_engine_labs() -> None:
    """The same labs on the proxy engine: -m as a transparent proxy (the RS sees the client),
    --fullnat (the RS sees the director), and the fwmark fix through its TPROXY listener."""
    with Lab("nat", "proxy", out=lambda _s: None, use_daemon=False, udp=False) as run:
        r = run.run()
    assert sorted(set(r.answers)) == ["welcome to 192.168.1.10", "welcome to 192.168.1.20"]
    assert r.peer.startswith("172.25.254.10:") and r.upload_ok and r.download_ok
    fw = run_fwmark_lab("proxy", out=lambda _s: None, use_daemon=False)
    assert len(fw.servers(fw.before)) == 2 and len(fw.servers(fw.after)) == 1
