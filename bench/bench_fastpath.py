"""Fast path benchmark: one run, one set of namespaces (the NAT lab: client, director, two real
servers running nginx), three directors in turn on the same traffic:

- kernel:   plain nftables dnat (numgen round robin) in the director, no Python at all;
- fastpath: the bare lab director with `--engine fastpath` (first packet of each connection through
            NFQUEUE and the core, the rest in conntrack);
- haproxy:  HAProxy on the director (mode tcp, roundrobin), a user-space L4 proxy.

For each: requests/s over keep-alive connections (wrk), new connections/s (wrk, one request per
connection), bulk MB/s (the best of three curl downloads of --bulk-mb: 1000 MB take ~0.5 s each;
200 MB, the default until 2026-11-25, took 0.1 s and moved 0.74-1.18x the kernel between rounds).
For the fast path also the Python cost per new connection: the time spent in the NFQUEUE handler
(parse, core decision, verdict) and the whole process's CPU (conntrack events, counter sync, the
event loop) over the new connections.
Every load is bounded in time; nothing leaves the namespaces.

    sudo .venv/bin/python bench/bench_fastpath.py [--seconds 4] [--bulk-mb 1000] [--conns 16,32,64,128,256]
        [--rounds 3] [--variant NAME:ENV=VALUE,...] [--only kernel,fastpath,haproxy]

`--conns` (default 16,32,64,128,256; one value for a single level, 32 until 2026-11-25): the client's
concurrency swept, the same levels for every director; each director's req/s and new conns/s are its
best level (its capacity), and a table gives new conns/s at each level. One level favours whoever
saturates at it: at 32 the fast path (one more hop, through pylvsd, for every SYN) leaves the cores
idle part of the time, while HAProxy is at its best from 16. A round takes ~4 minutes.

Rounds are interleaved (kernel, fastpath variants, haproxy, then again) because the machine is
shared and its load drifts; each figure is the median over the rounds, with the spread and the load
average at each round printed beside it. `--variant` runs the fast path more than once per round
with different environment settings (A/B on the same traffic), e.g.
`--variant thread --variant inline:PYLVS_FASTPATH_SENDER=0`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

from _curl import curl_transfer  # bench/ is the script's directory

from pylvs.lab import topology as topo
from pylvs.lab.netns import Netns, is_root

RIPS = list(topo.RS.items())


def nginx_conf(workdir: str, role: str, ip: str) -> str:
    return f"""user root;
worker_processes 1;
daemon off;
pid {workdir}/nginx-{role}.pid;
error_log {workdir}/nginx-{role}.err;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path {workdir}/cb-{role};
  proxy_temp_path {workdir}/px-{role};
  fastcgi_temp_path {workdir}/fc-{role};
  uwsgi_temp_path {workdir}/uw-{role};
  scgi_temp_path {workdir}/sc-{role};
  server {{
    listen {ip}:80 backlog=4096;
    location = / {{ return 200 "welcome to {ip}\\n"; }}
    location /big {{ root {workdir}; }}
  }}
}}
"""


HAPROXY = """global
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend vip
  bind {vip}:80
  default_backend rs
backend rs
  balance roundrobin
  server rs1 192.168.1.10:80
  server rs2 192.168.1.20:80
