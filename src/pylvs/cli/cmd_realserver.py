"""`pylvs realserver`: prepare a real server for DR or TUN (VIP on lo, ARP suppression, TUN agent)."""

from __future__ import annotations

import argparse
import sys

HELP = "set up or tear down a real server for DR/TUN (VIP on lo, arp_ignore/arp_announce, TUN agent)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    s = sub.add_parser("setup", help="configure this host (or namespace) as a real server")
    s.add_argument("--mode", choices=("dr", "tun"), required=True)
    s.add_argument("--vip", required=True, action="append", help="virtual IP (repeatable)")
    s.add_argument(
        "--director", action="append", default=[], help="TUN: accept tunnels only from this address"
    )
    s.add_argument("--no-agent", action="store_true", help="TUN: do not run the decapsulation agent")
    s.add_argument("--tun-name", default="plvtun0")
    t = sub.add_parser("teardown", help="undo setup")
    t.add_argument("--vip", required=True, action="append")
    a = sub.add_parser("agent", help="run only the TUN decapsulation agent (foreground)")
    a.add_argument("--vip", required=True, action="append")
    a.add_argument("--director", action="append", default=[])
    a.add_argument("--tun-name", default="plvtun0")


def run(args: argparse.Namespace) -> int:
    from pylvs.realserver import setup as rs

    try:
        if args.action == "setup":
            for vip in args.vip:
                for line in rs.setup(args.mode, vip):
                    print(line)
            if args.mode == "tun" and not args.no_agent:
                return _agent(args.vip, args.director, args.tun_name)
            return 0
        if args.action == "teardown":
            for vip in args.vip:
                for line in rs.teardown(vip):
                    print(line)
            return 0
        if args.action == "agent":
            for vip in args.vip:
                rs.check_vip(vip)
            return _agent(args.vip, args.director, args.tun_name)
    except (OSError, ValueError) as e:
        print(f"pylvs realserver: {e}", file=sys.stderr)
        return 1
    print("pylvs realserver: choose setup, teardown or agent", file=sys.stderr)
    return 2


def _agent(vips: list[str], directors: list[str], tun_name: str) -> int:
    from pylvs.realserver.tunagent import run_forever

    print(
        f"TUN agent on {tun_name} for {', '.join(vips)}"
        + (f" from {', '.join(directors)}" if directors else "")
    )
    sys.stdout.flush()
    return run_forever(vips, directors, tun_name)
