"""Packet engine benchmark: one run in network namespaces (root), every forwarding mode, beside the
kernel forwarding the same traffic (nftables dnat / netdev fwd) as the reference.

For each mode: requests/s (a new TCP connection per request, bounded in time and count), bulk MB/s
(one download through the director), and the director's CPU microseconds per forwarded packet (the
engine process's CPU time over the packets it forwarded in both directions, start-up excluded), and
per frame through the director's interfaces (`d us/frame`: the same figure for an engine whose kernel
fast path forwards frames the process never sees, e.g. `--variants 'fast={"engine":"fastpath"}'`).

    sudo .venv/bin/python bench/bench_packet.py [--seconds 4] [--bulk-mb 100] [--modes nat,dr,tun,fullnat]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from socket import inet_aton as socket_aton
from typing import TypeVar

from _curl import curl_transfer  # bench/ is the script's directory

from pylvs.lab import topology as topo
from pylvs.lab.netns import Netns, is_root
from pylvs.lab.runner import Lab

LOADGEN = r"""
import asyncio, json, sys, time
vip, seconds, conc, limit = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
done = 0; errors = 0
async def worker(end):
    global done, errors
    while time.monotonic() < end and done < limit:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(vip, 80), 2)
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await asyncio.wait_for(r.read(), 2)
            w.close()
            done += 1
        except Exception:
            errors += 1
async def main():
    end = time.monotonic() + seconds
    t0 = time.monotonic()
    await asyncio.gather(*(worker(end) for _ in range(conc)))
    print(json.dumps({"requests": done, "errors": errors, "seconds": time.monotonic() - t0}))
asyncio.run(main())
"""


CPUACCT = "/sys/fs/cgroup/cpuacct"


class LabCpu:
    """CPU of everything the bench starts (client, real servers, director, and the kernel's softirq
    work that runs in their context, which is where veth delivery and kernel forwarding happen): the
    bench moves itself into a cpuacct cgroup of its own, so every process it spawns is counted and
    the other work on the machine is not. Falls back to the whole machine (/proc/stat) without it."""

    def __init__(self) -> None:
        self.path: str | None = None
        if os.path.isdir(CPUACCT):
            path = os.path.join(CPUACCT, "plvbench-" + secrets.token_hex(3))
            try:
                os.mkdir(path)
                with open(os.path.join(path, "cgroup.procs"), "w") as fh:
                    fh.write(str(os.getpid()))
                self.path = path
            except OSError:
                self.close_path(path)

    @staticmethod
    def close_path(path: str) -> None:
        try:
            with open(os.path.join(CPUACCT, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
            os.rmdir(path)
        except OSError:
            pass

    def close(self) -> None:
        if self.path is not None:
            self.close_path(self.path)
            self.path = None

    @property
    def scope(self) -> str:
        return "lab cgroup" if self.path else "whole machine"

    def sample(self) -> tuple[float, float, float]:
        """(total, user, system) CPU seconds so far; the user/system split is tick-sampled."""
        hz = os.sysconf("SC_CLK_TCK")
        if self.path is not None:
            with open(os.path.join(self.path, "cpuacct.usage")) as fh:
                total = int(fh.read()) / 1e9
            st = dict(line.split() for line in open(os.path.join(self.path, "cpuacct.stat")))
            user, system = int(st["user"]) / hz, int(st["system"]) / hz
            both = user + system or 1.0
            return total, total * user / both, total * system / both
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
        user, system = (f[0] + f[1]) / hz, (f[2] + f[5] + f[6]) / hz
        return user + system, user, system


def rx_frames(n: Netns, ifaces: list[str]) -> float:
    """Frames the director's interfaces received: the packets it had to forward, whoever forwards."""
    total = 0
    for i in ifaces:
        p = n.run("lvs", ["cat", f"/sys/class/net/{i}/statistics/rx_packets"], check=False)
        total += int(p.stdout.strip() or 0)
    return float(total)


def load(n: Netns, vip: str, seconds: float, conc: int = 8, limit: int = 200000) -> dict[str, float]:
    p = n.run(
        "client",
        [sys.executable, "-c", LOADGEN, vip, str(seconds), str(conc), str(limit)],
        timeout=seconds + 30,
    )
    d: dict[str, float] = json.loads(p.stdout)
    d["rps"] = d["requests"] / d["seconds"]
    return d