"""


def wrk(n: Netns, url: str, seconds: float, conns: int, close: bool) -> dict[str, float]:
    args = ["wrk", "-t2", f"-c{conns}", f"-d{int(seconds)}s", "--timeout", "2s"]
    if close:
        args += ["-H", "Connection: close"]
    p = n.run("client", [*args, url], check=False, timeout=seconds + 30)
    out = p.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(m.group(1)) if m else 0.0,
        "errors": float(sum(int(x) for x in errs.groups())) if errs else 0.0,
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


def bulk(n: Netns, vip: str) -> float:
    best = 0.0
    for _ in range(3):
        try:
            size, secs = curl_transfer(n, f"http://{vip}/big/blob")
            best = max(best, int(size) / float(secs) / 1e6)
        except ValueError:
            pass
    return best


def measure(n: Netns, vip: str, a: argparse.Namespace) -> dict[str, float]:
    ok = n.run("client", ["curl", "-s", "--max-time", "5", f"http://{vip}/"], check=False).stdout
    if not ok.startswith("welcome"):
        raise RuntimeError(f"no answer through the director: {ok!r}")
    r: dict[str, float] = {"errors": 0.0}
    for c in a.conns:  # each client concurrency in turn; the director's figure is its best
        keep = wrk(n, f"http://{vip}/", a.seconds, c, close=False)
        time.sleep(0.5)
        new = wrk(n, f"http://{vip}/", a.seconds, c, close=True)
        time.sleep(0.5)
        r[f"rps@{c}"], r[f"cps@{c}"] = keep["rps"], new["rps"]
        r["errors"] += keep["errors"] + new["errors"] + keep["non2xx"] + new["non2xx"]
    r["rps"] = max(r[f"rps@{c}"] for c in a.conns)
    r["cps"] = max(r[f"cps@{c}"] for c in a.conns)
    r["mbps"] = bulk(n, vip)
    return r


def _profile() -> list[str]:
    """FP_PROFILE=FILE: run the fast-path director under cProfile (for finding its hot spots)."""
    out = os.environ.get("FP_PROFILE")
    return ["-m", "cProfile", "-o", out] if out else []


def read_stats(path: str) -> dict[str, float]:
    for _ in range(20):
        try:
            with open(path) as fh:
                s: dict[str, float] = json.load(fh)["engine"]
            return s
        except (OSError, ValueError, KeyError):
            time.sleep(0.1)
    return {}


def run_kernel(n: Netns, vip: str, a: argparse.Namespace) -> dict[str, float]:
    """Plain nftables dnat, round robin by numgen: the kernel alone, no Python."""
    rules = (
        "table ip plvk {\n  chain pre { type nat hook prerouting priority dstnat;\n"
        f"    ip daddr {vip} tcp dport 80 dnat to numgen inc mod 2 map {{ 0 : 192.168.1.10, 1 : 192.168.1.20 }}\n  }}\n}}\n"
    )
    subprocess.run(["ip", "netns", "exec", n.ns("lvs"), "nft", "-f", "-"], input=rules, text=True, check=True)
    try:
        return measure(n, vip, a)
    finally:
        n.run("lvs", ["nft", "delete", "table", "ip", "plvk"])


def run_fastpath(
    n: Netns, vip: str, a: argparse.Namespace, env: dict[str, str] | None = None
) -> dict[str, float]:
    stats = os.path.join(n.workdir, "fastpath.json")
    if os.path.exists(stats):
        os.unlink(stats)
    lines = [f"-A -t {vip}:80 -s rr"] + [f"-a -t {vip}:80 -r {ip}:80 -m" for _r, ip in RIPS]
    d = n.spawn(
        "lvs",
        [
            sys.executable,
            *_profile(),
            "-m",
            "pylvs.lab.director",
            "--engine",
            "fastpath",
            "--stats",
            stats,
            *lines,
        ],
        log_name="fastpath",
        env={**os.environ, **(env or {})},
    )
    try:
        end = time.monotonic() + 15
        while not os.path.exists(stats) and time.monotonic() < end:
            time.sleep(0.1)
        s0 = read_stats(stats)
        r = measure(n, vip, a)
        time.sleep(1.2)
        s1 = read_stats(stats)
    finally:
        os.killpg(d.pid, 15)
        d.wait(10)
    new = s1.get("new_conns", 0.0) - s0.get("new_conns", 0.0)
    r["new_conns"] = new
    r["py_us_per_conn"] = s1.get("py_us_per_new_conn", 0.0)
    r["py_cpu_us_per_conn"] = s1.get("py_cpu_us_per_new_conn", 0.0)
    acct = s1.get("acct_cpu_us_per_new_conn", 0.0) * s1.get("new_conns", 0.0)
    acct -= s0.get("acct_cpu_us_per_new_conn", 0.0) * s0.get("new_conns", 0.0)
    r["acct_cpu_us_per_conn"] = acct / new if new else 0.0
    sync = s1.get("sync_cpu_us_per_new_conn", 0.0) * s1.get("new_conns", 0.0)
    sync -= s0.get("sync_cpu_us_per_new_conn", 0.0) * s0.get("new_conns", 0.0)
    r["sync_cpu_us_per_conn"] = sync / new if new else 0.0
    r["verdict_us_per_conn"] = s1.get("verdict_us_per_new_conn", 0.0)
    cpu = s1.get("cpu_seconds", 0.0) - s0.get("cpu_seconds", 0.0)
    r["cpu_us_per_conn"] = cpu * 1e6 / new if new else 0.0
    r["ct_overruns"] = s1.get("ct_overruns", 0.0) - s0.get("ct_overruns", 0.0)
    ev = s1.get("ct_events", 0.0) - s0.get("ct_events", 0.0)
    ev -= s1.get("ct_destroys", 0.0) - s0.get("ct_destroys", 0.0)  # ends of earlier rounds' entries too
    r["ct_events_per_conn"] = ev / new if new else 0.0
    est = s1.get("ct_established", 0.0) - s0.get("ct_established", 0.0)
    r["events_seen_pct"] = 100.0 * est / new if new else 0.0
    gets = s1.get("ct_gets", 0.0) - s0.get("ct_gets", 0.0)
    r["gets_pct"] = 100.0 * gets / new if new else 0.0  # closed connections looked up one by one
    for k in ("queue_reads", "event_reads"):  # batching: connections per handler run
        runs = s1.get(k, 0.0) - s0.get(k, 0.0)
        r[f"conns_per_{k}"] = new / runs if runs else 0.0
    return r


def run_haproxy(n: Netns, vip: str, a: argparse.Namespace) -> dict[str, float]:
    cfg = os.path.join(n.workdir, "haproxy.cfg")
    with open(cfg, "w") as fh:
        fh.write(HAPROXY.format(vip=vip))
    h = n.spawn("lvs", ["haproxy", "-f", cfg, "-db"], log_name="haproxy")
    try:
        n.wait_tcp("client", vip, 80)
        return measure(n, vip, a)
    finally:
        os.killpg(h.pid, 15)
        h.wait(10)


def _loaded(fn: Any, *args: Any) -> dict[str, float]:
    """One director's round, with the 1-minute load average when it started."""
    with open("/proc/loadavg") as fh:
        load = float(fh.read().split()[0])
    r: dict[str, float] = fn(*args)
    r["load"] = load
    return r


