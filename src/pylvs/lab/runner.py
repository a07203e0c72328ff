"""Run one of the seed's labs end to end: topology, real servers, director, the article's ipvsadm
commands, ten requests, the listing, a measured packet-path check and a drawing of the path.

Used by `pylvs lab MODE`, by the tests (which assert on the LabResult) and by the benchmark."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pylvs.lab import topology as topo
from pylvs.lab.netns import LabError, Netns
from pylvs.lab.probe import Probe
from pylvs.lab.webserver import pattern_bytes

MODES = ("nat", "dr", "tun", "fullnat")
FWD_FLAG = {"nat": "-m", "dr": "-g", "tun": "-i", "fullnat": "--fullnat"}
BULK = 3 * 1024 * 1024


@dataclass
class LabResult:
    mode: str
    engine: str
    answers: list[str] = field(default_factory=list)
    peer: str = ""
    upload_ok: bool = False
    download_ok: bool = False
    udp_answers: list[str] = field(default_factory=list)
    listing: str = ""
    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # role -> label -> packets
    engine_stats: dict[str, float] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    after_restore: list[str] = field(default_factory=list)
    v6_answers: list[str] = field(default_factory=list)
    v6_peer: str = ""
    restored: bool | None = None  # NAT lab through pylvsd: -Sn, -C, -R gave back the same rules

    @property
    def replies_via_director(self) -> int:
        return sum(v for k, v in self.counters.get("lvs", {}).items() if k.endswith(":reply"))

    @property
    def replies6_via_director(self) -> int:
        return sum(v for k, v in self.counters.get("lvs", {}).items() if k.endswith(":reply6"))

    @property
    def requests_via_director(self) -> int:
        return sum(v for k, v in self.counters.get("lvs", {}).items() if k.endswith(":request"))


def daemon_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("pylvs.daemon.main", "pylvs.cli.pylvsadm"))


def _py(*mod: str) -> list[str]:
    return [sys.executable, "-m", *mod]


class Lab:
    """One lab run; use as a context manager so everything is removed even on errors and Ctrl-C."""

    def __init__(
        self,
        mode: str,
        engine: str = "packet",
        keep: bool = False,
        out: Callable[[str], None] = print,
        use_daemon: bool | None = None,
        udp: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown lab {mode!r} (choose {', '.join(MODES)})")
        self.mode = mode
        self.engine = engine
        self.keep = keep
        self.out = out
        self.udp = udp
        self.use_daemon = daemon_available() if use_daemon is None else use_daemon
        self.n = Netns()
        self.t: topo.Topology | None = None
        self.probes: dict[str, Probe] = {}
        self.stats_path = os.path.join(self.n.workdir, "director.json")
        self.sock_path = os.path.join(self.n.workdir, "pylvsd.sock")
        self.result = LabResult(mode, engine)
        self.bare: subprocess.Popen[bytes] | None = None
        self.bare_lines: list[str] = []
        self.web_ports = [80]
        self.transparent = engine == "proxy" and mode == "nat"  # -m on the proxy engine (docs/proxy.md)
        self.ipv6 = engine == "packet"  # IPv6 beside the article's IPv4 (packet engine: NAT, DR, FULLNAT)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            self.out(f"kept: namespaces {', '.join(self.n.names)} (remove with: ip netns del NAME)")
            return
        self.n.close()

    # -- steps ---------------------------------------------------------------------------------
    def build(self) -> None:
        n = self.n
        self.out(f"lab {self.mode}: network namespaces {n.prefix}-* (engine {self.engine})")
        if self.mode in ("nat", "fullnat"):
            self.t = topo.build_nat(n, fullnat=self.mode == "fullnat")
        else:
            self.t = topo.build_dr(n, self.mode)
        t = self.t
        for role, ip in t.rs.items():
            if self.mode == "dr":
                n.run(role, _py("pylvs.cli.pylvs", "realserver", "setup", "--mode", "dr", "--vip", t.vip))
            elif self.mode == "tun":
                n.spawn(
                    role,
                    _py(
                        "pylvs.cli.pylvs",
                        "realserver",
                        "setup",
                        "--mode",
                        "tun",
                        "--vip",
                        t.vip,
                        "--director",
                        topo.DIRECTOR_DIP,
                    ),
                    log_name=f"{role}-agent",
                )
            for port in self.web_ports:
                n.spawn(
                    role,
                    _py("pylvs.lab.webserver", "--ip", ip, "--port", str(port)),
                    log_name=f"{role}-web{port}",
                )
        for role, ip in t.rs.items():
            for port in self.web_ports:
                n.wait_tcp(role, ip, port)
        self._install_probes()

    def _install_probes(self) -> None:
        t = self.t
        assert t is not None
        rips = ", ".join(t.rs.values())
        p = Probe(self.n, "lvs")
        rips6 = ", ".join(topo.RS6.values())
        for ifname in t.director_ifaces:
            p.count(ifname, "request", f"ip daddr {t.vip} th dport 80")
            p.count(ifname, "reply", f"ip saddr {{ {t.vip}, {rips} }} th sport 80")
            if self.ipv6 and t.vip6:
                p.count(ifname, "request6", f"ip6 daddr {t.vip6} th dport 80")
                p.count(ifname, "reply6", f"ip6 saddr {{ {t.vip6}, {rips6} }} th sport 80")
        p.install()
        self.probes["lvs"] = p
        c = Probe(self.n, "client")
        c.count("eth0", "reply", f"ip saddr {t.vip} th sport 80")
        c.install()
        self.probes["client"] = c
        if t.router:
            r = Probe(self.n, "router")
            r.count("eth1", "reply", f"ip saddr {t.vip} th sport 80")
            r.install()
            self.probes["router"] = r

    def commands(self) -> list[str]:
        t = self.t
        assert t is not None
        flag = FWD_FLAG[self.mode]
        cmds = [f"-A -t {t.vip}:80 -s rr"]
        cmds += [f"-a -t {t.vip}:80 -r {ip}:80 {flag}" for ip in t.rs.values()]
        if self.udp:
            cmds += [f"-A -u {t.vip}:80 -s rr"]
            cmds += [f"-a -u {t.vip}:80 -r {ip}:80 {flag}" for ip in t.rs.values()]
        if self.ipv6 and t.vip6:
            cmds += [f"-A -t [{t.vip6}]:80 -s rr"]
            cmds += [f"-a -t [{t.vip6}]:80 -r [{topo.RS6[role]}]:80 {flag}" for role in t.rs]
        return cmds

    def start_director(self, cmds: list[str] | None = None) -> None:
        """Start pylvsd (or the bare lab director) in the director namespace and apply `cmds`."""
        if self.transparent:
            self._transparent_proxy_routing()
        if self.use_daemon:
            rules = os.path.join(self.n.workdir, "rules")
            self.n.spawn(
                "lvs",
                _py(
                    "pylvs.daemon.main", "--socket", self.sock_path, "--rules", rules, "--engine", self.engine
                ),
                log_name="pylvsd",
            )
            self._wait(lambda: os.path.exists(self.sock_path), "pylvsd socket")
        self.configure(self.commands() if cmds is None else cmds)

    def _transparent_proxy_routing(self) -> None:
        """-m on the proxy engine is a transparent proxy: replies addressed to the client must be
        delivered to the director's own socket (docs/proxy.md)."""
        self.n.sh("lvs", "ip rule add fwmark 1 lookup 100\nip route add local 0.0.0.0/0 dev lo table 100")
        subprocess.run(
            ["ip", "netns", "exec", self.n.ns("lvs"), "nft", "-f", "-"],
            input="table ip pylvs_tproxy {\n chain pre { type filter hook prerouting priority mangle; policy accept;\n"
            "  socket transparent 1 meta mark set 1\n }\n}\n",
            text=True,
            check=True,
            capture_output=True,
        )
        self.n.sysctl("lvs", net__ipv4__conf__all__rp_filter=0)

    def configure(self, cmds: list[str]) -> None:
        """Apply ipvsadm command lines: through pylvsadm, or by restarting the bare director with them."""
        self.result.commands += cmds
        if self.use_daemon:
            for c in cmds:
                self.out(f"[director]# pylvsadm {c}")
                self.pylvsadm(c.split())
        else:
            for c in cmds:
                self.out(f"[director]# ipvsadm {c}   (bare lab director)")
                if c.split()[0] == "-C":
                    self.bare_lines = []
                else:
                    self.bare_lines.append(c)
            if self.bare is not None:
                self.bare.terminate()
                self.bare.wait(10)
            if os.path.exists(self.stats_path):
                os.unlink(self.stats_path)
            self.bare = self.n.spawn(
                "lvs",
                _py(
                    "pylvs.lab.director",
                    "--engine",
                    self.engine,
                    "--stats",
                    self.stats_path,
                    *self.bare_lines,
                ),
                log_name="director",
            )
            self._wait(lambda: os.path.exists(self.stats_path), "director")
        time.sleep(0.3)  # let the engine's ARP probes for the real servers come back

    def _wait(self, cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            for p in self.n.procs:
                if p.poll() is not None and p.returncode not in (0, None):
                    break
            time.sleep(0.05)
        raise LabError(f"{what} did not come up:\n{self.n.log('pylvsd') or self.n.log('director')}")

    def pylvsadm(self, args: list[str], stdin: str | None = None) -> str:
        env = dict(os.environ, PYLVS_SOCKET=self.sock_path)
        full = ["ip", "netns", "exec", self.n.ns("lvs"), *_py("pylvs.cli.pylvsadm", *args)]
        p = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=30, env=env)
        if p.returncode != 0:
            raise LabError(f"pylvsadm {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}")
        return p.stdout

    def curl(
        self, path: str = "/", extra: list[str] | None = None, timeout: float = 5, port: int = 80
    ) -> str:
        t = self.t
        assert t is not None
        cmd = ["curl", "-s", "--max-time", str(timeout), *(extra or []), f"http://{t.vip}:{port}{path}"]
        return self.n.run("client", cmd, check=False, timeout=timeout + 5).stdout

    def requests(self, count: int = 10) -> list[str]:
        answers = []
        for _ in range(count):
            a = self.curl().strip() or "(no answer)"
            answers.append(a)
            self.out(f"[client]$ curl http://{self.t.vip if self.t else ''}/  ->  {a}")
        self.result.answers = answers
        return answers

    def extra_checks(self) -> None:
        r = self.result
        r.peer = self.curl("/peer").strip()
        self.out(f"[client]$ curl /peer  ->  the real server sees the client at {r.peer or '(no answer)'}")
        blob = os.urandom(BULK)
        path = os.path.join(self.n.workdir, "upload.bin")
        with open(path, "wb") as fh:
            fh.write(blob)
        up = self.curl(
            "/", ["--data-binary", f"@{path}", "-H", "Content-Type: application/octet-stream"], timeout=30
        )
        r.upload_ok = up.strip() == f"received {BULK} {hashlib.sha256(blob).hexdigest()}"
        self.out(f"[client]$ 3 MB upload  ->  {'ok' if r.upload_ok else 'FAILED: ' + up.strip()[:80]}")
        dl = os.path.join(self.n.workdir, "download.bin")
        self.curl(f"/bytes?n={BULK}", ["-o", dl], timeout=30)
        try:
            with open(dl, "rb") as fh:
                got = fh.read()
        except OSError:
            got = b""
        r.download_ok = got == pattern_bytes(BULK)
        self.out(f"[client]$ 3 MB download  ->  {'ok' if r.download_ok else f'FAILED ({len(got)} bytes)'}")
        if self.ipv6 and self.t is not None and self.t.vip6:
            self.ipv6_checks()
        if self.udp:
            r.udp_answers = self.udp_requests(4)
            for a in r.udp_answers:
                self.out(f"[client]$ udp {self.t.vip if self.t else ''}:80  ->  {a}")

    def ipv6_checks(self) -> None:
        t = self.t
        assert t is not None
        r = self.result
        for _ in range(4):
            p = self.n.run(
                "client",
                ["curl", "-s", "-g", "--max-time", "5", f"http://[{t.vip6}]/"],
                check=False,
                timeout=10,
            )
            r.v6_answers.append(p.stdout.strip() or "(no answer)")
            self.out(f"[client]$ curl http://[{t.vip6}]/  ->  {r.v6_answers[-1]}")
        p = self.n.run(
            "client",
            ["curl", "-s", "-g", "--max-time", "5", f"http://[{t.vip6}]/peer"],
            check=False,
            timeout=10,
        )
        r.v6_peer = p.stdout.strip()
        self.out(
            f"[client]$ curl http://[{t.vip6}]/peer  ->  the real server sees the client at {r.v6_peer or '(no answer)'}"
        )

    def udp_requests(self, count: int) -> list[str]:
        t = self.t
        assert t is not None
        code = (
            "import socket\n"
            f"for i in range({count}):\n"
            "    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\n"
            f"    s.sendto(b'hello', ('{t.vip}', 80))\n"
            "    try:\n"
            "        d,a=s.recvfrom(2048); print(d.decode().strip(), 'from', a[0])\n"
            "    except OSError: print('(no answer)')\n"
        )
        return (
            self.n.run("client", [sys.executable, "-c", code], check=False, timeout=30)
            .stdout.strip()
            .splitlines()
        )

    def collect(self) -> None:
        r = self.result
        if self.use_daemon:
            try:
                r.listing = self.pylvsadm(["-Ln"])
            except LabError as e:
                r.listing = str(e)
        else:
            time.sleep(0.6)  # the bare director writes its figures twice a second
            try:
                with open(self.stats_path) as fh:
                    data = json.load(fh)
                r.listing = data.get("listing", "")
                r.engine_stats = data.get("engine", {})
            except (OSError, ValueError):
                pass
        r.counters = {role: p.read() for role, p in self.probes.items()}
        self.out(f"[director]# {'pylvsadm' if self.use_daemon else 'ipvsadm'} -Ln")
        for line in r.listing.splitlines():
            self.out("  " + line)
        r.path = draw_path(self)
        self.out("Packet path, as measured:")
        for line in r.path:
            self.out("  " + line)

    def save_clear_restore(self) -> None:
        """The article's 2.2 epilogue: save the rules, clear them, restore them from the file."""
        path = os.path.join(self.n.workdir, "ipvsadm")  # the article's /etc/sysconfig/ipvsadm
        saved = self.pylvsadm(["-Sn"])
        with open(path, "w") as fh:
            fh.write(saved)
        self.out(f"[director]# pylvsadm -Sn > {path}")
        for line in saved.splitlines():
            self.out("  " + line)
        self.pylvsadm(["-C"])
        self.out("[director]# pylvsadm -C")
        left = self.pylvsadm(["-Ln"]).splitlines()
        self.out(f"[director]# pylvsadm -Ln   ->  {max(0, len(left) - 3)} services left")
        self.pylvsadm(["-R"], stdin=saved)
        self.out(f"[director]# pylvsadm -R < {path}")
        again = self.pylvsadm(["-Sn"])
        self.result.restored = again == saved
        self.out(
            f"[director]# pylvsadm -Sn   ->  {'the same rules as saved' if self.result.restored else 'DIFFERENT:'}"
        )
        if not self.result.restored:
            self.out(again)

    def run(self) -> LabResult:
        self.build()
        self.start_director()
        self.requests()
        self.extra_checks()
        self.collect()
        if self.mode == "nat" and self.use_daemon:
            self.save_clear_restore()
            ten = self.result.answers
            self.result.after_restore = self.requests(2)
            self.result.answers = ten
        return self.result