def bulk(n: Netns, vip: str, mb: int) -> float:
    size, secs = curl_transfer(n, f"http://{vip}/bytes?n={mb << 20}")
    return int(size) / float(secs) / 1e6 if float(secs) else 0.0


def offloads_off(n: Netns) -> None:
    """TSO/GSO/GRO off on every interface of the lab: the stream phase then sends MTU-sized frames,
    so its packets are packets (not 64 KB super-frames) and nearly all take the steady path."""
    for ns in n.names:
        p = subprocess.run(
            ["ip", "-n", ns, "-j", "link", "show"], capture_output=True, text=True, check=False
        )
        for link in json.loads(p.stdout or "[]"):
            if link.get("link_type") == "ether":
                subprocess.run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        "ethtool",
                        "-K",
                        link["ifname"],
                        "tso",
                        "off",
                        "gso",
                        "off",
                        "gro",
                        "off",
                    ],
                    capture_output=True,
                    check=False,
                )


def upload(n: Netns, vip: str, mb: int) -> float:
    """One POST of `mb` MB to the real servers through the director (its data crosses the director
    in every mode, also DR and TUN); MB/s."""
    path = os.path.join(n.workdir, "stream.bin")
    with open(path, "wb") as fh:
        fh.write(os.urandom(1 << 20) * mb)
    words = curl_transfer(
        n,
        f"http://{vip}/",
        "--data-binary",
        f"@{path}",
        "-H",
        "Content-Type: application/octet-stream",
        field="size_upload",
    )
    os.unlink(path)
    size, secs = ([*words, "0", "0"])[:2]
    return int(float(size)) / float(secs) / 1e6 if float(secs) else 0.0


PERF_HZ = 999
# Kernel functions of the forwarding namespace only (in the kernel reference run no other namespace
# has netfilter hooks): IP forwarding, conntrack/NAT and the netdev ingress chain with its fwd. Route
# lookups and ip_rcv itself are not counted (other namespaces run them too): a lower bound.
FWD_SYMS = {"ip_forward", "nf_hook_slow", "nf_conntrack_in", "nft_do_chain_netdev", "nf_fwd_netdev_egress"}
# Receive processing of whatever namespace a frame is delivered to, when it runs on the sender's CPU.
RX_SYMS = {"process_backlog", "__netif_receive_skb_core", "net_rx_action", "__netif_receive_skb_one_core"}


