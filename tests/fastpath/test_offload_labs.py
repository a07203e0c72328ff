"""The seed's labs with the packet engine's kernel fast path (`pylvsd --engine packet
--packet-offload yes`, engines/packet/offload.py): Python decides each connection on its SYN, a tc
eBPF program forwards the rest and reports the state changes. Every mode passes its lab (ten
alternating answers, the 3 MB upload and download, the address the real server sees, DR and TUN
replies bypassing the director), the kernel forwards nearly all the packets, and the core ends with
the states and counters the packets themselves would have given it."""

from __future__ import annotations

import itertools
import re
import shutil
import time

import pytest

from pylvs.lab.netns import is_root
from pylvs.lab.runner import Lab, LabResult, daemon_available
from tests.fastpath.test_fastpath_labs import (
    SLOW_SIZE,
    _check_slow_download,
    _kill_daemon_mid_download,
    _start_daemon,
)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("nft", "curl", "tc")), reason="needs nft, tc, curl"
    ),
]


def _number(text: str) -> int:
    """ipvsadm --stats numbers: 1234, 12K, 3M (units of 1000)."""
    scale = {"K": 1000, "M": 1000**2, "G": 1000**3}.get(text[-1], 1)
    return int(text.rstrip("KMG")) * scale


def _service_row(stats: str) -> list[str]:
    """The service's line of `pylvsadm -Ln --stats -t ...`, split (Conns, InPkts, OutPkts: 2..4)."""
    return next(ln for ln in stats.splitlines() if ln.lstrip().startswith("TCP")).split()


SERVERS = {"welcome to 192.168.1.10", "welcome to 192.168.1.20"}


def _run(mode: str, settle: float = 0.0) -> LabResult:
    """The lab's requests and checks with the bare lab director (its engine options from
    PYLVS_LAB_ENGINE_OPTS), after `settle` seconds, and the engine's figures a sync later."""
    with Lab(mode, "packet", out=lambda _s: None, use_daemon=False, udp=False) as run:
        run.build()
        run.start_director()
        time.sleep(settle)
        run.requests()
        run.extra_checks()
        time.sleep(1.2)  # the engine reads the kernel's counters every second
        run.collect()
        return run.result


def _check_lab(mode: str, r: LabResult) -> None:
    """What every mode's lab must show, kernel path or not."""
    assert set(r.answers) == SERVERS and len(r.answers) == 10, r.answers
    assert r.answers[0::2] == [r.answers[0]] * 5, r.answers  # round robin: alternating
    assert r.upload_ok and r.download_ok, r.engine_stats
    assert r.peer.startswith("192.168.1.100:" if mode == "fullnat" else "172.25.254.10:"), r.peer
    if mode in ("dr", "tun"):
        assert r.replies_via_director == 0, r.counters


