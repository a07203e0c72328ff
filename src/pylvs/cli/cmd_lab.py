"""`pylvs lab`: the seed article's experiments, each one command, in throw-away network namespaces."""

from __future__ import annotations

import argparse
import sys

HELP = "run one of the seed's labs (nat, dr, tun, fullnat, fwmark) in fresh network namespaces"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mode", choices=("nat", "dr", "tun", "fullnat", "fwmark"))
    parser.add_argument("--engine", choices=("packet", "proxy"), default="packet")
    parser.add_argument(
        "--fast-path",
        action="store_true",
        help="pylvsd --engine fastpath: the core decides each connection, the kernel forwards (docs/fastpath.md)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the namespaces and processes running")
    parser.add_argument("--no-udp", action="store_true", help="skip the UDP service (the article has none)")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="run the engine with the bare lab director instead of pylvsd + pylvsadm",
    )


def run(args: argparse.Namespace) -> int:
    from pylvs.lab.netns import LabError, is_root
    from pylvs.lab.runner import Lab

    if not is_root():
        print("pylvs lab: needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    if getattr(args, "fast_path", False):
        args.engine = "fastpath"
    if args.mode == "fwmark":
        from pylvs.lab.fwmark import run_fwmark

        return run_fwmark(args)
    try:
        with Lab(
            args.mode,
            args.engine,
            keep=args.keep,
            udp=not args.no_udp,
            use_daemon=False if args.bare else None,
        ) as lab:
            r = lab.run()
    except (LabError, OSError, ValueError) as e:
        print(f"pylvs lab {args.mode}: {e}", file=sys.stderr)
        return 1
    ok = all(a.startswith("welcome to") for a in r.answers) and r.upload_ok and r.download_ok
    print("lab", args.mode, "ok" if ok else "FAILED")
    return 0 if ok else 1
