#!/usr/bin/env python3
"""Health-check load: N real servers (loopback listeners, one port each) checked every second by one
HealthManager; prints how late checks start (the check lag), the check rate and the CPU it costs.

    .venv/bin/python bench/bench_health.py [--servers 1000] [--seconds 30] [--checker tcp|http]

The listeners run in a child process (127.0.0.2-127.0.0.11, 100 ports each) so that the manager's
event loop does only the checking. Traffic stays on loopback; the run is bounded by --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from pylvs.core.director import Director, take_snapshot
from pylvs.health.config import load_config
from pylvs.health.manager import HealthEvent, HealthManager

LISTENERS = textwrap.dedent(
    """
    import asyncio, sys
    RESPONSE = b"HTTP/1.0 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n"
    async def handle(r, w):
        if sys.argv[1] == "http":
            try:
                await r.readuntil(b"\\r\\n\\r\\n")
                w.write(RESPONSE)
                await w.drain()
            except Exception:
                pass
        w.close()
    async def main():
        servers = []
        for line in sys.stdin.read().split():
            host, port = line.rsplit(":", 1)
            servers.append(await asyncio.start_server(handle, host, int(port), backlog=256, reuse_address=True))
        print("ready", flush=True)
        await asyncio.sleep(float(sys.argv[2]))
    asyncio.run(main())
    """
)


def targets(n: int) -> list[tuple[str, int]]:
    per_host = 100
    return [(f"127.0.0.{2 + i // per_host}", 20000 + i % per_host) for i in range(n)]


def write_config(path: Path, servers: list[tuple[str, int]], checker: str) -> None:
    lines = ["! bench_health: generated"]
    per_vs = 100
    for v in range(0, len(servers), per_vs):
        lines += [
            f"virtual_server 127.0.1.{1 + v // per_vs} 80 {{",
            "  delay_loop 1",
            "  warmup 1",
            "  lb_algo rr",
            "  lb_kind NAT",
            "  protocol TCP",
        ]
        for host, port in servers[v : v + per_vs]:
            lines.append(f"  real_server {host} {port} {{")
            if checker == "http":
                lines += [
                    "    HTTP_GET {",
                    "      url {",
                    "        path /",
                    "        status_code 200",
                    "      }",
                    "      connect_timeout 2",
                    "    }",
                ]
            else:
                lines += ["    TCP_CHECK {", "      connect_timeout 2", "    }"]
            lines.append("  }")
        lines.append("}")
    path.write_text("\n".join(lines) + "\n")


async def run(args: argparse.Namespace, conf: Path) -> dict[str, float]:
    director = Director()
    downs: list[HealthEvent] = []
    mgr = HealthManager(
        director, load_config(str(conf)), on_event=lambda e: downs.append(e) if e.kind == "down" else None
    )
    await mgr.start()
    await asyncio.sleep(2.0)  # the warm-up spreads first checks over a second; let it settle
    mgr.lags.clear()
    c0, t0 = mgr.checks_done, time.monotonic()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(args.seconds)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = time.monotonic() - t0
    checks = mgr.checks_done - c0
    stats = mgr.lag_stats()
    live = sum(len(s.dests) for s in take_snapshot(director).services)
    await mgr.stop()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "checks": checks,
        "rate": checks / elapsed,
        "cpu": cpu / elapsed,
        "live": live,
        "downs": len(downs),
        **{f"lag_{k}": v for k, v in stats.items()},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--servers", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--checker", choices=("tcp", "http"), default="tcp")
    p.add_argument("--uvloop", action="store_true", help="run the manager on uvloop (as pylvsd does)")
    args = p.parse_args()
    if not 1 <= args.servers <= 5000 or not 1 <= args.seconds <= 300:
        p.error("--servers 1..5000, --seconds 1..300")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.servers + 256)), hard))
    servers = targets(args.servers)
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "keepalived.conf"
        write_config(conf, servers, args.checker)
        child = subprocess.Popen(
            [sys.executable, "-c", LISTENERS, args.checker, str(args.seconds + 30)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(" ".join(f"{h}:{p}" for h, p in servers))
            child.stdin.close()
            if child.stdout.readline().strip() != "ready":
                print("listeners failed to start", file=sys.stderr)
                return 1
            runner = asyncio.run
            if args.uvloop:
                import uvloop

                runner = uvloop.run
            r = runner(run(args, conf))
        finally:
            child.kill()
            child.wait()
    print(
        f"servers {args.servers}  checker {args.checker}  delay_loop 1s  measured {args.seconds:g}s"
        f"  loop {'uvloop' if args.uvloop else 'asyncio'}  (pid {os.getpid()})"
    )
    print(
        f"checks {int(r['checks'])}  rate {r['rate']:.0f}/s (wanted {args.servers}/s)  manager CPU {100 * r['cpu']:.0f}% of one core"
    )
    print(
        f"check lag: mean {1000 * r['lag_mean']:.1f} ms  p50 {1000 * r['lag_p50']:.1f} ms  "
        f"p99 {1000 * r['lag_p99']:.1f} ms  max {1000 * r['lag_max']:.1f} ms"
    )
    print(
        f"real servers in the table at the end {int(r['live'])}/{args.servers}, false 'down' events {int(r['downs'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
