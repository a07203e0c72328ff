"""Scheduler decisions per second for 10, 100, 1,000 and 10,000 real servers.

Each decision is what the packet path does for a new connection: schedule(), bind the connection
to the chosen server (active + 1, load_changed), and, once `2 x servers` connections are held,
release the oldest one (load_changed again), so loads stay in a steady state.

usage: python bench/bench_sched.py [--seconds 0.3] [--repeat 3] [--sched wlc,lc,...] [--sizes 10,...]

Each figure is the best of --repeat runs of --seconds of CPU time each: the host is shared and noisy.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import time
from collections import deque

from pylvs.core.sched import get_scheduler, scheduler_names
from pylvs.core.sched.base import SchedEnv
from pylvs.core.sched.mh import TAB_SIZE as MH_TAB_SIZE
from pylvs.core.service import RealServer, VirtualService
from pylvs.core.types import DestConfig, Fwd, Packet, Proto, ServiceConfig, ServiceKey

INDEXED = ("lc", "wlc", "sed", "nq", "fo", "ovf")
VIP = ipaddress.ip_address("172.25.254.100")


def build(sched: str, n: int, rng: random.Random) -> VirtualService:
    """A service with n servers (weights 1..10) in list order, the scheduler initialised once."""
    svc = VirtualService(ServiceKey.for_addr(Proto.TCP, VIP, 80), ServiceConfig(scheduler=sched), 1)
    base = int(ipaddress.ip_address("10.0.0.0"))
    dests = [
        RealServer(DestConfig(ipaddress.ip_address(base + i + 1), 80, Fwd.MASQ, rng.randint(1, 10)), svc, i)
        for i in range(n)
    ]
    svc.dests = dests[::-1]  # newest first
    cls = get_scheduler(sched)
    assert cls is not None
    svc.scheduler = cls(svc)
    return svc


def packets(count: int, rng: random.Random) -> list[Packet]:
    out = []
    for _ in range(count):
        client = ipaddress.ip_address(rng.getrandbits(32) | 0x01000000)
        dst = ipaddress.ip_address(int(VIP) + rng.randrange(64))  # dh/lblc/lblcr hash the destination
        out.append(Packet(Proto.TCP, client, rng.randrange(1024, 65536), dst, 80, tcp_flags=0x02))
    return out


def run(sched: str, n: int, seconds: float) -> float | None:
    if sched == "mh" and n > MH_TAB_SIZE:
        return None  # the kernel refuses more servers than table slots
    rng = random.Random(1)
    svc = build(sched, n, rng)
    scheduler = svc.scheduler
    assert scheduler is not None
    env = SchedEnv(rng=random.Random(2))
    pkts = packets(1024, rng)
    held: deque[RealServer] = deque()
    limit = 2 * n
    decisions = 0
    # CPU time of this process, not wall time: the host is shared, and other jobs' load would
    # otherwise show up as our slowness.
    clock = time.process_time
    deadline = clock() + seconds
    start = clock()
    while True:
        for pkt in pkts[decisions & 1023 :] if decisions < 1024 else pkts:
            d = scheduler.schedule(pkt, env)
            if d is not None:
                d.total += 1
                d.activeconns += 1
                scheduler.load_changed(d)
                held.append(d)
                if len(held) > limit:
                    old = held.popleft()
                    old.total -= 1
                    old.activeconns -= 1
                    scheduler.load_changed(old)
            decisions += 1
            if decisions & 63 == 0 and clock() >= deadline:
                return decisions / (clock() - start)


def best_of(sched: str, n: int, seconds: float, repeat: int) -> float | None:
    rates = [run(sched, n, seconds) for _ in range(max(repeat, 1))]
    return None if rates[0] is None else max(r for r in rates if r is not None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.3, help="time per case (default 0.3)")
    ap.add_argument("--sched", default=",".join(n for n in scheduler_names() if n != "none"))
    ap.add_argument("--sizes", default="10,100,1000,10000")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs per case (noisy hosts)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    names = args.sched.split(",")
    unknown = [s for s in names if get_scheduler(s) is None]
    if unknown:
        print(f"unknown scheduler(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    print(f"{'sched':6}" + "".join(f"{n:>12,}" for n in sizes) + "   (decisions/s)")
    ratios = []
    for s in names:
        rates = [best_of(s, n, args.seconds, args.repeat) for n in sizes]
        print(f"{s:6}" + "".join(f"{r:>12,.0f}" if r else f"{'n/a':>12}" for r in rates), flush=True)
        if s in INDEXED and rates[0] and rates[-1]:
            ratios.append((s, rates[0] / rates[-1]))
    if ratios:
        print(f"\nslowdown {sizes[0]:,} -> {sizes[-1]:,} servers (limit 3x):")
        for s, r in ratios:
            print(f"  {s:4} {r:4.2f}x {'ok' if r <= 3 else 'TOO SLOW'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