def _levels(v: str) -> list[int]:
    try:
        levels = [int(x) for x in v.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {v!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {v!r}")
    return levels


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.0f} ({min(xs):.0f}-{max(xs):.0f})"


def micro(n: int = 20000, batch: int = 10) -> None:
    """In-process cost per new connection of the fast path's own handlers, the kernel's messages
    replayed through datagram socket pairs (so the system calls are there, the kernel's forwarding
    is not): deciding (FastPathEngine._queued: queued-packet messages as the kernel writes them,
    the core's decision, the verdicts sent) and keeping the core in step (_apply_events: the
    ESTABLISHED and FIN_WAIT update events and the DESTROY event of each connection, the three the
    kernel sends it live, in the kernel's layouts, `batch` connections per handler run; until
    2026-11-25 a LAST_ACK event too, which the kernel no longer sends)."""
    import ipaddress
    import socket
    import struct

    from pylvs.core.director import Director
    from pylvs.core.types import DestConfig, Fwd, ServiceConfig, ServiceKey
    from pylvs.core.types import Proto as P
    from pylvs.engines.packet.fastpath import tables
    from pylvs.engines.packet.fastpath.engine import FastPathEngine
    from pylvs.netlink import conntrack as ct
    from pylvs.netlink import ctmsg
    from pylvs.netlink.nfqueue import (
        NFQA_HWADDR,
        NFQA_IFINDEX_INDEV,
        NFQA_PACKET_HDR,
        NFQA_PAYLOAD,
        NfQueue,
    )
    from pylvs.netlink.nlmsg import attr

    vip, rip = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.1.0.1")
    mark = tables.OURS | (1 << tables.RS_SHIFT)

    def queued(i: int, src: bytes, sport: int) -> bytes:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 60, 1, 0, 64, 6, 0, src, vip)
        tcp = struct.pack("!HHIIBBHHH", sport, 80, 1, 0, 0xA0, 2, 65535, 0, 0) + bytes(20)
        body = (
            struct.pack("!BBH", 0, 0, 7000)
            + attr(NFQA_PACKET_HDR, struct.pack("!IHB", i, 0x800, 1))
            + attr(NFQA_IFINDEX_INDEV, struct.pack("!I", 2))
            + attr(NFQA_HWADDR, struct.pack("!H2x", 6) + bytes(8))
            + attr(NFQA_PAYLOAD, ip + tcp)
        )
        return struct.pack("=IHHII", 16 + len(body), (3 << 8) | 0, 0, 0, 0) + body

    def event(cid: int, state: int, src: bytes, sport: int, destroy: bool = False) -> bytes:
        orig, reply = (6, src, sport, vip, 80), (6, rip, 80, src, sport)
        return ctmsg.event(state, orig, reply, cid, mark, destroy, counters=(6, 420, 5, 900))

    def pair() -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for x in (a, b):
            x.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
            x.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        b.setblocking(False)
        return a, b

    d = Director()
    key = ServiceKey.for_addr(P.TCP, ipaddress.IPv4Address("10.0.0.1"), 80)
    d.add_service(key, ServiceConfig(scheduler="rr"))
    dest = d.add_dest(key, DestConfig(addr=ipaddress.IPv4Address("10.1.0.1"), port=80, fwd=Fwd.MASQ))
    now = [1.0]
    eng = FastPathEngine(d, clock=lambda: now[0])
    eng.dest_mark = {id(dest): mark & ~tables.OURS | tables.OURS}
    qa, qb = pair()
    q = NfQueue.__new__(NfQueue)
    q.sock, q.seq, q.buf, q._outq, q.send_seconds, q.sends = qb, 0, bytearray(1 << 16), None, 0.0, 0
    q._nfg = struct.pack("!BBH", 0, 0, 7000)
    eng.nfq = q
    ea, eb = pair()
    ev = ct.CtEvents.__new__(ct.CtEvents)
    ev.sock, ev.buf, ev.mask, ev.overruns = eb, bytearray(1 << 17), tables.OURS, 0
    eng.events = ev
    conns = [(socket.inet_aton(f"10.9.{i // 250 % 250}.{i % 250 + 1}"), 10000 + i % 50000) for i in range(n)]
    decide = acct = 0.0
    for start in range(0, n, batch):
        chunk = range(start, min(n, start + batch))
        for i in chunk:
            qa.send(queued(i, *conns[i]))
        t = time.perf_counter()
        eng._queued()
        decide += time.perf_counter() - t
        while True:  # the verdicts the handler sent (to the other end of the pair)
            try:
                qa.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
        now[0] += 0.001
        steps: list[list[bytes]] = [[], [], []]
        for i in chunk:
            src, sport = conns[i]
            for k, st in enumerate((ct.CT_ESTABLISHED, ct.CT_FIN_WAIT)):
                steps[k].append(event(100 + i, st, src, sport))
            steps[2].append(event(100 + i, ct.CT_TIME_WAIT, src, sport, destroy=True))
        for msgs in steps:  # each kind of event in its own handler run, as they come in time
            for m in msgs:
                ea.send(m)
            t = time.perf_counter()
            eng._apply_events(ev)
            acct += time.perf_counter() - t
    st = d.services.tot_stats
    assert eng.counters["accepted"] == n and not eng.flows and dest.inactconns == n, eng.counters
    assert (st.inpkts, st.outpkts, st.outbytes) == (6 * n, 5 * n, 900 * n)
    print(
        f"micro ({n} new connections, {batch} per handler run, through socket pairs): deciding "
        f"{decide / n * 1e6:.1f} us, keeping the core in step (3 events) {acct / n * 1e6:.1f} us, "
        f"total {(decide + acct) / n * 1e6:.1f} us per connection"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--bulk-mb", type=int, default=1000)
    ap.add_argument(
        "--conns",
        type=_levels,
        default=[16, 32, 64, 128, 256],
        help="wrk's connections; a comma-separated list measures each level, and each director's"
        " figure is its best (default 16,32,64,128,256)",
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="each director this many times, interleaved; median kept"
    )
    ap.add_argument(
        "--variant",
        action="append",
        help="NAME[:ENV=VALUE,...]: a fast path run with these environment settings (repeatable)",
    )
    ap.add_argument("--only", help="comma-separated subset of kernel,fastpath,haproxy")
    ap.add_argument("--micro", action="store_true", help="only the in-process cost per new connection")
    a = ap.parse_args()
    if a.micro:
        micro()
        return 0
    if not is_root():
        print("bench_fastpath: needs root (network namespaces)", file=sys.stderr)
        return 1
    for tool in ("nginx", "wrk", "haproxy", "curl"):
        if shutil.which(tool) is None:
            print(f"bench_fastpath: needs {tool} (apt-get install -y {tool})", file=sys.stderr)
            return 1
    n = Netns()
    try:
        t = topo.build_nat(n)
        n.sysctl("client", net__ipv4__tcp_tw_reuse=1, net__ipv4__ip_local_port_range="10000 65000")
        os.makedirs(os.path.join(n.workdir, "big"))
        with open(os.path.join(n.workdir, "big", "blob"), "wb") as fh:
            fh.truncate(a.bulk_mb << 20)  # sparse: nginx sends it from the page cache
        for role, ip in RIPS:
            conf = os.path.join(n.workdir, f"nginx-{role}.conf")
            with open(conf, "w") as fh:
                fh.write(nginx_conf(n.workdir, role, ip))
            n.spawn(role, ["nginx", "-c", conf], log_name=f"nginx-{role}")
        for role, ip in RIPS:
            n.wait_tcp(role, ip, 80)
        vip = t.vip

        variants: list[tuple[str, dict[str, str]]] = []
        for v in a.variant or ["fastpath"]:
            name, _, rest = v.partition(":")
            env = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
            variants.append((name, env))
        only = set(a.only.split(",")) if a.only else {"kernel", "fastpath", "haproxy"}
        rounds: dict[str, list[dict[str, float]]] = {}
        for i in range(a.rounds):  # interleaved: the machine is shared, its load drifts
            if "kernel" in only:
                rounds.setdefault("kernel", []).append(_loaded(run_kernel, n, vip, a))
            if "fastpath" in only:
                for name, env in variants:
                    rounds.setdefault(name, []).append(_loaded(run_fastpath, n, vip, a, env))
            if "haproxy" in only:
                rounds.setdefault("haproxy", []).append(_loaded(run_haproxy, n, vip, a))
            print(f"round {i + 1}/{a.rounds} done", file=sys.stderr, flush=True)
    finally:
        n.close()

    print(
        f"fast path benchmark: NAT lab, nginx real servers, wrk -t2 -c{','.join(map(str, a.conns))}"
        f" {a.seconds:g}s{' (best level)' if len(a.conns) > 1 else ''}, "
        f"{a.bulk_mb} MB download, {a.rounds} interleaved rounds: median (min-max)"
    )
    print(
        f"{'director':<10} {'req/s keepalive':>22} {'new conns/s':>22} {'bulk MB/s':>18} {'errors':>7}  load avg"
    )
    for name, rs in rounds.items():
        cols = [_spread([r[k] for r in rs]) for k in ("rps", "cps", "mbps")]
        errs = sum(r["errors"] for r in rs)
        loads = " ".join(f"{r['load']:.1f}" for r in rs)
        print(f"{name:<10} {cols[0]:>22} {cols[1]:>22} {cols[2]:>18} {errs:>7.0f}  {loads}")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in rounds.items()}
    if len(a.conns) > 1:
        print("new conns/s by wrk connections (median of rounds)")
        print(f"{'director':<10}" + "".join(f"{'c=' + str(c):>9}" for c in a.conns))
        for name, m in med.items():
            print(f"{name:<10}" + "".join(f"{m[f'cps@{c}']:>9.0f}" for c in a.conns))
        if "haproxy" in med:
            for name, _env in variants if "fastpath" in only else []:
                ratios = "".join(
                    f"{med[name][f'cps@{c}'] / med['haproxy'][f'cps@{c}']:>8.2f}x" for c in a.conns
                )
                print(f"{name + '/haproxy':<10}{ratios}")
    for name, _env in variants if "fastpath" in only else []:
        fp = med[name]
        parts = []
        if "kernel" in med:
            k = med["kernel"]
            parts.append(
                f"{name}/kernel: bulk {fp['mbps'] / k['mbps']:.2f}x, req/s {fp['rps'] / k['rps']:.2f}x, "
                f"new conns/s {fp['cps'] / k['cps']:.2f}x"
            )
        if "haproxy" in med:
            hp = med["haproxy"]
            parts.append(
                f"{name}/haproxy: bulk {fp['mbps'] / hp['mbps']:.2f}x, new conns/s {fp['cps'] / hp['cps']:.2f}x"
            )
        paired = [
            (f["cps"] / h["cps"], f["mbps"] / k["mbps"])
            for f, h, k in zip(
                rounds[name], rounds.get("haproxy", []), rounds.get("kernel", []), strict=False
            )
            if h["cps"] and k["mbps"]
        ]
        if paired:
            parts.append(
                "per round: new conns/s vs haproxy "
                + " ".join(f"{x:.2f}" for x, _ in paired)
                + "; bulk vs kernel "
                + " ".join(f"{y:.2f}" for _, y in paired)
            )
        for p in parts:
            print(p)
        rs = rounds[name]
        print(
            f"{name} per new connection (median of rounds): "
            f"{fp['py_us_per_conn']:.1f} us of Python deciding (queue read, parse, core, verdict built; "
            f"{fp['py_cpu_us_per_conn']:.1f} us of it on the CPU), "
            f"{fp['verdict_us_per_conn']:.1f} us in the verdict sends (the kernel forwarding the packets), "
            f"{fp['acct_cpu_us_per_conn']:.1f} us of CPU keeping the core in step (events, syncs; "
            f"{fp['sync_cpu_us_per_conn']:.1f} us of it in the periodic syncs), "
            f"{fp['cpu_us_per_conn']:.1f} us of process CPU in all; "
            f"{fp['ct_events_per_conn']:.2f} conntrack update events (the ESTABLISHED event came for "
            f"{fp['events_seen_pct']:.0f}% of the connections; the others' state came with their next event); "
            f"{sum(r['new_conns'] for r in rs):.0f} connections, "
            f"{sum(r['ct_overruns'] for r in rs):.0f} event overruns; "
            f"{fp['conns_per_queue_reads']:.1f} new connections per queue read, "
            f"{fp['conns_per_event_reads']:.1f} per conntrack event read; "
            f"{fp['gets_pct']:.0f}% of the connections looked up after they closed (no DESTROY event in time)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
