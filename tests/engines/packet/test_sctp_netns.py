"""SCTP through `pylvsd --engine packet` in the seed's lab networks (NAT, DR, TUN, FULLNAT).

The kernel has no SCTP module, so both ends speak SCTP on raw protocol-132 sockets
(pylvs.lab.sctppeer): a client association (INIT, COOKIE_ECHO, DATA, SHUTDOWN...) to the VIP, a peer on
each real server that answers with its own name and the client address it saw. Each side checks the
CRC32c of every packet it receives. The director's nft probe counts where the packets went, and
`pylvsadm -Lnc` shows the core's SCTP states during and after the association.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from pylvs.lab import topology as topo
from pylvs.lab.netns import is_root
from pylvs.lab.runner import FWD_FLAG, Lab, daemon_available
from pylvs.lab.sctppeer import endpoint

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(not is_root(), reason="needs root for network namespaces"),
    pytest.mark.skipif(
        shutil.which("nft") is None or shutil.which("iptables") is None, reason="needs nft, iptables"
    ),
    pytest.mark.skipif(not daemon_available(), reason="needs pylvsd and pylvsadm"),
]

PORT = 80
MESSAGES = 20


@dataclass
class SctpRun:
    mode: str
    first: dict[str, Any] = field(default_factory=dict)  # the held association, after its data
    closed: dict[str, Any] = field(default_factory=dict)  # ... and after its shutdown
    second: list[dict[str, Any]] = field(default_factory=list)  # a second association's JSON lines
    during: str = ""  # pylvsadm -Lnc while the first association was established
    after: str = ""  # ... and after it was shut down
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    listing: str = ""
    stats: str = ""  # pylvsadm -Ln --stats at the end
    vip: str = ""
    servers: list[str] = field(default_factory=list)
    logs: str = ""

    @property
    def v6(self) -> bool:
        return self.mode.endswith("6")

    @property
    def replies_via_director(self) -> int:
        label = ":reply6" if self.v6 else ":reply"
        return sum(v for k, v in self.counters.get("lvs", {}).items() if k.endswith(label))

    @property
    def requests_via_director(self) -> int:
        label = ":request6" if self.v6 else ":request"
        return sum(v for k, v in self.counters.get("lvs", {}).items() if k.endswith(label))


def _client(lab: Lab, vip: str, hold: bool, messages: int = 2) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "pylvs.lab.sctppeer", "client", "--vip", vip, "--port", str(PORT)]
    cmd += ["--messages", str(messages)]
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.n.ns("client"), *cmd, *(["--hold"] if hold else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _line(p: subprocess.Popen[str]) -> dict[str, Any]:
    assert p.stdout is not None
    line = p.stdout.readline()
    try:
        data: dict[str, Any] = json.loads(line)
    except ValueError:
        return {"error": f"client said {line!r}"}
    return data


def run_sctp(mode: str) -> SctpRun:
    r = SctpRun(mode)
    fwmark = mode == "fwmark"  # a NAT firewall-mark service: the marked packets come through NFQUEUE
    base = "nat" if fwmark else mode.removesuffix("6")  # nat6, dr6, fullnat6: the lab's IPv6 addresses
    with Lab(base, "packet", out=lambda _s: None, use_daemon=True, udp=False) as lab:
        lab.ipv6 = r.v6
        lab.build()
        assert lab.t is not None
        r.vip = vip = lab.t.vip6 if r.v6 else lab.t.vip
        servers = {role: topo.RS6[role] if r.v6 else ip for role, ip in lab.t.rs.items()}
        r.servers = list(servers.values())
        if fwmark:
            mark = [
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-d",
                vip,
                "-p",
                "sctp",
                "-j",
                "MARK",
                "--set-mark",
                "66",
            ]
            lab.n.run("lvs", ["iptables", "-w", *mark])
            cmds = ["-A -f 66 -s rr"] + [f"-a -f 66 -r {ip} -m" for ip in lab.t.rs.values()]
        else:
            flag = FWD_FLAG[base]
            cmds = [f"-A --sctp-service {endpoint(vip, PORT)} -s rr"]
            cmds += [
                f"-a --sctp-service {endpoint(vip, PORT)} -r {endpoint(ip, PORT)} {flag}"
                for ip in servers.values()
            ]
        lab.start_director(cmds)
        for role, ip in servers.items():
            lab.n.spawn(
                role, [sys.executable, "-m", "pylvs.lab.sctppeer", "serve", "--name", ip], f"{role}-sctp"
            )
        end = time.monotonic() + 10
        while not all("sctp peer" in lab.n.log(f"{role}-sctp") for role in lab.t.rs):
            assert time.monotonic() < end, "the SCTP peers did not start"
            time.sleep(0.05)
        p = _client(lab, vip, hold=True)
        try:
            r.first = _line(p)
            r.during = lab.pylvsadm(["-Lnc"])
            assert p.stdin is not None
            p.stdin.write("\n")
            p.stdin.flush()
            r.closed = _line(p)
            p.wait(15)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        r.after = lab.pylvsadm(["-Lnc"])
        q = _client(lab, vip, hold=False, messages=MESSAGES)  # enough for the engine's fast path
        out, _ = q.communicate(timeout=30)
        r.second = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        r.stats = lab.pylvsadm(["-Ln", "--stats"])
        lab.collect()
        r.counters = lab.result.counters
        r.listing = lab.result.listing
        r.logs = "\n".join(lab.n.log(n) for n in ("pylvsd", "rs1-sctp", "rs2-sctp"))
    return r


_runs: dict[str, SctpRun] = {}


def sctp(mode: str) -> SctpRun:
    if mode not in _runs:
        _runs[mode] = run_sctp(mode)
    return _runs[mode]


MODES = ["nat", "dr", "tun", "fullnat", "fwmark", "nat6", "dr6", "fullnat6"]


@pytest.mark.parametrize("mode", MODES)
def test_associations_reach_both_real_servers_with_good_checksums(mode: str) -> None:
    r = sctp(mode)
    assert r.first.get("established"), (r.first, r.logs)
    assert r.closed.get("closed"), (r.closed, r.logs)
    assert r.second and r.second[0].get("established") and r.second[-1].get("closed"), (r.second, r.logs)
    assert [a["got"] for a in r.second[0]["answers"]] == [f"message {i}" for i in range(MESSAGES)]
    answers = r.first["answers"] + r.second[0]["answers"]
    assert {a["server"] for a in answers} == set(r.servers)  # rr: one each
    assert all(a["bad_crc"] == 0 for a in answers), answers  # the real servers saw no bad CRC
    assert r.first["bad_crc"] == 0 and r.closed["bad_crc"] == 0 and r.second[0]["bad_crc"] == 0
    # every answer came from the VIP (NAT/FULLNAT: rewritten by the director; DR/TUN: sent as the VIP)
    assert r.first["from"] == [r.vip] and r.second[0]["from"] == [r.vip]


@pytest.mark.parametrize("mode", ["nat", "dr", "tun", "fwmark", "nat6", "dr6"])
def test_real_server_sees_the_client(mode: str) -> None:
    r = sctp(mode)
    client = topo.CLIENT6 if r.v6 else topo.CLIENT
    for run in (r.first, r.second[0]):
        assert all(a["peer"] == endpoint(client, run["sport"]) for a in run["answers"]), run


@pytest.mark.parametrize("mode", ["fullnat", "fullnat6"])
def test_fullnat_real_server_sees_the_director(mode: str) -> None:
    r = sctp(mode)
    lip = "fd00:192:168:1::100" if r.v6 else "192.168.1.100"
    for a in r.first["answers"] + r.second[0]["answers"]:
        addr, _, port = a["peer"].rpartition(":")
        assert addr.strip("[]") == lip and 10000 <= int(port) <= 30000, a


@pytest.mark.parametrize("mode", ["nat", "fullnat", "fwmark", "nat6", "fullnat6"])
def test_replies_pass_the_director(mode: str) -> None:
    r = sctp(mode)
    assert r.requests_via_director > 0 and r.replies_via_director > 0, r.counters


@pytest.mark.parametrize("mode", ["dr", "tun", "dr6"])
def test_replies_bypass_the_director(mode: str) -> None:
    r = sctp(mode)
    assert r.requests_via_director > 0 and r.replies_via_director == 0, r.counters
    if not r.v6:  # the router's probe counts IPv4 replies
        assert sum(r.counters["router"].values()) > 0


@pytest.mark.parametrize("mode", MODES)
def test_connection_table_shows_sctp_states(mode: str) -> None:
    r = sctp(mode)
    sport = r.first["sport"]
    mine = [ln for ln in r.during.splitlines() if f":{sport} " in ln + " "]
    assert mine and mine[0].startswith("SCTP") and " ESTABLISHED " in mine[0], r.during
    mine = [ln for ln in r.after.splitlines() if f":{sport} " in ln + " "]
    assert mine and " CLOSED " in mine[0], r.after
    if mode == "fwmark":
        assert "FWM  66" in r.listing
    else:
        assert "SCTP" in r.listing and endpoint(r.vip, PORT) in r.listing


def _service_stats(text: str) -> list[int]:
    """Conns, InPkts, OutPkts, InBytes, OutBytes of the first service in `pylvsadm -Ln --stats`."""
    line = next(ln for ln in text.splitlines() if ln.startswith(("SCTP", "FWM")))
    return [int(x) for x in line.split()[-5:]]


@pytest.mark.parametrize("mode", MODES)
def test_counters_match_the_packets_seen_also_on_the_fast_path(mode: str) -> None:
    r = sctp(mode)
    conns, inpkts, outpkts, _ib, _ob = _service_stats(r.stats)
    assert conns == 2, r.stats
    # every request packet the director's interfaces saw counted once, whether through the core or not
    assert inpkts == r.requests_via_director > 2 * MESSAGES, (r.stats, r.counters)
    assert outpkts == r.replies_via_director, (r.stats, r.counters)
