"""Cost of serving /metrics: CPU of the serving process while Prometheus-style scrapes arrive every second.

A child process holds a Director with SERVICES virtual services of SERVERS_PER real servers each and
serves /metrics exactly as pylvsd does (MetricsServer over LiveRows, on uvloop when installed). Every second it also moves the
counters of a fraction of the real servers (traffic) and runs the rate estimator. The parent measures
the child's CPU time (utime + stime from /proc) over a quiet phase (no scrapes) and a scraping phase
(one GET /metrics a second), and prints the difference as the cost of scraping.

    .venv/bin/python bench/bench_metrics.py [--services 1000] [--per 10] [--seconds 20] [--changing 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import shutil
import subprocess
import sys
import time
import urllib.request

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime


def fetch(url: str) -> bytes:
    """One scrape. curl, when present, reads as fast as Prometheus does; urllib is slower to drain."""
    if shutil.which("curl"):
        return subprocess.run(
            ["curl", "-sf", "--max-time", "30", url], check=True, capture_output=True
        ).stdout
    with urllib.request.urlopen(url, timeout=30) as r:
        body: bytes = r.read()
    return body


def serve(services: int, per: int, changing: float, port_file: str) -> None:
    from pylvs.core.director import Director
    from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
    from pylvs.metrics.model import LiveRows
    from pylvs.metrics.server import MetricsServer

    d = Director()
    dests = []
    for i in range(services):
        key = ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(f"10.{i // 250}.{i % 250}.1"), 80)
        d.add_service(key, ServiceConfig("rr"))
        for j in range(per):
            addr = ipaddress.ip_address(f"10.{100 + j}.{i // 250}.{i % 250 + 1}")
            dests.append(d.add_dest(key, DestConfig(addr, 8080, Fwd.MASQ, 1 + j % 5)))
    svcs = list(d.services)

    async def traffic() -> None:
        # Traffic moves the counters of `changing` of the servers each second; rates every 2 s.
        step = max(int(len(dests) * changing), 0)
        n = 0
        while True:
            await asyncio.sleep(1.0)
            n += 1
            for k in range(step):
                rs = dests[(n * step + k) % len(dests)]
                for st in (rs.stats, rs.service.stats, d.services.tot_stats):
                    st.conns += 1
                    st.inpkts += 10
                    st.outpkts += 9
                    st.inbytes += 1400
                    st.outbytes += 90000
            if n % 2 == 0:
                for svc in svcs:
                    svc.stats.estimate()
                    for rs in svc.dests:
                        rs.stats.estimate()
                d.services.tot_stats.estimate()

    async def main() -> None:
        srv = MetricsServer(LiveRows(d))
        await srv.start("127.0.0.1", 0)
        with open(port_file, "w") as f:
            f.write(str(srv.port))
        await traffic()

    try:  # pylvsd runs on uvloop when it is installed; measure what it does
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def run(args: argparse.Namespace) -> None:
    port_file = f"/tmp/bench_metrics_{os.getpid()}.port"
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            "--services",
            str(args.services),
            "--per",
            str(args.per),
            "--changing",
            str(args.changing),
            "--port-file",
            port_file,
        ]
    )
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(port_file) or not open(port_file).read():
            if time.monotonic() > deadline or child.poll() is not None:
                raise SystemExit("the serving process did not start")
            time.sleep(0.2)
        port = int(open(port_file).read())
        url = f"http://127.0.0.1:{port}/metrics"
        body = fetch(url)  # warm-up: labels and cache are built once
        lines = body.count(b"\n")

        def phase(scrape: bool) -> tuple[float, float, list[float]]:
            c0, t0 = cpu_seconds(child.pid), time.monotonic()
            latencies = []
            for i in range(args.seconds):
                if scrape:
                    s = time.monotonic()
                    fetch(url)
                    latencies.append(time.monotonic() - s)
                next_tick = t0 + i + 1
                time.sleep(max(next_tick - time.monotonic(), 0))
            return cpu_seconds(child.pid) - c0, time.monotonic() - t0, latencies

        quiet_cpu, quiet_wall, _ = phase(False)
        scrape_cpu, scrape_wall, lat = phase(True)
        quiet = 100 * quiet_cpu / quiet_wall
        busy = 100 * scrape_cpu / scrape_wall
        print(
            f"services={args.services} real_servers={args.services * args.per} changing={args.changing:.0%}/s"
        )
        print(f"scrape size: {len(body) / 1e6:.1f} MB, {lines} lines")
        print(f"serving process CPU without scrapes: {quiet:.1f}% of one core ({args.seconds} s)")
        print(f"serving process CPU with 1 scrape/s: {busy:.1f}% of one core ({args.seconds} scrapes)")
        print(
            f"cost of scraping: {busy - quiet:.1f}% of one core; {1000 * (scrape_cpu - quiet_cpu * scrape_wall / quiet_wall) / args.seconds:.1f} ms CPU per scrape"
        )
        lat.sort()
        print(f"scrape latency: median {1000 * lat[len(lat) // 2]:.0f} ms, max {1000 * lat[-1]:.0f} ms")
    finally:
        child.terminate()
        child.wait(10)
        if os.path.exists(port_file):
            os.unlink(port_file)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--per", type=int, default=10, help="real servers per service")
    p.add_argument("--seconds", type=int, default=20, help="scrapes (one a second)")
    p.add_argument("--changing", type=float, default=0.1, help="fraction of servers with traffic each second")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port-file", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.services, args.per, args.changing, args.port_file)
    else:
        run(args)


if __name__ == "__main__":
    main()
