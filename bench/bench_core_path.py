"""Core packet-path cost per short TCP connection, as the proxy engine feeds it.

    .venv/bin/python bench/bench_core_path.py [--conns 50000] [--dests 10] [--fwd masq|fullnat|droute]
        [--persistent] [--repeat 3] [--profile] [--split [--api packet|v4]]

Each connection is six synthetic packets through Director.process_in / process_out: SYN in,
SYN+ACK out, ACK in, FIN+ACK in, FIN+ACK out, ACK in (the proxy's open/close sequence). Clients
come from many addresses and ports; time advances --step (3 ms) per connection so entries expire
(TIME_WAIT, 2 min) and the timer wheel is exercised as well. Packets are built in the loop, as the engine does.
Prints µs per connection and per packet (process CPU time, best of --repeat).

--split times each of the six packet kinds on its own (all SYNs, then all SYN+ACKs, ...), with the
Packets built before the clock starts: the core's own cost per kind, which is what an engine pays
per packet that asks the core.
"""

from __future__ import annotations

import argparse
import cProfile
import ipaddress
import pstats
import time

from pylvs.core.conn import Connection
from pylvs.core.director import Director
from pylvs.core.types import (
    TCP_ACK,
    TCP_FIN,
    TCP_SYN,
    DestConfig,
    Fwd,
    Packet,
    Proto,
    ServiceConfig,
    ServiceKey,
    SvcFlags,
)

FIN_ACK = TCP_FIN | TCP_ACK
SYN_ACK = TCP_SYN | TCP_ACK


def setup(dests: int, fwd: Fwd, persistent: bool) -> tuple[Director, ipaddress.IPv4Address]:
    d = Director()
    vip = ipaddress.IPv4Address("10.0.0.1")
    key = ServiceKey.for_addr(Proto.TCP, vip, 80)
    flags = SvcFlags.PERSISTENT if persistent else SvcFlags.NONE
    d.add_service(key, ServiceConfig("wlc", flags, 300 if persistent else 0))
    for j in range(dests):
        d.add_dest(key, DestConfig(ipaddress.IPv4Address(f"192.168.1.{10 + j}"), 8080, fwd, 1 + j % 3))
    return d, vip


def run(d: Director, vip: ipaddress.IPv4Address, n: int, t0: float, step: float = 0.003) -> float:
    """Open and close n connections; returns the model time reached."""
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    clients = [ipaddress.IPv4Address(base + i) for i in range(4096)]
    tcp = Proto.TCP
    now = t0
    pin, pout = d.process_in, d.process_out
    for i in range(n):
        caddr = clients[i & 4095]
        cport = 1024 + (i >> 12) % 60000
        now += step
        v = pin(Packet(tcp, caddr, cport, vip, 80, 0, 60, TCP_SYN), now)
        conn = v.conn
        assert conn is not None
        daddr, dport = conn.daddr, conn.dport
        pout(conn, Packet(tcp, daddr, dport, caddr, cport, 0, 60, SYN_ACK), now)
        pin(Packet(tcp, caddr, cport, vip, 80, 0, 52, TCP_ACK), now)
        pin(Packet(tcp, caddr, cport, vip, 80, 0, 52, FIN_ACK), now)
        pout(conn, Packet(tcp, daddr, dport, caddr, cport, 0, 52, FIN_ACK), now)
        pin(Packet(tcp, caddr, cport, vip, 80, 0, 52, TCP_ACK), now)
    return now


KINDS = ("SYN in (new)", "SYN+ACK out", "ACK in", "FIN+ACK in", "FIN+ACK out", "ACK in (last)")


