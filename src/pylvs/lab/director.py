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


def engine_options() -> dict[str, object]:
    """Engine options for benchmarks (bench_packet.py --variants), e.g. {"ring": "v3"}."""
    extra = json.loads(os.environ.get("PYLVS_LAB_ENGINE_OPTS") or "{}")
    if not isinstance(extra, dict):
        raise ValueError("PYLVS_LAB_ENGINE_OPTS: a JSON object of engine options")
    return extra


async def run(
    engine_name: str,
    lines: list[str],
    stats_path: str | None,
    interfaces: list[str] | None,
    extra: dict[str, object] | None = None,
) -> None:
    director = Director()
    for line in lines:
        apply_line(director, line)
    cls = get_engine(engine_name)
    kwargs: dict[str, object] = {"interfaces": interfaces} if interfaces else {}
    kwargs.update(engine_options() if extra is None else extra)
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


def run_fanout(lines: list[str], stats_path: str | None, interfaces: list[str] | None) -> None:
    """The packet engine as `workers` processes behind PACKET_FANOUT (engines/packet/fanout.py):
    this process opens every worker's sockets in worker order, forks the workers (each with its own
    Director built from the same lines: scheduling and counters are per worker), sums their figures
    into --stats and stops them on SIGTERM/SIGINT."""
    from pylvs.engines.packet import fanout
    from pylvs.engines.packet.engine import discover_ifaces

    opts = engine_options()
    count = int(str(opts.pop("workers")))
    check = Director()
    for line in lines:
        apply_line(check, line)  # reject bad lines before forking
    names = [i.name for i in discover_ifaces(interfaces).values()]
    ring = str(opts["ring"]) if opts.get("ring") else None
    group = 0x4000 + os.getpid() % 0x3000
    workers = fanout.open_group(names, count, group, ring, int(str(opts.get("ring_timeout_ms", 1))))
    pids: list[int] = []
    for k in range(count):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for j, other in enumerate(workers):
                    if j != k:
                        for s, rx, arp in other.values():
                            if rx is not None:
                                rx.close()
                            s.close()
                            arp.close()
                wopts = dict(opts, fanout_worker=(k, count), members=workers[k])
                asyncio.run(
                    run("packet", lines, f"{stats_path}.{k}" if stats_path else None, interfaces, wopts)
                )
            except BaseException as e:  # the worker must never return into the parent's code
                print(f"pylvs-lab-director worker {k}: {e}", flush=True)
                code = 1
            os._exit(code)
        pids.append(pid)
    for w in workers:
        for s, rx, arp in w.values():
            if rx is not None:
                rx.close()
            s.close()
            arp.close()
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    alive = set(pids)
    while alive:
        if stop:
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        time.sleep(0.5)
        for pid in list(alive):
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done:
                alive.discard(pid)
        if stats_path:
            _sum_stats(stats_path, count)


def _sum_stats(stats_path: str, count: int) -> None:
    total: dict[str, float] = {}
    listing_text = ""
    for k in range(count):
        try:
            with open(f"{stats_path}.{k}") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return  # not every worker has written yet
        for key, v in data["engine"].items():
            if isinstance(v, int | float) and key != "cpu_us_per_packet":
                total[key] = total.get(key, 0.0) + float(v)
        listing_text = data.get("listing", "")
    total["workers"] = float(count)
    tmp = stats_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"engine": total, "listing": listing_text}, fh)
    os.replace(tmp, stats_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pylvs-lab-director")
    ap.add_argument("--engine", default="packet")
    ap.add_argument("--stats")
    ap.add_argument("--interface", action="append")
    ap.add_argument("lines", nargs="*")
    a = ap.parse_args(argv)
    try:
        workers = engine_options().get("workers", 1)
        if a.engine == "packet" and isinstance(workers, int) and workers > 1:
            run_fanout(a.lines, a.stats, a.interface)
            return 0
        asyncio.run(run(a.engine, a.lines, a.stats, a.interface))
    except (ValueError, OSError, IPVSError, TypeError) as e:
        print(f"pylvs-lab-director: {e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
