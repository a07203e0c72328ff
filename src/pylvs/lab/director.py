"""A bare director for labs, tests and benchmarks: a Director, one engine, the ipvsadm lines given on the
command line, the clock ticking; the engine's figures written as JSON to --stats every half second.

The labs use pylvsd + pylvsadm when they are installed; this runner needs nothing but the core and an
engine, so the data plane can be tested on its own.

    python -m pylvs.lab.director --engine packet --stats FILE -- '-A -t 172.25.254.100:80 -s rr' \
        '-a -t 172.25.254.100:80 -r 192.168.1.10 -m' ...
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import shlex
import signal
import time

from pylvs.core.director import Director
from pylvs.core.errors import IPVSError
from pylvs.core.types import AF_INET6, DestConfig, Fwd, Proto, ServiceConfig, ServiceKey, SvcFlags
from pylvs.engines import get_engine

FWD_OPTS = {"-m": Fwd.MASQ, "--masquerading": Fwd.MASQ, "-g": Fwd.DROUTE, "--gatewaying": Fwd.DROUTE}
FWD_OPTS |= {"-i": Fwd.TUNNEL, "--ipip": Fwd.TUNNEL, "--fullnat": Fwd.FULLNAT}


def _hostport(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "0")
    return ipaddress.ip_address(host), int(port or 0)


def apply_line(director: Director, line: str) -> None:
    """Apply one ipvsadm command line of the subset the labs use (-A -a -E -e -D -d -C, -t -u -f -s -r
    -m -g -i --fullnat -w -p)."""
    args = shlex.split(line)
    op = args[0]
    key: ServiceKey | None = None
    sched, weight, fwd, persist, rs = "wlc", 1, Fwd.DROUTE, 0, None
    i = 1
    while i < len(args):
        a = args[i]
        if a in ("-t", "-u"):
            addr, port = _hostport(args[i + 1])
            key = ServiceKey.for_addr(Proto.TCP if a == "-t" else Proto.UDP, addr, port)
            i += 1
        elif a == "-f":
            key = ServiceKey.for_fwmark(int(args[i + 1]))
            i += 1
        elif a == "-s":
            sched = args[i + 1]
            i += 1
        elif a == "-w":
            weight = int(args[i + 1])
            i += 1
        elif a == "-r":
            rs = args[i + 1]
            i += 1
        elif a == "-p":
            persist = 360
            if i + 1 < len(args) and args[i + 1].isdigit():
                persist = int(args[i + 1])
                i += 1
        elif a in FWD_OPTS:
            fwd = FWD_OPTS[a]
        else:
            raise ValueError(f"unsupported option {a!r} in {line!r}")
        i += 1
    if op == "-C":
        director.flush()
        return
    if key is None:
        raise ValueError(f"no service in {line!r}")
    if op in ("-A", "-E"):
        flags = SvcFlags.PERSISTENT if persist else SvcFlags.NONE
        netmask = 128 if key.af == AF_INET6 else 0xFFFFFFFF
        cfg = ServiceConfig(scheduler=sched, flags=flags, timeout=persist, netmask=netmask)
        (director.add_service if op == "-A" else director.edit_service)(key, cfg)
    elif op == "-D":
        director.del_service(key)
    elif op in ("-a", "-e", "-d"):
        if rs is None:
            raise ValueError(f"no real server in {line!r}")
        raddr, rport = _hostport(rs) if ":" in rs else (ipaddress.ip_address(rs), 0)
        if not rport:
            rport = key.port
        if op == "-d":
            director.del_dest(key, raddr, rport)
            return
        dcfg = DestConfig(addr=raddr, port=rport, fwd=fwd, weight=weight)
        (director.add_dest if op == "-a" else director.edit_dest)(key, dcfg)
    else:
        raise ValueError(f"unsupported command {op!r}")


def listing(director: Director) -> str:
    """A short -Ln style listing (the real one is pylvsadm's)."""
    out = [
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    ]
    for svc in director.services:
        name = f"FWM  {svc.fwmark}" if svc.fwmark else f"{svc.protocol.label}  {svc.addr}:{svc.port}"
        out.append(f"{name} {svc.scheduler_name}")
        for d in svc.dests:
            out.append(
                f"  -> {f'{d.addr}:{d.port}':<28} {d.fwd.label:<7} {d.weight:<6} {d.activeconns:<10} {d.inactconns}"
            )
    return "\n".join(out)


async def run(
    engine_name: str, lines: list[str], stats_path: str | None, interfaces: list[str] | None
) -> None:
    director = Director()
    for line in lines:
        apply_line(director, line)
    cls = get_engine(engine_name)
    kwargs: dict[str, object] = {"interfaces": interfaces} if interfaces else {}
    # Engine options for benchmarks (bench_packet.py --variants), e.g. {"ring": "v3"}.
    extra = json.loads(os.environ.get("PYLVS_LAB_ENGINE_OPTS") or "{}")
    if not isinstance(extra, dict):
        raise ValueError("PYLVS_LAB_ENGINE_OPTS: a JSON object of engine options")
    kwargs.update(extra)
    engine = cls(director, asyncio.get_running_loop(), **kwargs)
    await engine.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            tick = getattr(director, "tick", None)
            if tick is not None:
                tick(time.monotonic())
            if stats_path:
                tmp = stats_path + ".tmp"
                with open(tmp, "w") as fh:
                    json.dump({"engine": engine.stats(), "listing": listing(director)}, fh)
                os.replace(tmp, stats_path)
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    finally:
        await engine.stop()
        if stats_path:
            with open(stats_path, "w") as fh:
                json.dump({"engine": engine.stats(), "listing": listing(director)}, fh)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pylvs-lab-director")
    ap.add_argument("--engine", default="packet")
    ap.add_argument("--stats")
    ap.add_argument("--interface", action="append")
    ap.add_argument("lines", nargs="*")
    a = ap.parse_args(argv)
    try:
        asyncio.run(run(a.engine, a.lines, a.stats, a.interface))
    except (ValueError, OSError, IPVSError, TypeError) as e:
        print(f"pylvs-lab-director: {e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