@pytest.mark.parametrize("mode", ["nat", "dr", "tun", "fullnat"])
def test_lab_passes_with_the_kernel_forwarding_decided_connections(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYLVS_LAB_ENGINE_OPTS", '{"offload": true}')
    r = _run(mode)
    _check_lab(mode, r)
    es = r.engine_stats
    # 13 TCP connections over IPv4 (10 requests, /peer, upload, download): each given to the kernel
    # on its SYN, its state changes reported back (handshake, FINs)
    assert es.get("flows_added", 0) >= 13, es
    assert es.get("kernel_events", 0) >= 2 * 13, es
    assert es.get("kernel_pkts", 0) > 100, es
    assert not es.get("offload_full"), es


@pytest.mark.parametrize("mode", ["nat", "dr", "tun", "fullnat"])
def test_lab_passes_with_decisions_taken_ahead(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--packet-offload ahead`: the rr service's next servers are queued in the kernel, which makes
    the connections out of their SYNs (ahead.py); Python hears of them as events. Once the real
    servers' MACs are known (the first sync), no SYN of the lab needs Python."""
    monkeypatch.setenv("PYLVS_LAB_ENGINE_OPTS", '{"offload": true, "ahead": true}')
    r = _run(mode, settle=1.5)  # ARP for the servers, then the sync that starts the queues
    _check_lab(mode, r)
    es = r.engine_stats
    assert es.get("ahead_taken", 0) >= 13, es  # every IPv4 TCP connection of the lab
    assert es.get("ahead_reclaimed", 0) == 0, es


def test_pylvsd_packet_offload_lists_the_states_and_counts_of_kernel_forwarded_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through pylvsd (`PYLVSD_PACKET_OFFLOAD=yes`, as `--packet-offload yes`) and pylvsadm: the
    connections the kernel carried end in TIME_WAIT in `-Lnc` (the FINs reached the core as
    events), and `--stats` counts the packets the kernel forwarded in both directions."""
    if not daemon_available():
        pytest.skip("needs pylvsd and pylvsadm")
    monkeypatch.setenv("PYLVSD_PACKET_OFFLOAD", "yes")
    with Lab("nat", "packet", out=lambda _s: None, use_daemon=True, udp=False) as run:
        run.build()
        run.start_director()
        run.requests()
        run.extra_checks()
        time.sleep(1.5)
        conns = run.pylvsadm(["-Lnc"])
        stats = run.pylvsadm(["-Ln", "--stats", "-t", "172.25.254.100:80"])
        log = run.n.log("pylvsd")
    states = [ln.split()[2] for ln in conns.splitlines() if ln.startswith("TCP") and "172.25.254.10:" in ln]
    assert len(states) >= 13 and set(states) == {"TIME_WAIT"}, conns
    conns_n, inpkts, outpkts = (_number(x) for x in _service_row(stats)[2:5])
    # the 3 MB download alone is hundreds of reply packets, all sent by the kernel
    assert conns_n >= 13 and inpkts > 50 and outpkts > 100, stats
    assert "Traceback" not in log, log


def test_pylvsd_ahead_keeps_the_rotation_across_a_rule_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through pylvsd (`--packet-offload ahead`): requests, a rule change made with pylvsadm (the
    daemon tells the engine before it, which puts back the decisions queued and not taken), more
    requests: the round robin alternates across the change as IPVS's does, with the kernel path on
    throughout."""
    if not daemon_available():
        pytest.skip("needs pylvsd and pylvsadm")
    monkeypatch.setenv("PYLVSD_PACKET_OFFLOAD", "ahead")
    with Lab("nat", "packet", out=lambda _s: None, use_daemon=True, udp=False) as run:
        run.build()
        run.start_director()
        time.sleep(1.5)  # ARP for the servers, then the sync that starts the queues
        first = run.requests(6)
        run.pylvsadm(["-e", "-t", "172.25.254.100:80", "-r", "192.168.1.10:80", "-m", "-w", "1"])
        second = run.requests(6)
        time.sleep(1.2)
        stats = run.pylvsadm(["-Ln", "--stats", "-t", "172.25.254.100:80"])
        log = run.n.log("pylvsd")
    answers = first + second
    assert set(answers) == SERVERS, answers
    assert all(a != b for a, b in itertools.pairwise(answers)), answers
    assert _number(_service_row(stats)[2]) >= 12, stats
    assert "Traceback" not in log and "no kernel fast path" not in log, log


@pytest.mark.parametrize("mode", ["nat", "dr", "tun", "fullnat"])
def test_pylvsd_ahead_killed_and_restarted_adopts_what_the_kernel_carries(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pylvsd (`--packet-offload ahead`) killed in the middle of a slow download: the kernel goes on
    forwarding it (the tc filter outlives the process); the next pylvsd finds the maps, adopts the
    connection (NAT, FULLNAT with its local port, DR and TUN by the server their elements name)
    and lists it; the download completes byte for byte, and new connections are served."""
    if not daemon_available():
        pytest.skip("needs pylvsd and pylvsadm")
    monkeypatch.setenv("PYLVSD_PACKET_OFFLOAD", "ahead")
    with Lab(mode, "packet", out=lambda _s: None, use_daemon=True, udp=False) as run:
        run.build()
        run.start_director()
        time.sleep(1.5)  # ARP for the servers, then the sync that starts the queues
        assert run.curl().startswith("welcome"), run.n.log("pylvsd")
        curl = _kill_daemon_mid_download(run)
        _start_daemon(run, "packet")
        time.sleep(1.5)
        listing = run.pylvsadm(["-Lnc"])
        assert curl.poll() is None, run.n.log("slowclient") + run.n.log("pylvsd") + listing
        assert "ESTABLISHED" in listing and "172.25.254.10:" in listing, listing + run.n.log("pylvsd")
        _check_slow_download(run, curl, SLOW_SIZE)
        assert run.curl().startswith("welcome"), run.n.log("pylvsd")
        log = run.n.log("pylvsd")
    m = re.search(r"(\d+) connections adopted", log)
    assert m is not None and int(m.group(1)) >= 1, log
    assert "Traceback" not in log, log