def perf_start(path: str) -> subprocess.Popen[bytes] | None:
    try:
        p = subprocess.Popen(
            ["perf", "record", "-a", "-g", "-F", str(PERF_HZ), "-o", path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None
    time.sleep(0.5)
    return p


def perf_stop(
    p: subprocess.Popen[bytes] | None, path: str, frames: float, pid: int | None
) -> dict[str, float]:
    """Sample counts turned into µs per frame: kernel forwarding (every process), and for `pid` (the
    director) its user part, its own kernel part, and the receivers' stack run in its context."""
    if p is None or not frames:
        return {}
    p.send_signal(2)
    p.wait(30)
    out = subprocess.run(
        ["perf", "script", "-F", "pid,ip,sym", "-i", path], capture_output=True, text=True, check=False
    ).stdout
    os.unlink(path)
    counts = {"fwd": 0, "d_user": 0, "d_kernel": 0, "d_rx": 0}

    def done(spid: int, syms: set[str], kernel: bool) -> None:
        if syms & FWD_SYMS:
            counts["fwd"] += 1
        if pid is not None and spid == pid:
            if syms & RX_SYMS:
                counts["d_rx"] += 1
            elif kernel:
                counts["d_kernel"] += 1
            else:
                counts["d_user"] += 1

    spid, syms, kernel = -1, set(), False
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line.startswith("\t"):  # a sample header: the pid, right-aligned (may start with spaces)
            if spid >= 0:
                done(spid, syms, kernel)
            spid, syms, kernel = int(line.split()[0]), set(), False
            continue
        parts = line.split()
        if len(parts) >= 2:
            syms.add(parts[1])
            kernel = kernel or parts[0].startswith("ffffffff")
    if spid >= 0:
        done(spid, syms, kernel)
    per = 1e6 / PERF_HZ / frames
    return {f"perf_{k}": v * per for k, v in counts.items()}


T = TypeVar("T")


def measured(
    n: Netns, ifaces: list[str], cpu: LabCpu, perf: bool, pid: int | None, tag: str, run: Callable[[], T]
) -> tuple[T, float, tuple[float, float, float], tuple[float, float, float], dict[str, float]]:
    """`run()` with what is measured around it: its result, the frames the director's interfaces
    received, the lab's CPU before and after, and (with perf) the per-frame split."""
    path = os.path.join(n.workdir, f"perf-{tag}.data")
    rec = perf_start(path) if perf else None
    f0, c0 = rx_frames(n, ifaces), cpu.sample()
    r = run()
    f1, c1 = rx_frames(n, ifaces), cpu.sample()
    return r, f1 - f0, c0, c1, perf_stop(rec, path, f1 - f0, pid)


def stream(
    n: Netns, vip: str, mb: int, ifaces: list[str], cpu: LabCpu, perf: bool = False, pid: int | None = None
) -> dict[str, float]:
    """One upload of `mb` MB in MTU-sized frames; the lab's CPU per frame the director received."""
    offloads_off(n)
    rate, frames, c0, c1, pf = measured(n, ifaces, cpu, perf, pid, "stream", lambda: upload(n, vip, mb))
    d = {f"stream_{k}": v for k, v in lab_figures(c0, c1, frames).items()}
    d["stream_mbps"] = rate
    d.update(pf)
    return d


def read_stats(lab: Lab) -> dict[str, float]:
    # The bare director writes its figures every 0.5 s; with fanout workers the parent sums theirs
    # another 0.5 s later.
    time.sleep(1.2 if "workers" in os.environ.get("PYLVS_LAB_ENGINE_OPTS", "") else 0.6)
    with open(lab.stats_path) as fh:
        s: dict[str, float] = json.load(fh)["engine"]
    return s


def run_engine(
    mode: str,
    seconds: float,
    mb: int,
    cpu: LabCpu,
    stream_mb: int = 0,
    perf: bool = False,
    engine: str = "packet",
) -> dict[str, float]:
    with Lab(mode, engine, out=lambda _s: None, use_daemon=False, udp=False) as lab:
        lab.build()
        lab.start_director()
        lab.curl()
        assert lab.t is not None
        s0 = read_stats(lab)
        dpid = lab.bare.pid if lab.bare is not None else None
        lab_vip = lab.t.vip
        r, frames, c0, c1, pf = measured(
            lab.n, lab.t.director_ifaces, cpu, perf, dpid, "load", lambda: load(lab.n, lab_vip, seconds)
        )
        lp = {f"load_{k}": v for k, v in pf.items()}
        s1 = read_stats(lab)
        rate = bulk(lab.n, lab.t.vip, mb)
        s2 = read_stats(lab)
        st: dict[str, float] = {}
        if stream_mb:
            st = stream(lab.n, lab.t.vip, stream_mb, lab.t.director_ifaces, cpu, perf, dpid)
            s3 = read_stats(lab)
            pk = _pkts(s3) - _pkts(s2)
            if st.get("stream_lab_frames"):
                # per frame through the director's interfaces: also counts what a kernel fast path
                # forwards without the process seeing it
                st["stream_us_frame"] = (
                    (s3["cpu_seconds"] - s2["cpu_seconds"]) * 1e6 / st["stream_lab_frames"]
                )
            if pk:
                st["stream_user"] = (
                    (s3.get("cpu_user_seconds", 0.0) - s2.get("cpu_user_seconds", 0.0)) * 1e6 / pk
                )
                st["stream_sys"] = (
                    (s3.get("cpu_sys_seconds", 0.0) - s2.get("cpu_sys_seconds", 0.0)) * 1e6 / pk
                )
                st["stream_us"] = (s3["cpu_seconds"] - s2["cpu_seconds"]) * 1e6 / pk
                st["stream_fast"] = (s3.get("fast", 0.0) - s2.get("fast", 0.0)) / pk
                st["stream_pkts"] = pk
                wk = s3.get("wakeups", 0.0) - s2.get("wakeups", 0.0)
                st["stream_per_wakeup"] = (s3["rx"] - s2["rx"]) / wk if wk else 0.0
    pk_load = _pkts(s1) - _pkts(s0)
    pk_bulk = _pkts(s2) - _pkts(s1)
    cpu_load = s1["cpu_seconds"] - s0["cpu_seconds"]
    cpu_bulk = s2["cpu_seconds"] - s1["cpu_seconds"]
    user_load = s1.get("cpu_user_seconds", 0.0) - s0.get("cpu_user_seconds", 0.0)
    sys_load = s1.get("cpu_sys_seconds", 0.0) - s0.get("cpu_sys_seconds", 0.0)
    return {
        **st,
        **lp,
        **lab_figures(c0, c1, frames),
        "rps": r["rps"],
        "errors": r["errors"],
        "mbps": rate,
        "us_pkt": cpu_load * 1e6 / pk_load if pk_load else 0.0,
        "us_frame": cpu_load * 1e6 / frames if frames else 0.0,
        "us_pkt_user": user_load * 1e6 / pk_load if pk_load else 0.0,
        "us_pkt_sys": sys_load * 1e6 / pk_load if pk_load else 0.0,
        "per_wakeup": (s1.get("rx", 0.0) - s0.get("rx", 0.0)) / (s1["wakeups"] - s0.get("wakeups", 0.0))
        if s1.get("wakeups", 0.0) > s0.get("wakeups", 0.0)
        else 0.0,
        "fast_share": (s1.get("fast", 0.0) - s0.get("fast", 0.0)) / pk_load if pk_load else 0.0,
        "us_pkt_bulk": cpu_bulk * 1e6 / pk_bulk if pk_bulk else 0.0,
        "frames_bulk": pk_bulk,
        "gso_cut": s2.get("gso_cut", 0.0),
    }


def _pkts(s: dict[str, float]) -> float:
    """Packets the engine process forwarded itself, both ways (a kernel fast path's are not here)."""
    return s.get("in", 0.0) + s.get("out", 0.0)


def lab_figures(
    c0: tuple[float, float, float], c1: tuple[float, float, float], frames: float
) -> dict[str, float]:
    """The lab's CPU per frame the director received during the request load, total/user/system."""
    if not frames:
        return {"lab_us": 0.0, "lab_user": 0.0, "lab_sys": 0.0, "lab_frames": 0.0}
    return {
        "lab_us": (c1[0] - c0[0]) * 1e6 / frames,
        "lab_user": (c1[1] - c0[1]) * 1e6 / frames,
        "lab_sys": (c1[2] - c0[2]) * 1e6 / frames,
        "lab_frames": frames,
    }


def _mac(n: Netns, role: str, ifname: str = "eth0") -> str:
    return str(json.loads(n.run(role, ["ip", "-j", "link", "show", ifname]).stdout)[0]["address"])


def run_kernel(
    mode: str, seconds: float, mb: int, cpu: LabCpu, stream_mb: int = 0, perf: bool = False
) -> dict[str, float] | None:
    """The same traffic forwarded by the kernel alone (what the director would cost with IPVS-like
    in-kernel forwarding); TUN has no kernel equivalent here (no ipip module)."""
    if mode == "tun":
        return None
    n = Netns()
    try:
        if mode in ("nat", "fullnat"):
            t = topo.build_nat(n, fullnat=mode == "fullnat")
            snat = (
                "  chain post { type nat hook postrouting priority srcnat; oif eth1 masquerade; }\n"
                if mode == "fullnat"
                else ""
            )
            rules = (
                "table ip plvk {\n"
                "  chain pre { type nat hook prerouting priority dstnat;\n"
                f"    ip daddr {t.vip} tcp dport 80 dnat to numgen inc mod 2 map {{ 0 : 192.168.1.10, 1 : 192.168.1.20 }}\n  }}\n"
                + snat
                + "}\n"
            )
        else:
            t = topo.build_dr(n, "dr")
            for role in t.rs:
                n.run(
                    role,
                    [
                        sys.executable,
                        "-m",
                        "pylvs.cli.pylvs",
                        "realserver",
                        "setup",
                        "--mode",
                        "dr",
                        "--vip",
                        t.vip,
                    ],
                )
            me = _mac(n, "lvs")
            m1, m2 = _mac(n, "rs1"), _mac(n, "rs2")
            rules = (
                'table netdev plvk {\n  chain in { type filter hook ingress device "eth0" priority 0;\n'
                f'    ip daddr {t.vip} tcp dport 80 ether saddr set {me} ether daddr set jhash ip saddr . tcp sport mod 2 map {{ 0 : {m1}, 1 : {m2} }} fwd to "eth0"\n'
                "  }\n}\n"
            )
        for role, ip in t.rs.items():
            n.spawn(role, [sys.executable, "-m", "pylvs.lab.webserver", "--ip", ip], log_name=f"{role}-web")
        for role, ip in t.rs.items():
            n.wait_tcp(role, ip, 80)
        subprocess.run(
            ["ip", "netns", "exec", n.ns("lvs"), "nft", "-f", "-"], input=rules, text=True, check=True
        )
        n.run("client", ["curl", "-s", "--max-time", "5", f"http://{t.vip}/"], check=False)
        r, frames, c0, c1, pf = measured(
            n, t.director_ifaces, cpu, perf, None, "load", lambda: load(n, t.vip, seconds)
        )
        lp = {f"load_{k}": v for k, v in pf.items()}
        rate = bulk(n, t.vip, mb)
        st = stream(n, t.vip, stream_mb, t.director_ifaces, cpu, perf) if stream_mb else {}
        return {
            "rps": r["rps"],
            "errors": r["errors"],
            "mbps": rate,
            **lab_figures(c0, c1, frames),
            **st,
            **lp,
        }
    finally:
        n.close()


def micro(n: int = 20000) -> None:
    """In-process cost of the packet path (no sockets, no kernel): synthetic frames through the
    Forwarder and the real core. 'core path' = every packet asks the core (a short connection: SYN,
    ACK, request, FIN); 'fast path' = packets of ESTABLISHED connections (data and ACKs)."""
    import ipaddress
    import struct

    from pylvs.core.director import Director
    from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
    from pylvs.engines.packet.csum import checksum, pseudo_sum_v4
    from pylvs.engines.packet.forward import Forwarder, Iface, Route
    from pylvs.engines.packet.frames import ipv4_header
    from pylvs.engines.packet.neigh import Neighbours
    from pylvs.engines.packet.ports import PortPool

    a = socket_aton
    me, lan, cl = bytes.fromhex("020000000001"), bytes.fromhex("020000000002"), bytes.fromhex("02000000000c")
    vip, cip = "172.25.254.100", "172.25.254.10"

    def frame(src: str, sp: int, dst: str, dp: int, flags: int, to: bytes, payload: bytes = b"") -> bytearray:
        tcp = bytearray(struct.pack("!HHIIBBHHH", sp, dp, 1, 0, 0x50, flags, 65535, 0, 0)) + payload
        struct.pack_into("!H", tcp, 16, checksum(tcp, pseudo_sum_v4(a(src), a(dst), 6, len(tcp))))
        return bytearray(
            bytes(10) + to + cl + b"\x08\x00" + bytes(ipv4_header(a(src), a(dst), 6, len(tcp))) + tcp
        )

    print(f"{'method':<8} {'core path us/pkt':>17} {'fast path us/pkt':>17}")
    for fwd in (Fwd.MASQ, Fwd.DROUTE, Fwd.TUNNEL, Fwd.FULLNAT):
        d = Director()
        key = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(vip), 80)
        d.add_service(key, ServiceConfig(scheduler="rr"))
        d.add_dest(key, DestConfig(addr=ipaddress.ip_address("192.168.1.10"), port=80, fwd=fwd))
        ifaces = {1: Iface(1, "eth0", me, 1500), 2: Iface(2, "eth1", lan, 1500)}

        def route(dst: bytes) -> Route:
            return (
                Route(2, dst, a("192.168.1.100"))
                if dst[:3] == a("192.168.1.0")[:3]
                else Route(1, dst, a(vip))
            )

        nb = Neighbours(kernel_table=None)
        nb.macs[a("192.168.1.10")] = bytes.fromhex("0200000000a1")
        fw = Forwarder(d, ifaces, route, nb, PortPool(10000, 60000))
        fw.load_rules()
        short = []
        for i in range(n // 4):
            cp = 1024 + i
            short += [frame(cip, cp, vip, 80, 0x02, me), frame(cip, cp, vip, 80, 0x10, me)]
            short += [frame(cip, cp, vip, 80, 0x18, me, b"GET"), frame(cip, cp, vip, 80, 0x11, me)]
        t0 = time.process_time()
        now = 1.0
        for f in short:
            fw.handle(1, f, now)
            now += 1e-5
        core_us = (time.process_time() - t0) * 1e6 / len(short)
        steady = [frame(cip, 65000, vip, 80, 0x02, me), frame(cip, 65000, vip, 80, 0x10, me)]
        steady += [frame(cip, 65000, vip, 80, 0x10, me, b"x" * 100) for _ in range(n)]
        for f in steady[:2]:
            fw.handle(1, f, now)
        t0 = time.process_time()
        for f in steady[2:]:
            fw.handle(1, f, now)
            now += 1e-5
        fast_us = (time.process_time() - t0) * 1e6 / n
        print(f"{fwd.label:<8} {core_us:>17.1f} {fast_us:>17.1f}", flush=True)


def _variants(text: str) -> list[tuple[str, str]]:
    """'name=JSON;name=JSON' -> [(name, JSON)]: engine options for the bare lab director."""
    out = []
    for part in text.split(";"):
        name, _, opts = part.partition("=")
        if not isinstance(json.loads(opts or "{}"), dict):  # bad JSON fails here, not in the director
            raise ValueError(f"{name}: a JSON object of engine options")
        out.append((name.strip() or "packet", opts or "{}"))
    return out


def _engine_of(opts: str) -> tuple[str, str]:
    """A variant's engine ("engine" key, default packet) and the options left for it."""
    d = json.loads(opts)
    return str(d.pop("engine", "packet")), json.dumps(d)


HEAD = (
    f"{'mode':<8} {'engine':<10} {'req/s':>6} {'err':>3} {'bulk MB/s':>9} "
    f"{'us/pkt':>6} {'user':>5} {'sys':>5} {'fast':>4} {'rx/wake':>7} "
    f"{'lab us/frame':>12} {'user':>5} {'sys':>5} {'us/frame bulk':>13} {'bulk frames':>11} {'d us/frame':>10}"
)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def print_load_perf(rows: list[tuple[str, str, dict[str, float]]]) -> None:
    """perf over the request load, µs per frame through the director's interfaces."""
    rows = [r for r in rows if "load_perf_fwd" in r[2]]
    if not rows:
        return
    print("request load, perf (us per frame): fwd = kernel forwarding anywhere; the director's user,")
    print("own kernel, and other namespaces' stacks run inside its system calls (veth delivers inline)")
    print(f"{'mode':<8} {'engine':<10} {'fwd':>5} {'d.user':>6} {'d.kern':>6} {'d.rx':>5} {'d.own':>6}")
    for mode, name, e in rows:
        own = e["load_perf_d_user"] + e["load_perf_d_kernel"]
        mine = (
            f"{e['load_perf_d_user']:>6.1f} {e['load_perf_d_kernel']:>6.1f} {e['load_perf_d_rx']:>5.1f} {own:>6.1f}"
            if name != "kernel"
            else f"{'-':>6} {'-':>6} {'-':>5} {'-':>6}"
        )
        print(f"{mode:<8} {name:<10} {e['load_perf_fwd']:>5.1f} {mine}", flush=True)


def print_streams(rows: list[tuple[str, str, dict[str, float]]], mb: int) -> None:
    print(f"stream: one {mb} MB upload, TSO/GSO/GRO off (MTU-sized frames)")
    print(
        f"{'mode':<8} {'engine':<10} {'MB/s':>7} {'frames':>7} {'us/pkt':>6} {'user':>5} {'sys':>5} "
        f"{'fast':>4} {'rx/wake':>7} {'lab us/frame':>12} {'user':>5} {'sys':>5} {'d us/frame':>10}"
        f"{'  perf: fwd  d.user d.kern d.rx' if any('perf_fwd' in e for _m, _n, e in rows) else ''}"
    )
    for mode, name, e in rows:
        if name == "kernel":
            mine = f"{e.get('stream_lab_frames', 0):>7.0f} {'-':>6} {'-':>5} {'-':>5} {'':>4} {'':>7}"
        else:
            mine = (
                f"{e.get('stream_pkts', 0):>7.0f} {e.get('stream_us', 0):>6.1f} {e.get('stream_user', 0):>5.1f} "
                f"{e.get('stream_sys', 0):>5.1f} {e.get('stream_fast', 0):>4.0%} {e.get('stream_per_wakeup', 0):>7.2f}"
            )
        print(
            f"{mode:<8} {name:<10} {e.get('stream_mbps', 0):>7.1f} {mine} {e.get('stream_lab_us', 0):>12.1f} "
            f"{e.get('stream_lab_user', 0):>5.1f} {e.get('stream_lab_sys', 0):>5.1f} "
            f"{_fmt(e.get('stream_us_frame')):>10}"
            + (
                f"  {e['perf_fwd']:>9.1f} {e['perf_d_user']:>6.1f} {e['perf_d_kernel']:>6.1f} {e['perf_d_rx']:>5.1f}"
                if "perf_fwd" in e
                else ""
            ),
            flush=True,
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--bulk-mb", type=int, default=100)
    ap.add_argument("--modes", default="nat,dr,tun,fullnat")
    ap.add_argument("--no-kernel", action="store_true", help="skip the kernel reference runs")
    ap.add_argument(
        "--variants",
        default='packet={};ahead={"offload":true,"ahead":true}',
        help="engine option sets run one after the other per mode, 'name=JSON;name=JSON' "
        '(e.g. \'recv={};ring={"ring": "v3"}\')',
    )
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole set, interleaved")
    ap.add_argument(
        "--stream-mb",
        type=int,
        default=0,
        help="also one upload of this many MB with TSO/GSO/GRO off (MTU-sized frames, the steady path)",
    )
    ap.add_argument(
        "--perf",
        action="store_true",
        help="sample the stream phase with perf: kernel forwarding, and the director's user / own kernel / "
        "receivers' stack time per frame",
    )
    ap.add_argument(
        "--micro", action="store_true", help="only the in-process cost per packet (no root needed)"
    )
    a = ap.parse_args()
    if a.micro:
        micro()
        return 0
    if not is_root():
        print("bench_packet: needs root (network namespaces)")
        return 1
    try:
        variants = _variants(a.variants)
    except ValueError as e:
        print(f"bench_packet: --variants: {e}")
        return 2
    cpu = LabCpu()
    try:
        print(f"CPU of the lab measured over: {cpu.scope}; load: {open('/proc/loadavg').read().strip()}")
        print(HEAD)
        streams: list[tuple[str, str, dict[str, float]]] = []
        for _round in range(a.rounds):
            for mode in a.modes.split(","):
                for name, opts in variants:
                    engine, opts = _engine_of(opts)
                    os.environ["PYLVS_LAB_ENGINE_OPTS"] = opts
                    e = run_engine(mode, a.seconds, a.bulk_mb, cpu, a.stream_mb, a.perf, engine)
                    print(
                        f"{mode:<8} {name:<10} {e['rps']:>6.0f} {e['errors']:>3.0f} {e['mbps']:>9.1f} "
                        f"{e['us_pkt']:>6.1f} {e['us_pkt_user']:>5.1f} {e['us_pkt_sys']:>5.1f} "
                        f"{e['fast_share']:>4.0%} {e['per_wakeup']:>7.2f} "
                        f"{e['lab_us']:>12.1f} {e['lab_user']:>5.1f} {e['lab_sys']:>5.1f} "
                        f"{e['us_pkt_bulk']:>13.1f} {e['frames_bulk']:>11.0f} {e['us_frame']:>10.1f}",
                        flush=True,
                    )
                    streams.append((mode, name, e))
                os.environ.pop("PYLVS_LAB_ENGINE_OPTS", None)
                if a.no_kernel:
                    continue
                k = run_kernel(mode, a.seconds, a.bulk_mb, cpu, a.stream_mb, a.perf)
                if k is None:
                    print(f"{mode:<8} {'kernel':<10} {'(no kernel ipip here)':>30}", flush=True)
                else:
                    print(
                        f"{mode:<8} {'kernel':<10} {k['rps']:>6.0f} {k['errors']:>3.0f} {k['mbps']:>9.1f} "
                        f"{'-':>6} {'-':>5} {'-':>5} {'':>4} {'':>7} "
                        f"{k['lab_us']:>12.1f} {k['lab_user']:>5.1f} {k['lab_sys']:>5.1f} {'-':>13}",
                        flush=True,
                    )
                    streams.append((mode, "kernel", k))
            print_load_perf(streams)
            if a.stream_mb:
                print_streams(streams, a.stream_mb)
            streams = []
            print(f"load: {open('/proc/loadavg').read().strip()}", flush=True)
    finally:
        cpu.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
