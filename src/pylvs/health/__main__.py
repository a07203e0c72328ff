"""`python -m pylvs.health`: check a keepalived.conf, or run its checkers against an in-process table.

  python -m pylvs.health check FILE             warnings, then the rules it gives with every server up
  python -m pylvs.health run FILE --dump-at 8,20 [--events]
                                                 run the checkers; print `ipvsadm -Sn` at those seconds

`run` sends check traffic to the configuration's real servers: use it on loopback addresses, or inside
a network namespace of your own (that is how the oracle comparison tests use it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from pylvs.core.director import Director, take_snapshot
from pylvs.health.config import ConfigError, load_config
from pylvs.health.manager import HealthEvent, HealthManager
from pylvs.ipvsadm.save import format_save


def _rules_text(director: Director) -> str:
    return format_save(take_snapshot(director), numeric=True)


async def _run(path: str, dump_at: list[float], events: bool) -> int:
    cfg = load_config(path)
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    director = Director()

    def on_event(ev: HealthEvent) -> None:
        if events:
            print(f"event {ev.kind} {ev.vs} {ev.rs}: {ev.reason}", file=sys.stderr, flush=True)

    mgr = HealthManager(director, cfg, on_event=on_event)
    t0 = time.monotonic()
    await mgr.start()
    for i, t in enumerate(sorted(dump_at)):
        await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))
        print(f"== dump {i + 1} at {t:g}s", flush=True)
        print(_rules_text(director), end="")
        print("== end", flush=True)
    await mgr.stop(remove_services=False)
    return 0


async def _check(path: str) -> int:
    cfg = load_config(path)
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    director = Director()
    mgr = HealthManager(director, cfg, run_scripts=False)
    await mgr.start(checks=False)  # programs the rules; no checker runs
    text = _rules_text(director)
    await mgr.stop(remove_services=False)
    print(text, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pylvs.health", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="load FILE, print warnings and the rules it gives")
    c.add_argument("file")
    r = sub.add_parser("run", help="run FILE's checkers and print the rules at given times")
    r.add_argument("file")
    r.add_argument("--dump-at", default="10", help="comma-separated seconds after start (default 10)")
    r.add_argument("--events", action="store_true", help="print health events on stderr")
    args = p.parse_args(argv)
    try:
        if args.cmd == "check":
            return asyncio.run(_check(args.file))
        try:
            times = [float(x) for x in args.dump_at.split(",") if x]
        except ValueError:
            print(f"--dump-at {args.dump_at!r}: not a list of seconds", file=sys.stderr)
            return 2
        return asyncio.run(_run(args.file, times, args.events))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