def draw_path(lab: Lab) -> list[str]:
    """The route the packets took, drawn from the lab's counters."""
    r = lab.result
    t = lab.t
    assert t is not None
    req = r.requests_via_director
    rep = r.replies_via_director
    got = sum(r.counters.get("client", {}).values())
    rs = " / ".join(f"{k} {v}" for k, v in t.rs.items())
    lines = []
    if t.router:
        direct = sum(r.counters.get("router", {}).values())
        # The probe is an nftables ingress hook: it runs after tc, so it does not count the steady
        # segments the TUN fast path's tc program sends on (the DR flow map's chain runs after it).
        kernel = ""
        if lab.engine == "fastpath" and lab.mode == "tun":
            kernel = " reaching nftables; the steady ones go out from tc, before it"
        lines.append(
            f"client {topo.CLIENT} --> router --> director {topo.DIRECTOR_DIP} [{req} request packets{kernel}]"
        )
        how = {"dr": "new destination MAC", "tun": "IP-in-IP"}.get(lab.mode, "")
        lines.append(f"director --({how})--> {rs}")
        lines.append(
            f"{rs} --> router [{direct} reply packets, straight from the real servers] --> client [{got}]"
        )
        lines.append(
            f"replies seen by the director: {rep}"
            + ("  (bypassed, as LVS-DR/TUN should)" if rep == 0 else "  (!)")
        )
    else:
        lines.append(f"client {topo.CLIENT} --> director {t.vip} eth0 [{req} request packets]")
        what = "VIP->RIP" if lab.mode == "nat" else "CIP->LIP, VIP->RIP"
        lines.append(f"director eth1 --({what})--> {rs}")
        lines.append(f"{rs} --> director eth1 [{rep} reply packets] --> client [{got}]")
    if r.engine_stats:
        es = r.engine_stats
        lines.append(
            f"engine: {int(es.get('in', es.get('packet_in', 0)))} in, "
            f"{int(es.get('out', es.get('packet_out', 0)))} out"
            + (f", {es['cpu_us_per_packet']:.1f} us CPU per packet" if "cpu_us_per_packet" in es else "")
        )
        sent = es.get("kernel_pkts", es.get("packet_kernel_pkts", 0.0))
        if sent:
            # the fast path's tc program (engines/packet/offload.py): these never reached Python,
            # nor the probe above (an nftables ingress hook, which runs after tc)
            lines.append(f"kernel fast path (tc eBPF): {int(sent)} packets, not in the counts above")
    return lines
