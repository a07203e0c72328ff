"""Restore 10,000 services with 100,000 real servers through pylvsadm's code path, then list them.

    .venv/bin/python bench/ipvsadm_restore.py [SERVICES] [DESTS_PER_SERVICE]

In-process (LocalBackend over a Director): the cost of parsing, checking (the whole file is checked
on a throw-away copy first, as one transaction) and applying, then of `-Ln` (sorting included).
The rules file is also written to /tmp/pylvs-bench-rules.txt for `ipvsadm -R` in the oracle VM.
"""

from __future__ import annotations

import ipaddress
import sys
import time

from pylvs.core.director import Director
from pylvs.ipvsadm.backend import LocalBackend
from pylvs.ipvsadm.run import run_ipvsadm


def rules(n_services: int, per_service: int) -> str:
    lines = []
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    rs = int(ipaddress.IPv4Address("20.0.0.0"))
    for i in range(n_services):
        vip = ipaddress.IPv4Address(base + i // 50)
        port = 1000 + i % 50
        lines.append(f"-A -t {vip}:{port} -s wrr")
        for j in range(per_service):
            rip = ipaddress.IPv4Address(rs + i * per_service + j)
            lines.append(f"-a -t {vip}:{port} -r {rip}:{port} -m -w {1 + j % 5}")
    return "\n".join(lines) + "\n"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    per = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    text = rules(n, per)
    with open("/tmp/pylvs-bench-rules.txt", "w") as f:
        f.write(text)
    backend = LocalBackend(Director(), time.monotonic)
    c0, t0 = time.process_time(), time.perf_counter()
    r = run_ipvsadm(backend, ["-R"], stdin=text)
    c1, t1 = time.process_time(), time.perf_counter()
    listing = run_ipvsadm(backend, ["-Ln"])
    c2, t2 = time.process_time(), time.perf_counter()
    assert r.code == 0, r.err
    shown = listing.out.count("\n") - 3
    assert shown == n + n * per, shown
    print(f"services={n} dests={n * per} lines={text.count(chr(10))}")
    print(f"wall: restore (-R) {t1 - t0:.2f} s; list (-Ln) {t2 - t1:.2f} s; total {t2 - t0:.2f} s")
    print(f"cpu:  restore (-R) {c1 - c0:.2f} s; list (-Ln) {c2 - c1:.2f} s; total {c2 - c0:.2f} s")


if __name__ == "__main__":
    main()
