"""Memory of the connection table: N tracked connections through the real packet path, RSS measured.

usage: python bench/bench_conn_memory.py [N] [--dr]      (default N = 1,000,000; NAT servers)

Each connection is a client SYN that the core schedules (wlc over 10 NAT real servers), so every
entry is a real one: bound to its server, in the client-key table, in the reply-key table (NAT) and
in the timer wheel. Prints RSS before and after and the bytes per connection. The kernel's own
entry (struct ip_vs_conn) is about 300 bytes.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import sys
import time

from pylvs.core.director import Director
from pylvs.core.types import TCP_SYN, DestConfig, Fwd, Packet, Proto, ServiceConfig, ServiceKey

MAX_N = 5_000_000  # bounded: this is a benchmark, not a soak test


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv and argv[0].isdigit() else 1_000_000
    n = min(n, MAX_N)
    fwd = Fwd.DROUTE if "--dr" in argv else Fwd.MASQ
    d = Director()
    vip = ipaddress.IPv4Address("10.0.0.1")
    key = ServiceKey.for_addr(Proto.TCP, vip, 80)
    d.add_service(key, ServiceConfig("wlc"))
    for i in range(10):
        d.add_dest(key, DestConfig(ipaddress.IPv4Address(f"192.168.1.{i + 1}"), 80, fwd))
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    for i in range(n):
        # 60,000 ports per client address, as many clients as needed
        caddr = ipaddress.IPv4Address(base + i // 60000)
        d.process_in(Packet(Proto.TCP, caddr, 1024 + i % 60000, vip, 80, 0, 60, TCP_SYN), 1.0)
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_bytes()
    live = len(d.conns)
    per = (after - before) / max(live, 1)
    print(f"method           {fwd.label}")
    print(f"connections      {live:,}")
    print(f"RSS before       {before / 2**20:8.1f} MiB")
    print(f"RSS after        {after / 2**20:8.1f} MiB")
    print(f"bytes/connection {per:8.1f}")
    print(f"setup rate       {n / elapsed:,.0f} new connections/s ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
