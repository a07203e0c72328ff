"""`pylvs simulate [FILE]`: play an event file (rules, opens, closes, time, listings) through the core."""

from __future__ import annotations

import argparse
import sys

HELP = "play an event file through the IPVS core and print what happens (no root, no network)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="event file (standard input when absent or '-')")
    parser.add_argument(
        "--dr-replies",
        action="store_true",
        help="replies of direct-routing and tunnel servers cross the director (it is their gateway)",
    )
    parser.add_argument(
        "--log",
        action="store_true",
        help="print the kernel log lines (no destination available...) on stderr",
    )


def run(args: argparse.Namespace) -> int:
    from pylvs.simulate import simulate

    log = sys.stderr if args.log else None
    if args.file is None or args.file == "-":
        return simulate(sys.stdin, sys.stdout, log, args.dr_replies)
    try:
        with open(args.file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        print(f"pylvs simulate: {args.file}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 2
    return simulate(lines, sys.stdout, log, args.dr_replies)
