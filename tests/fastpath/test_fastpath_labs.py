"""The seed's labs with the kernel fast path (`pylvsd --engine fastpath`): NAT, FULLNAT, DR and
firewall marks, each through pylvsd + pylvsadm in fresh namespaces; and pylvsd killed during a
download: the download completes and the restarted daemon lists the connection."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from pylvs.lab.fwmark import run_lab as run_fwmark_lab
from pylvs.lab.netns import LabError, is_root
from pylvs.lab.runner import Lab, LabResult, daemon_available
from pylvs.lab.webserver import pattern_bytes

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("nft", "curl", "iptables", "iptables-restore")),
        reason="needs nft, iptables and curl",
    ),
    pytest.mark.skipif(not daemon_available(), reason="needs pylvsd and pylvsadm"),
]

ALTERNATE = (
    ["welcome to 192.168.1.10", "welcome to 192.168.1.20"] * 5,
    ["welcome to 192.168.1.20", "welcome to 192.168.1.10"] * 5,
)
_results: dict[str, tuple[LabResult, str, str]] = {}
_stats: dict[str, str] = {}
_ct: dict[str, list[tuple[int, int]]] = {}
_lnc_later: dict[str, str] = {}
# (TCP state, seconds left) of each conntrack entry of ours, printed from inside the director
_CT_SCRIPT = (
    "from pylvs.netlink import conntrack as ct\n"
    "from pylvs.engines.packet.fastpath import tables\n"
    "for e in ct.dump(tables.OURS, tables.OURS):\n"
    "    print(e.orig[0], e.tcp_state, e.timeout)\n"
)


def lab(mode: str) -> tuple[LabResult, str, str]:
    """(result, `pylvsadm -Lnc`, pylvsd's log) of one lab run with the fast path."""
    if mode not in _results:
        with Lab(mode, "fastpath", out=lambda _s: None, use_daemon=True) as run:
            # The lab's steps without the NAT lab's save/clear/restore epilogue (it resets counters).
            run.build()
            run.start_director()
            run.requests()
            run.extra_checks()
            run.collect()
            r = run.result
            conns = run.pylvsadm(["-Lnc"])
            # the counter syncs after the last transfer: a closed connection's last counters come
            # with its DESTROY event or, at the latest, with the one a lookup two syncs after it
            # closed makes the kernel send
            time.sleep(8.5)
            _lnc_later[mode] = run.pylvsadm(["-Lnc"])
            _stats[mode] = run.pylvsadm(["-Ln", "--stats", "-t", f"{run.t.vip}:80"]) if run.t else ""
            out = run.n.run("lvs", [run.n.python(), "-c", _CT_SCRIPT], check=False).stdout
            _ct[mode] = [
                (int(st), int(tmo)) for p, st, tmo in (ln.split() for ln in out.splitlines()) if p == "6"
            ]
            _results[mode] = (r, conns, run.n.log("pylvsd"))
    return _results[mode]


@pytest.mark.parametrize("mode", ["nat", "fullnat", "dr", "tun"])
def test_lab_passes_with_the_fast_path(mode: str) -> None:
    r, conns, log = lab(mode)
    assert r.answers in ALTERNATE, (r.answers, log)
    assert r.upload_ok and r.download_ok, log
    # The lab's UDP service too (UDP DR and TUN stay on the per-packet path).
    assert len(r.udp_answers) == 4 and all(a.startswith("welcome") for a in r.udp_answers), r.udp_answers
    # Every connection the kernel forwarded is in the core's table.
    assert conns.count("172.25.254.10:") >= 12, conns


@pytest.mark.parametrize("mode", ["nat", "fullnat"])
def test_nat_replies_pass_the_director(mode: str) -> None:
    r, _c, _l = lab(mode)
    assert r.requests_via_director > 0 and r.replies_via_director > 0, r.counters


def test_dr_replies_bypass_the_director() -> None:
    r, _c, _l = lab("dr")
    assert r.requests_via_director > 0, r.counters
    assert r.replies_via_director == 0, r.counters
    assert sum(r.counters["router"].values()) > 0


def test_real_server_sees_client_or_director() -> None:
    assert lab("nat")[0].peer.startswith("172.25.254.10:")
    assert lab("dr")[0].peer.startswith("172.25.254.10:")
    assert lab("fullnat")[0].peer.startswith("192.168.1.100:")


@pytest.mark.parametrize("mode", ["nat", "fullnat", "dr"])
def test_kernel_counters_reach_the_stats(mode: str) -> None:
    """The 3 MB upload and download went through the kernel, yet the service's counters hold them
    (conntrack accounting for NAT/FULLNAT; the DR flow set's element counters, client side only)."""
    lab(mode)
    line = next(ln for ln in _stats[mode].splitlines() if ln.startswith("TCP"))
    _proto, _addr, conns, _inpkts, outpkts, inbytes, outbytes = line.split()
    assert int(conns) >= 12 and int(inbytes) >= 3 * 1024 * 1024, _stats[mode]
    if mode == "dr":
        assert int(outbytes) == 0
    else:
        assert int(outbytes) >= 3 * 1024 * 1024 and int(outpkts) > 100, _stats[mode]


@pytest.mark.parametrize("mode", ["nat", "fullnat"])
def test_closed_connections_leave_conntrack_within_seconds(mode: str) -> None:
    """Our TCP connections carry the short TIME_WAIT policy: none of the lab's closed ones waits two
    minutes in conntrack (its DESTROY event brings the last counters), while the core keeps its
    TIME_WAIT entries as IPVS does."""
    _r, conns, _log = lab(mode)
    from pylvs.engines.packet.fastpath import tables
    from pylvs.netlink import conntrack as ct

    closing = [tmo for st, tmo in _ct[mode] if st in (ct.CT_TIME_WAIT, ct.CT_CLOSE)]
    assert all(tmo <= tables.CLOSED_LINGER for tmo in closing), _ct[mode]
    assert "ESTABLISHED" in conns or "CLOSE_WAIT" in conns or "TIME_WAIT" in conns, conns
    later = [ln.split()[2] for ln in _lnc_later[mode].splitlines()[2:] if ln.startswith("TCP")]
    assert later and set(later) == {"TIME_WAIT"}, _lnc_later[mode]


def test_udp_dr_stays_on_the_per_packet_path_and_says_so() -> None:
    r, _c, log = lab("dr")
    assert "stays on the per-packet path" in log, log
    assert len(r.udp_answers) == 4 and all(a.startswith("welcome") for a in r.udp_answers), r.udp_answers


def test_tun_stays_on_the_per_packet_path_and_says_so() -> None:
    r, _c, log = lab("tun")
    assert "service TCP 192.168.1.220:80 (tunnel) stays on the per-packet path" in log, log
    assert r.peer.startswith("172.25.254.10:")


def test_tun_steady_segments_go_through_the_kernel() -> None:
    """TUN's per-packet path has a kernel fast path of its own (engines/packet/offload.py): once the
    core has decided a connection, its segments are put into IP-in-IP by a tc program.
    The download's acknowledgements are such segments; the real server's agent takes their inner
    checksums still partial. Everything else of the lab still passes, and the replies bypass us."""
    with Lab("tun", "fastpath", out=lambda _s: None, use_daemon=False) as run:
        run.build()
        run.start_director()
        run.requests()
        run.extra_checks()
        time.sleep(1.2)  # the engine reads the kernel's counters every second
        run.collect()
        r = run.result
        es = r.engine_stats
    assert r.answers in ALTERNATE and r.upload_ok and r.download_ok, (r.answers, es)
    assert r.peer.startswith("172.25.254.10:")
    assert r.replies_via_director == 0, r.counters
    assert es.get("packet_kernel_pkts", 0) > 10 and es.get("packet_flows_added", 0) >= 1, es
    # ... and Python did not handle them too: the director's probe (nftables ingress, which runs
    # after tc) sees only what the kernel left, and Python forwarded no more than that
    assert es["packet_in"] <= r.requests_via_director, (es, r.counters)


def test_fwmark_lab_passes_with_the_fast_path() -> None:
    res = run_fwmark_lab("fastpath", out=lambda _s: None, use_daemon=True)
    assert len(res.servers(res.before)) == 2, res.before
    assert len(res.servers(res.after)) == 1, res.after
    assert all(a.startswith("welcome") for _p, a in res.after)
    assert "FWM  66" in res.listing


def _daemon(lab: Lab) -> subprocess.Popen[bytes]:
    return next(
        p for p in lab.n.procs if "pylvs.daemon.main" in " ".join(map(str, p.args)) and p.poll() is None
    )


def _start_daemon(lab: Lab, engine: str = "fastpath") -> None:
    rules = os.path.join(lab.n.workdir, "rules")
    lab.n.spawn(
        "lvs",
        [
            lab.n.python(),
            "-m",
            "pylvs.daemon.main",
            "--socket",
            lab.sock_path,
            "--rules",
            rules,
            "--engine",
            engine,
        ],
        log_name="pylvsd",
    )
    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            lab.pylvsadm(["-Ln"])
            return
        except LabError:
            time.sleep(0.1)
    raise LabError("pylvsd did not come back:\n" + lab.n.log("pylvsd"))


def _connect(run: Lab, timeout: float) -> subprocess.Popen[bytes]:
    """A client connecting to the VIP (one GET); its log says what happened."""
    assert run.t is not None
    code = (
        "import socket,time\n"
        f"s=socket.socket(); s.settimeout({timeout}); t=time.monotonic()\n"
        "try:\n"
        f"    s.connect(('{run.t.vip}', 80)); s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
        "    print('answer', s.recv(4096).split(b'\\r\\n\\r\\n')[-1].decode().strip())\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
        "print('after %.1f s' % (time.monotonic() - t))\n"
    )
    return run.n.spawn("client", [run.n.python(), "-c", code], log_name=f"connect{len(run.n.procs)}")


def _outcome(run: Lab, p: subprocess.Popen[bytes], wait: float) -> str:
    p.wait(wait)
    return run.n.log(f"connect{run.n.procs.index(p)}")


def test_queue_bypass_no_holds_new_connections_until_pylvsd_is_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pylvsd --queue-bypass no` (here through its environment variable): with pylvsd gone, a new
    connection's SYNs are dropped, not answered; the client's retries get through once it is back.
    (The default, fail open, is in the test below: the director's own stack refuses at once.)"""
    monkeypatch.setenv("PYLVSD_QUEUE_BYPASS", "no")
    with Lab("nat", "fastpath", out=lambda _s: None, use_daemon=True, udp=False) as run:
        run.build()
        run.start_director()
        assert run.curl().startswith("welcome"), run.n.log("pylvsd")
        assert "fail-closed" in run.n.log("pylvsd")
        d = _daemon(run)
        os.killpg(d.pid, signal.SIGKILL)
        d.wait(5)
        held = _connect(run, 30.0)
        time.sleep(2.0)
        assert held.poll() is None, "the SYN was answered with nobody to schedule it"
        _start_daemon(run)  # the same environment: fail closed again
        out = _outcome(run, held, 30)
        assert "answer welcome to 192.168.1." in out, out + run.n.log("pylvsd")


SLOW_SIZE = 4 * 1024 * 1024


def _slow_download(run: Lab, size: int) -> subprocess.Popen[bytes]:
    """A slow reader with a small receive buffer downloads `size` bytes from the VIP into the lab's
    slow.bin: the transfer lasts ~12 s, packets all along."""
    assert run.t is not None
    out = os.path.join(run.n.workdir, "slow.bin")
    code = (
        "import socket,sys,time\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)\n"
        f"s.settimeout(30); s.connect(('{run.t.vip}', 80))\n"
        f"s.sendall(b'GET /bytes?n={size} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n"
        "data=b''\n"
        "while True:\n"
        "    c=s.recv(16384)\n"
        "    if not c: break\n"
        "    data+=c; time.sleep(0.04)\n"
        f"open('{out}','wb').write(data.partition(b'\\r\\n\\r\\n')[2])\n"
    )
    return run.n.spawn("client", [run.n.python(), "-c", code], log_name="slowclient")


def _check_slow_download(run: Lab, p: subprocess.Popen[bytes], size: int) -> None:
    """The download ends and every byte arrived right."""
    p.wait(60)
    with open(os.path.join(run.n.workdir, "slow.bin"), "rb") as fh:
        got = fh.read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(pattern_bytes(size)).digest(), len(got)


def _kill_daemon_mid_download(run: Lab) -> subprocess.Popen[bytes]:
    """A slow download started, then pylvsd killed (SIGKILL): the download, still going a second
    later with nobody in user space."""
    curl = _slow_download(run, SLOW_SIZE)
    time.sleep(1.5)
    d = _daemon(run)
    os.killpg(d.pid, signal.SIGKILL)
    d.wait(5)
    time.sleep(1.0)  # the connection keeps flowing with nobody in user space
    assert curl.poll() is None, "the download ended early"
    return curl


@pytest.mark.parametrize("mode", ["nat", "dr", "tun"])
def test_killed_daemon_download_completes_and_restart_adopts(mode: str) -> None:
    with Lab(mode, "fastpath", out=lambda _s: None, use_daemon=True, udp=False) as run:
        run.build()
        run.start_director()
        assert run.curl().startswith("welcome"), run.n.log("pylvsd")
        curl = _kill_daemon_mid_download(run)
        if mode == "nat":  # fail open (the default): a new connection reaches the director itself
            refused = _outcome(run, _connect(run, 5.0), 10)
            assert "ConnectionRefusedError" in refused, refused
        _start_daemon(run)
        time.sleep(1.5)  # one conntrack / flow-map sync
        listing = run.pylvsadm(["-Lnc"])
        assert curl.poll() is None, "the download ended before the restarted daemon could list it"
        assert "ESTABLISHED" in listing and "172.25.254.10:" in listing, listing + run.n.log("pylvsd")
        _check_slow_download(run, curl, SLOW_SIZE)
        # New connections are scheduled by the new daemon.
        assert run.curl().startswith("welcome"), run.n.log("pylvsd")
        log = run.n.log("pylvsd")
        if mode == "tun":
            # the TUN fast path's tc filter outlived the killed daemon; the new one took its maps
            m = re.search(r"(\d+) connections adopted", log)
            assert m is not None and int(m.group(1)) >= 1, log
        else:
            assert "adopting" in log or mode == "dr"


_SAME_PORT = r"""
import json, socket, sys
answers = []
for _ in range(4):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 41000))
    s.settimeout(3)
    try:
        s.connect((sys.argv[1], 80))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        answers.append(data.split(b"\r\n\r\n", 1)[-1].decode().strip())
    except OSError as e:
        answers.append(f"error: {e}")
    finally:
        s.close()
print(json.dumps(answers))
"""


def test_dr_client_port_reused_for_another_real_server() -> None:
    """A client reuses its port at once (the server closed first, so the client keeps no TIME_WAIT)
    and rr sends the new connection to the other real server while the old one's flow element is
    still in the kernel: the element is replaced (it was refused as existing, and the connection lost)."""
    import json

    with Lab("dr", "fastpath", out=lambda _s: None, use_daemon=False, udp=False) as run:
        run.build()
        run.start_director()
        assert run.t is not None
        p = run.n.run("client", [run.n.python(), "-c", _SAME_PORT, run.t.vip], timeout=30)
        answers = json.loads(p.stdout)
        time.sleep(0.7)  # the bare director writes its figures every 0.5 s
        with open(run.stats_path) as fh:
            syns = json.load(fh)["engine"]["dr_syn"]
    assert syns == 4  # no SYN dropped and sent again by the client
    assert answers in (
        ["welcome to 192.168.1.10", "welcome to 192.168.1.20"] * 2,
        ["welcome to 192.168.1.20", "welcome to 192.168.1.10"] * 2,
    ), answers


def test_tun_kernel_path_survives_a_rule_change_and_counts_reach_the_stats() -> None:
    """A slow TUN download through pylvsd: its acknowledgements go to the kernel's fast path after a
    few packets. A rule change mid-transfer takes every flow back to Python (the map is cleared);
    the connection goes on, goes back to the kernel, and the service's counters hold the packets the
    kernel sent (Python sees a few dozen of them at most)."""
    with Lab("tun", "fastpath", out=lambda _s: None, use_daemon=True, udp=False) as run:
        run.build()
        run.start_director()
        assert run.curl().startswith("welcome"), run.n.log("pylvsd")
        assert run.t is not None
        vip = run.t.vip
        slow = _slow_download(run, SLOW_SIZE)
        time.sleep(3.0)
        run.pylvsadm(["-E", "-t", f"{vip}:80", "-s", "wrr"])  # a rule change: the flow map is cleared
        time.sleep(2.0)
        assert slow.poll() is None, "the download ended early"
        listing = run.pylvsadm(["-Lnc"])
        assert "ESTABLISHED" in listing and "172.25.254.10:" in listing, listing
        _check_slow_download(run, slow, SLOW_SIZE)
        time.sleep(1.5)  # the engine reads the kernel's counters every second
        stats = run.pylvsadm(["-Ln", "--stats", "-t", f"{vip}:80"])
        line = next(ln for ln in stats.splitlines() if ln.startswith("TCP"))
        inpkts = int(line.split()[3])
        # The director's probe (nftables ingress, after tc) counts only the frames Python got; the
        # service's counters hold those and the ones the kernel sent.
        python_saw = run.probes["lvs"].read().get("eth0:request", 0)
        assert inpkts - python_saw > 100, (stats, python_saw)
        assert run.curl().startswith("welcome"), run.n.log("pylvsd")