def run_split(
    d: Director, vip: ipaddress.IPv4Address, n: int, now: float, api: str = "packet"
) -> list[float]:
    """n connections, one packet kind at a time; CPU seconds per kind. api "packet": Packets built
    before the clock starts (the core's own cost); "v4": Director.process_in_v4 / process_out_tcp
    with the addresses as ints (what an engine that parses frames pays, nothing to build)."""
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    tcp = Proto.TCP
    flows = [(ipaddress.IPv4Address(base + (i & 4095)), 1024 + (i >> 12) % 60000) for i in range(n)]
    out: list[float] = []
    if api == "v4":
        vint = int(vip)
        ints = [(int(c), p) for c, p in flows]
        pin4, pout4 = d.process_in_v4, d.process_out_tcp
        c0 = time.process_time()
        got = [pin4(6, c, p, vint, 80, 0, 60, TCP_SYN, now) for c, p in ints]
        out.append(time.process_time() - c0)
        live = [c for c in got if isinstance(c, Connection)]
        assert len(live) == n
        for kind in ("out", "in", "in", "out", "in"):
            flags = {0: SYN_ACK, 1: TCP_ACK, 2: FIN_ACK, 3: FIN_ACK, 4: TCP_ACK}[len(out) - 1]
            c0 = time.process_time()
            if kind == "out":
                for conn in live:
                    pout4(conn, 52, flags, now)
            else:
                for c, p in ints:
                    pin4(6, c, p, vint, 80, 0, 52, flags, now)
            out.append(time.process_time() - c0)
        return out
    syns = [Packet(tcp, c, p, vip, 80, 0, 60, TCP_SYN) for c, p in flows]
    pin, pout = d.process_in, d.process_out
    c0 = time.process_time()
    conns = [pin(pkt, now).conn for pkt in syns]
    out.append(time.process_time() - c0)
    live = [c for c in conns if c is not None]
    assert len(live) == n

    def replies(flags: int, length: int) -> list[tuple[Connection, Packet]]:
        return [
            (c, Packet(tcp, c.daddr, c.dport, a, p, 0, length, flags))
            for c, (a, p) in zip(live, flows, strict=True)
        ]

    acks = [Packet(tcp, c, p, vip, 80, 0, 52, TCP_ACK) for c, p in flows]
    fins = [Packet(tcp, c, p, vip, 80, 0, 52, FIN_ACK) for c, p in flows]
    for batch in (replies(SYN_ACK, 60), acks, fins, replies(FIN_ACK, 52), acks):
        c0 = time.process_time()
        for item in batch:
            if isinstance(item, tuple):
                pout(item[0], item[1], now)
            else:
                pin(item, now)
        out.append(time.process_time() - c0)
    return out


def packet_cost(n: int) -> float:
    """CPU seconds the loop spends building its 6 Packets per connection (engine-side work)."""
    tcp = Proto.TCP
    a = ipaddress.IPv4Address("100.64.0.1")
    c0 = time.process_time()
    for _ in range(n):
        for _ in range(6):
            Packet(tcp, a, 1024, a, 80, 0, 52, TCP_ACK)
    return time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=50_000)
    ap.add_argument("--dests", type=int, default=10)
    ap.add_argument("--fwd", choices=("masq", "fullnat", "droute"), default="masq")
    ap.add_argument("--persistent", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--step", type=float, default=0.003, help="model seconds between connections")
    ap.add_argument("--split", action="store_true", help="time each packet kind on its own")
    ap.add_argument(
        "--api", choices=("packet", "v4"), default="packet", help="with --split: which entry points"
    )
    a = ap.parse_args()
    fwd = {"masq": Fwd.MASQ, "fullnat": Fwd.FULLNAT, "droute": Fwd.DROUTE}[a.fwd]
    if a.split:
        bests = [float("inf")] * len(KINDS)
        for _ in range(a.repeat):
            d, vip = setup(a.dests, fwd, a.persistent)
            run(d, vip, 2000, 1.0, a.step)  # warm up (these flows are reused: closed by now)
            d.process_in(Packet(Proto.UDP, vip, 1, vip, 1), 200.0)  # expire them (PASS)
            times = run_split(d, vip, a.conns, 200.0, a.api)
            bests = [min(b, t) for b, t in zip(bests, times, strict=True)]
        what = "Packets prebuilt" if a.api == "packet" else "process_in_v4 / process_out_tcp on ints"
        print(
            f"conns={a.conns} dests={a.dests} fwd={a.fwd} persistent={a.persistent} (µs per packet, {what})"
        )
        for kind, b in zip(KINDS, bests, strict=True):
            print(f"  {kind:<15} {b / a.conns * 1e6:6.2f}")
        print(f"  {'total':<15} {sum(bests) / a.conns * 1e6:6.2f} per connection")
        return
    best = float("inf")
    for _ in range(a.repeat):
        d, vip = setup(a.dests, fwd, a.persistent)
        run(d, vip, 2000, 1.0, a.step)  # warm up
        c0 = time.process_time()
        if a.profile:
            prof = cProfile.Profile()
            prof.runcall(run, d, vip, a.conns, 2.0, a.step)
        else:
            run(d, vip, a.conns, 2.0, a.step)
        best = min(best, time.process_time() - c0)
        if a.profile:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            break
    per_conn = best / a.conns * 1e6
    core = (best - min(packet_cost(a.conns) for _ in range(2))) / a.conns * 1e6
    print(
        f"conns={a.conns} dests={a.dests} fwd={a.fwd} persistent={a.persistent} step={a.step} entries={len(d.conns)}"
    )
    print(
        f"cpu: {per_conn:.2f} µs per connection, {per_conn / 6:.2f} µs per packet (6 packets, best of {a.repeat})"
    )
    print(
        f"core only (the loop's Packet building taken out): {core:.2f} µs per connection, {core / 6:.2f} µs per packet"
    )


if __name__ == "__main__":
    main()
